#!/usr/bin/env bash
# The system packages the games need, from Debian: Minetest 5.6 with minetest_game (the
# first-person game) and Xvfb (its private headless display).
# Crafter needs none. Installs only what is missing; run as root or with sudo:
#
#   scripts/install_system.sh          (.ci/run calls it, so CI runs the Minetest tests too)
set -euo pipefail

need=()
{ command -v minetest || [ -x /usr/games/minetest ]; } >/dev/null 2>&1 || need+=(minetest)
[ -d /usr/share/games/minetest/games/minetest_game ] || need+=(minetest-data)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
if [ ${#need[@]} -eq 0 ]; then
    echo "install_system: minetest, minetest_game and Xvfb are installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system: needs ${need[*]}, and this is not a Debian/Ubuntu system (no apt-get):" \
         "install them with the system's package manager" >&2
    exit 2
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_system: run as root (needs ${need[*]})" >&2; exit 2; }
    SUDO=sudo
fi
echo "install_system: installing ${need[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
