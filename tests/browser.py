"""Open a local HTML file, or a page of a server on loopback, in Debian's headless Chromium through Playwright
(never `playwright install`)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google on this closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def browser_missing() -> str | None:
    """Why the browser cannot run here (and the fix), or None when it can."""
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium: run `apt-get install -y chromium` (make test does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright: pip install -e '.[dev]'"
    return None


def browser_ready() -> bool:
    """For a test whose browser checks are one part of it: True when they can run; otherwise a warning says why
    and the test goes on with its other assertions (a skip would skip them too)."""
    why = browser_missing()
    if why is not None:
        warnings.warn(f"browser checks not run: {why}", stacklevel=2)
    return why is None


@contextmanager
def open_page(path: Path | str):
    """Open `path` (a file, or a URL as a string) and yield (page, problems, requests): console errors and page
    errors are collected into `problems`, every URL the page asked for into `requests`. Skips the whole test when
    chromium or playwright is missing, saying how to fix it: use it directly only in tests that are about the page;
    elsewhere guard it with browser_ready()."""
    why = browser_missing()
    if why is not None:
        pytest.skip(why)
    from playwright import sync_api

    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path if isinstance(path, str) else path.resolve().as_uri(), wait_until="load")
            yield page, problems, requests
        finally:
            browser.close()
