"""The web UI: one static single-page application served beside the REST API.

``/`` answers ``index.html``; ``/ui/...`` serves the page's own script and style sheet and the
vendored libraries (``static/vendor``, see ``VENDOR.md``).  Nothing is fetched from elsewhere: the
page's Content-Security-Policy only lets it load scripts, styles, images and API answers from
the server it came from.  The page reads ``/api/v1`` like any other client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent / "static"

#: The document's policy: same origin only (no CDN, no third-party request can even be attempted).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def mount(app: Any) -> None:
    """Serve the UI on ``app``: ``GET /`` (the page) and ``/ui/...`` (its static files); not in the OpenAPI document."""
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    index = STATIC / "index.html"

    @app.get("/", include_in_schema=False)
    def _index() -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=HEADERS)

    app.mount("/ui", StaticFiles(directory=STATIC, check_dir=True), name="ui")


__all__ = ["mount", "STATIC", "CSP"]
