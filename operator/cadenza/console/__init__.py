"""The web console: a static single page served by every replica under ``/console/``.

The page holds no secret and no state of its own: it signs in with a Kubernetes bearer token
(kept in the browser's ``sessionStorage``) and calls the REST API with it, so every action is
authorised exactly like the API call it makes. No build step: the page, its script and its style
are files in ``static/``, the plotting library (uPlot) and the cron describer (cronstrue) are
vendored minified builds in ``static/vendor/`` (licences beside them).

Caching: the page is ``no-cache`` and names each asset with ``?v=<content hash>``, so assets are
served ``immutable`` for a year and a new release is picked up at the next page load. Every
answer carries a strict Content Security Policy: scripts, styles and requests only from this
origin, no inline script or style, no framing.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
PREFIX = "/console"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

_ASSET_REFERENCE = re.compile(r"\{\{asset:([\w./-]+)\}\}")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str
    """The first 16 hex digits of the body's SHA-256: the ``v`` the page asks for, and the ETag."""


def load(root: Path = STATIC) -> tuple[Asset, dict[str, Asset]]:
    """The page (its asset references resolved to versioned URLs) and the assets by path."""
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != "index.html":
            assets[path.relative_to(root).as_posix()] = _asset(path.name, path.read_bytes())

    def versioned(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in assets:
            raise LookupError(f"index.html names the missing asset {name}")
        return f"{PREFIX}/static/{name}?v={assets[name].version}"

    page = _ASSET_REFERENCE.sub(versioned, (root / "index.html").read_text(encoding="utf-8"))
    return _asset("index.html", page.encode()), assets


def _asset(name: str, body: bytes) -> Asset:
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type == "image/svg+xml":
        content_type += "; charset=utf-8"
    if name.endswith(".js"):  # some platforms' mimetypes say text/plain
        content_type = "text/javascript; charset=utf-8"
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])


def _serve(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    etag = f'"{asset.version}"'
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


def routes() -> list[web.RouteDef]:
    page, assets = load()

    async def index(request: web.Request) -> web.Response:
        return _serve(request, page, REVALIDATE)

    async def static(request: web.Request) -> web.Response:
        asset = assets.get(request.match_info["path"])
        if asset is None:
            return web.Response(status=404, text="no such asset", headers=SECURITY_HEADERS)
        # Only the version the page names is immutable; any other URL revalidates.
        current = request.query.get("v") == asset.version
        return _serve(request, asset, IMMUTABLE if current else REVALIDATE)

    async def to_console(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"{PREFIX}/")

    return [
        web.get("/", to_console),
        web.get(PREFIX, to_console),
        web.get(f"{PREFIX}/", index),
        web.get(f"{PREFIX}/static/{{path:.+}}", static),
    ]
