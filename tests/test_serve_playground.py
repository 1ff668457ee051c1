"""The playground page at `/` of `lmtune serve`: served without a key, and driven in headless Chromium against a
real uvicorn with a key (two generative adapters answer one prompt, a classification adapter shows its
probabilities), compared with what the `openai` client and `/v1/classify` answer for the same requests."""

from __future__ import annotations

import re

import pytest

from browser import open_page
from test_serve_http import API_KEY, PROMPT, _engine, engine, served, server  # noqa: F401  (fixtures)

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

openai = pytest.importorskip("openai")

GENERATIVE = ("gen-lora", "gen-prompt")
MAX_TOKENS = 6
WAIT_MS = 15_000


def test_page_is_open_without_a_key_says_whether_one_is_needed_and_leaves_the_api_guarded(engine):  # noqa: F811
    from lmtune.serve.app import create_app

    with TestClient(create_app(engine, [API_KEY])) as guarded, TestClient(create_app(engine, None)) as open_app:
        page = guarded.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<meta name="lmtune-auth" content="on">' in page.text
        assert '<meta name="lmtune-auth" content="off">' in open_app.get("/").text
        policy = page.headers["content-security-policy"]
        assert "connect-src 'self'" in policy and "default-src 'none'" in policy and "'sha256-" in policy
        assert not re.search(r"https?://", page.text), "the page must load nothing from elsewhere"
        assert guarded.get("/v1/models").status_code == 401  # the page is open, the API is not
        assert guarded.get("/docs").status_code == 401
        key = {"Authorization": f"Bearer {API_KEY}"}
        assert guarded.get("/docs", headers=key).status_code == 200
        assert "/" not in guarded.get("/openapi.json", headers=key).json()["paths"]


def test_listing_names_the_labels_of_a_classification_run_before_its_first_use(served):  # noqa: F811
    """The playground classifies with adapters whose listing has labels; lazily loaded runs must have them too."""
    lazy, _ = _engine(*served)
    by_name = {info.name: info for info in lazy.store.list()}
    assert not by_name["cls-lora"].loaded and sorted(by_name["cls-lora"].labels) == ["neg", "pos"]
    assert by_name["gen-lora"].labels is None and by_name["gen-prompt"].labels is None


def _column(page, name):
    return page.locator(f'#results .column[data-model="{name}"]')


def _wait_done(page, count: int) -> None:
    from playwright.sync_api import expect  # a locator wait: the page's CSP forbids evaluating strings

    expect(page.locator("#results .column:not([data-state=running])")).to_have_count(count, timeout=WAIT_MS)


def test_playground_in_chromium_answers_like_the_api(server, tmp_path):  # noqa: F811
    import httpx

    with openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0) as oai:
        expected = {name: oai.completions.create(model=name, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
                    for name in GENERATIVE}
        chat = oai.chat.completions.create(model="gen-lora", messages=[{"role": "user", "content": PROMPT}],
                                           max_tokens=MAX_TOKENS, temperature=0)
    classified = httpx.post(f"{server}/v1/classify", json={"model": "cls-lora", "input": PROMPT},
                            headers={"Authorization": f"Bearer {API_KEY}"}).json()["data"][0]

    with open_page(f"{server}/") as (page, problems, requests):
        assert page.locator("#key-card").is_visible() and not page.locator("#pick-card").is_visible()
        assert requests == [f"{server}/"], "no API call before the key is given"
        page.fill("#key", API_KEY)
        page.click("#key-save")
        page.locator('input[data-model="cls-lora"]').wait_for(timeout=WAIT_MS)
        page.reload()  # the key is asked once: the tab keeps it
        for name in GENERATIVE:
            page.locator(f'input[data-model="{name}"]').check(timeout=WAIT_MS)
        assert not page.locator("#key-card").is_visible()
        page.fill("#prompt", PROMPT)
        page.fill("#max-tokens", str(MAX_TOKENS))
        page.click("#send")
        _wait_done(page, 2)
        for name in GENERATIVE:
            column = _column(page, name)
            assert column.get_attribute("data-state") == "done", column.inner_text()
            assert column.locator(".output").text_content() == expected[name].choices[0].text
            tokens = expected[name].usage.completion_tokens
            assert re.fullmatch(rf"\d+ ms · {tokens} token\(s\) · [\d.]+ tokens/s · \w+",
                                column.locator(".stats").text_content())

        page.locator('input[data-model="cls-lora"]').check()
        assert page.locator('input[type=checkbox]:not(:checked)').first.is_disabled()  # three picked: no more
        page.click("#send")
        _wait_done(page, 3)
        column = _column(page, "cls-lora")
        assert column.locator(".label").text_content() == f"label: {classified['label']}"
        shown = {row.get_attribute("data-label"): float(row.get_attribute("data-probability"))
                 for row in column.locator(".prob").all()}
        assert shown == pytest.approx(classified["probabilities"], abs=1e-6)
        page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)

        page.check("#chat")  # the generative columns go through /v1/chat/completions; the classifier still classifies
        page.click("#send")
        _wait_done(page, 3)
        assert _column(page, "gen-lora").locator(".output").text_content() == chat.choices[0].message.content
        assert _column(page, "cls-lora").locator(".prob").count() == 2
        assert not problems, problems
        assert all(url.startswith(f"{server}/") for url in requests), requests

        # The server's own message shows in the column when it refuses a request.
        page.fill("#max-tokens", "100000")
        page.click("#send")
        _wait_done(page, 3)
        refused = _column(page, "gen-lora")
        assert refused.get_attribute("data-state") == "error"
        assert re.match(r"400: .*max_tokens", refused.locator(".error").text_content())
