"""Which HTTP requests a local service takes: none a web page could send it, or read back.

A service on 127.0.0.1 is reachable by every web page its user opens: a page can POST a
`text/plain` form or `fetch(..., {mode: "no-cors"})` to http://127.0.0.1:PORT blind (cross-site
request forgery), and a page on a domain re-pointed at 127.0.0.1 (DNS rebinding) can even read
the answers. So `refusal` sends away:

- any request whose `Host` is not a loopback name (127.0.0.1, localhost, [::1], or the address
  the service was bound to) with the service's own port: a rebound page's requests carry its own
  domain as Host;
- a POST (every request that changes or writes anything) whose `Content-Type` is not
  `application/json`: a page can only send JSON to another origin after a CORS preflight, which
  this service never grants (OPTIONS is a 405);
- a POST with an `Origin` header other than the service's own loopback origin
  (http://127.0.0.1:PORT, http://localhost:PORT, http://[::1]:PORT), `null` included, or with
  `Sec-Fetch-Site: cross-site` / `same-site`.

Programs (curl, Python's http.client and requests) send a loopback Host and no Origin: they
only have to say `Content-Type: application/json`.
"""

from __future__ import annotations

from typing import Mapping

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("", "0.0.0.0", "::")


def allowed_hosts(bound: str) -> set[str]:
    """The host names a request may carry in Host: loopback, and a specific bound address."""
    names = {h.lower() for h in LOOPBACK}
    if bound not in WILDCARDS:
        names.add(bound.strip("[]").lower())
    return names


def split_host(value: str) -> tuple[str, int | None] | None:
    """'name:port' / '[v6]:port' / 'name' -> (name, port or None); None if malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    else:
        if value.count(":") > 1:
            return None
        name, _, port = value.partition(":")
        port = port if ":" in value else None
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return None
    return name.lower(), None if port is None else int(port)


def _host_ok(value: str | None, hosts: set[str], port: int) -> bool:
    if not value:
        return False
    parts = split_host(value)
    if parts is None:
        return False
    name, p = parts
    return name in hosts and (p == port or (p is None and port == 80))


def _origin_ok(value: str, hosts: set[str], port: int) -> bool:
    scheme, sep, rest = value.strip().partition("://")
    if not sep or scheme.lower() != "http" or "/" in rest:
        return False
    return _host_ok(rest, hosts, port)


def refusal(method: str, headers: Mapping[str, str], hosts: set[str], port: int) -> str | None:
    """Why this request is refused (a 403), or None to serve it. `headers`: the request's
    (case-insensitive get), `hosts`: `allowed_hosts(bound)`, `port`: the service's."""
    host = headers.get("Host")
    if not _host_ok(host, hosts, port):
        return (f"Host {str(host)[:100]!r} is not this service's loopback address (e.g. "
                f"127.0.0.1:{port}): refused, as a page on another site would send it")
    if method != "POST":
        return None
    ctype = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        return (f"a POST needs Content-Type: application/json, got "
                f"{str(headers.get('Content-Type'))[:100]!r}: refused, as a web page could "
                f"send it")
    origin = headers.get("Origin")
    if origin is not None and not _origin_ok(origin, hosts, port):
        return (f"Origin {origin[:100]!r} is not this service's own: refused (cross-site "
                f"request)")
    site = (headers.get("Sec-Fetch-Site") or "").strip().lower()
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {site[:40]}: refused (cross-site request)"
    return None
