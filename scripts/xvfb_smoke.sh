#!/usr/bin/env bash
# Smoke test of the real window: a virtual X display, real key presses, screenshots, clean quit.
#
#   scripts/xvfb_smoke.sh [CHECKPOINT] [OUT_DIR]      (needs: apt-get install -y xvfb xdotool x11-apps)
#
# Starts Xvfb, runs `python run_sim.py --checkpoint CHECKPOINT --side-by-side --record OUT/rec`
# under it, holds D (move right) for a second, taps space and 1, opens the help overlay, saves a
# screenshot with the app's own key (o) and one of the X window itself (xwd -> PNG), quits with
# Escape, replays the recording in the window, then checks the exit code, the screenshots and that
# the recording loads with the keys pressed.
set -euo pipefail
cd "$(dirname "$0")/.."

CKPT=${1:-assets/crafter_memory}
OUT=${2:-/tmp/xvfb_smoke}
DISPLAY_NUM=${DISPLAY_NUM:-:97}
PY=${PYTHON:-python}

for tool in Xvfb xdotool xwd; do
    command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y xvfb xdotool x11-apps"; exit 1; }
done
rm -rf "$OUT"
mkdir -p "$OUT"

Xvfb "$DISPLAY_NUM" -screen 0 1280x800x24 -nolisten tcp >"$OUT/xvfb.log" 2>&1 &
XVFB=$!
SIM=""
cleanup() {
    [ -n "$SIM" ] && kill "$SIM" 2>/dev/null || true
    kill "$XVFB" 2>/dev/null || true
}
trap cleanup EXIT
export DISPLAY=$DISPLAY_NUM
unset SDL_VIDEODRIVER
for _ in $(seq 100); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.1; done

OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY run_sim.py --checkpoint "$CKPT" --seed 1 --side-by-side \
    --record "$OUT/rec" --screenshots "$OUT" --stats >"$OUT/sim.log" 2>&1 &
SIM=$!

# by pid: SDL writes WM_NAME as UTF-8, which `xdotool search --name` does not always match
WID=""
for _ in $(seq 600); do
    WID=$(xdotool search --pid "$SIM" 2>/dev/null | head -1 || true)
    [ -n "$WID" ] && break
    kill -0 "$SIM" 2>/dev/null || { cat "$OUT/sim.log"; echo "run_sim.py died"; exit 1; }
    sleep 0.2
done
[ -n "$WID" ] || { echo "no window after 120 s"; exit 1; }
echo "window $WID: $(xdotool getwindowgeometry "$WID" | tr '\n' ' ')"
xdotool mousemove --window "$WID" 20 20
xdotool windowfocus --sync "$WID"
sleep 1

xdotool keydown d; sleep 1; xdotool keyup d      # hold: one move_right per frame
xdotool key space; sleep 0.3                      # do
xdotool key 1; sleep 0.3                          # make_wood_pickaxe
xdotool key o; sleep 0.5                          # the app's screenshot (game + HUD)
xdotool key h; sleep 0.5                          # help overlay
xwd -silent -id "$WID" >"$OUT/window.xwd"         # what X shows, independently of the app
xdotool key h; sleep 0.2
xdotool key Escape

rc=0
wait "$SIM" || rc=$?
SIM=""
cat "$OUT/sim.log"
[ "$rc" = 0 ] || { echo "run_sim.py exited with $rc"; exit 1; }

# the recording plays back in a real window too
timeout 120 $PY run_sim.py replay "$OUT/rec" --max-frames 30 --fps 30 \
    || { echo "replay failed"; exit 1; }

PYGAME_HIDE_SUPPORT_PROMPT=1 $PY - "$OUT" <<'EOF'
import sys
from pathlib import Path

import numpy as np
import pygame

from worldmodel.data.episode import load_episode

out = Path(sys.argv[1])
shots = sorted(out.glob("shot-*.png"))
assert shots, "the app saved no screenshot"
print("app screenshot:", shots[0], pygame.image.load(str(shots[0])).get_size())

# XWD (ZPixmap, 32 bits per pixel) -> PNG
raw = (out / "window.xwd").read_bytes()
h = np.frombuffer(raw[:100], ">u4")
header_size, width, height, byte_order, bpp, bpl, ncolors = h[0], h[4], h[5], h[7], h[11], h[12], h[19]
assert bpp == 32, f"expected 32 bpp, got {bpp}"
start = header_size + ncolors * 12
pix = np.frombuffer(raw[start:start + bpl * height], np.uint8).reshape(height, bpl // 4, 4)[:, :width]
rgb = pix[..., [2, 1, 0]] if byte_order == 0 else pix[..., [1, 2, 3]]
pygame.image.save(pygame.surfarray.make_surface(rgb.transpose(1, 0, 2).copy()), str(out / "window.png"))
print("X window screenshot:", out / "window.png", (int(width), int(height)))

ep = load_episode(out / "rec")
acts = ep.actions.tolist()
print(f"recording: {len(ep)} steps, complete={ep.meta['complete']}, actions={acts}")
assert ep.meta["complete"], "closing the window did not finalize the recording"
assert acts.count(2) >= 3, "holding D did not repeat move_right"
assert 5 in acts and 11 in acts, "space (do) / 1 (make_wood_pickaxe) not recorded"
print("xvfb smoke: OK")
EOF
