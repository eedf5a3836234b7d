"""The capstone's demo page in a real browser: type into the form, submit, and see the served function's answer.

Serves a small deterministic function with `llmcourse.serve.serve` on loopback, opens GET / in Debian's Chromium
driven by Playwright, types a text, clicks Ask, and checks that the page shows exactly what the function returns
(the page posts to /generate with fetch). Screenshots go to `test-output/browser/`. Skipped, saying why, only when
Chromium cannot be installed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmcourse.errors import ConfigError
from llmcourse.serve import serve
from llmcourse.teaching.browser import CHROMIUM_FLAGS, chromium_path

OUT = Path(__file__).resolve().parents[1] / "test-output" / "browser"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def shout(prompt: str) -> str:
    """The served function: deterministic, and its answer differs from its input."""
    return f"{len(prompt.split())} words: {prompt[::-1].upper()}"


def test_demo_page_sends_the_form_and_shows_the_answer():
    try:
        browser_path = chromium_path()
    except ConfigError as exc:
        pytest.skip(str(exc))
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()
    text = "what a lovely 晴天 today"
    with serve(lambda prompt, **options: shout(prompt), name="shouter") as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page()
        try:
            page.goto(server.url + "/")
            assert page.title() == "shouter" and page.inner_text("h1") == "shouter"
            page.fill("#prompt", text)
            page.click("#send")
            page.wait_for_selector("#answer:not(:empty)", timeout=10_000)
            page.screenshot(path=str(OUT / "demo_page_answer.png"))
            assert page.inner_text("#answer") == shout(text)
            assert page.inner_text("#status").endswith(" s")
            assert server.requests == 1
        except Exception:
            page.screenshot(path=str(OUT / "demo_page_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert time.time() - started < 30, "the demo page test must stay under 30 s"
