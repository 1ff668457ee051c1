"""`GET /`: the playground, one static page (`serve/playground/index.html`: HTML, inline CSS and JS, nothing
fetched from elsewhere) that calls this server's own `/v1` routes with the key the user types in.

The page is open without a key (it holds no secrets; every call it makes carries the key). The server tells it
only whether a key is needed, so it asks for one before its first call instead of provoking a 401. A Content
Security Policy lets the page talk to this origin alone and run only its own script (by hash).
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter()

AUTH_MARK = 'name="lmtune-auth" content="off"'


@cache
def page() -> tuple[str, str]:
    """The page's text and its Content-Security-Policy (read once: it is package data)."""
    text = files("lmtune.serve").joinpath("playground/index.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", text, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    policy = (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
              "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return text, policy


@router.get("/", include_in_schema=False)
async def playground(request: Request) -> HTMLResponse:
    text, policy = page()
    if request.app.state.api_keys_required:
        text = text.replace(AUTH_MARK, 'name="lmtune-auth" content="on"', 1)
    return HTMLResponse(text, headers={"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
                                       "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"})
