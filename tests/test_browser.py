"""JupyterLab in a real browser: what nbval cannot see (widgets, progress bars, plots) on week 1's first notebook.

Starts JupyterLab from this environment on a free loopback port, drives Debian's Chromium with Playwright, runs every
cell of `week01/00_setup_and_hardware.ipynb`, moves its widget and checks that the plot changes. Screenshots go to
`test-output/browser/`. Chromium is installed with apt-get when missing; the test is skipped, saying why, only when
that is impossible.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from llmcourse.errors import ConfigError
from llmcourse.teaching.browser import CHROMIUM_FLAGS, chromium_path, jupyterlab, run_all

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "week01/00_setup_and_hardware.ipynb"
OUT = ROOT / "test-output" / "browser"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def chromium() -> str:
    try:
        return chromium_path()
    except ConfigError as exc:
        pytest.skip(str(exc))


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab serving a copy of the notebook (so autosave never touches the repository)."""
    (tmp_path / "week01").mkdir()
    shutil.copy(ROOT / NOTEBOOK, tmp_path / NOTEBOOK)
    with jupyterlab(tmp_path) as url:
        yield url


def image_sources(page) -> list[str]:
    return page.eval_on_selector_all(".jp-OutputArea-output img", "els => els.map(e => e.src)")


def test_setup_notebook_runs_in_jupyterlab_with_live_widgets(lab):
    browser_path = chromium()
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            run_all(page, lab, NOTEBOOK, timeout_s=300)
            page.screenshot(path=str(OUT / "01_after_run_all.png"), full_page=False)
            texts = page.inner_text(".jp-Notebook")
            assert "Traceback (most recent call last)" not in texts, "a cell raised an error"

            assert len(image_sources(page)) >= 1, "no matplotlib image was shown"
            assert page.locator(".widget-progress, progress, .jp-OutputArea-output:has-text('100%')").count() >= 1, \
                "no progress bar rendered"

            widget = page.locator(".jupyter-widgets.widget-dropdown select, .widget-slider .noUi-handle").first
            assert widget.count() == 1, "no ipywidgets control rendered"
            area = widget.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea')][1]")
            area.scroll_into_view_if_needed()
            area.screenshot(path=str(OUT / "02_widget_before.png"))
            before = image_sources(page)
            if widget.evaluate("e => e.tagName") == "SELECT":
                values = widget.evaluate("e => [...e.options].map(o => o.value)")
                current = widget.evaluate("e => e.value")
                widget.select_option(next(v for v in values if v != current))
            else:
                widget.focus()
                for _ in range(5):
                    page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "before => { const now = [...document.querySelectorAll('.jp-OutputArea-output img')].map(e => e.src);"
                " return now.length > 0 && JSON.stringify(now) !== JSON.stringify(before); }",
                arg=before, timeout=60_000)
            page.wait_for_timeout(500)
            area.screenshot(path=str(OUT / "03_widget_after.png"))
        except Exception:
            page.screenshot(path=str(OUT / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert time.time() - started < 180, "the browser test must stay well under 3 minutes"
