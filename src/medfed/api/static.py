"""The built web UI (Vite output copied to ``api/static``) with single-page-app fallback."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.convertors import Convertor, register_url_convertor

from medfed.api.security import content_security_policy, inline_script_hashes

STATIC_DIR = Path(__file__).parent / "static"
API_DOCS_ASSETS = "api-docs/"  # Swagger UI files, copied from swagger-ui-dist by the build
HASHED_ASSETS = "assets/"  # Vite names these by content hash: safe to cache for good
IMMUTABLE = "public, max-age=31536000, immutable"

NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medfed</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto">
<h1>medfed</h1>
<p>The web UI is not built. Run <code>make demo</code> (or <code>make setup</code>) to build it,
then reload this page.</p>
<p>The REST API is up: see <a href="/api/docs">/api/docs</a>.</p>
</body></html>
"""


class WebPath(Convertor[str]):
    """A path of the web UI: anything but /api and what is under it (those are the API's
    routes, or 404, or 405 for a method the API path does not take)."""

    regex = r"(?!api(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("webpath", WebPath())
router = APIRouter(include_in_schema=False)


def _static_file(path: str, root: Path) -> Path | None:
    """The file under ``root`` that ``path`` names, never one outside it."""
    base = root.resolve()
    candidate = (base / path).resolve()
    if candidate.is_file() and candidate.is_relative_to(base):
        return candidate
    return None


@router.get("/api/docs")
def api_docs() -> HTMLResponse:
    """Swagger UI for the REST API, with its script and style served from the built UI; the
    page's Content-Security-Policy allows its one inline start-up script by hash."""
    page = get_swagger_ui_html(
        openapi_url="/api/openapi.json",
        title="medfed API",
        swagger_js_url=f"/{API_DOCS_ASSETS}swagger-ui-bundle.js",
        swagger_css_url=f"/{API_DOCS_ASSETS}swagger-ui.css",
        swagger_favicon_url="/favicon.svg",
    )
    policy = content_security_policy(inline_script_hashes(bytes(page.body)))
    page.headers["Content-Security-Policy"] = policy
    return page


@router.get("/{path:webpath}")
def web_ui(path: str, request: Request) -> Response:
    """A file of the built UI, else its index.html (client-side routes)."""
    root: Path = request.app.state.static_dir
    index = root / "index.html"
    if not index.is_file():
        return HTMLResponse(NOT_BUILT_PAGE)
    found = _static_file(path, root) if path else None
    if found is None:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})
    if path.startswith(HASHED_ASSETS):
        return FileResponse(found, headers={"Cache-Control": IMMUTABLE})
    return FileResponse(found)
