"""JupyterLab in a real browser: what nbval cannot see (widgets, progress bars, plots) on week 1's first notebook.

Starts JupyterLab from this environment on a free loopback port, drives Debian's Chromium with Playwright, runs every
cell of `week01/00_setup_and_hardware.ipynb`, moves its widget and checks that the plot changes. Screenshots go to
`test-output/browser/`. Chromium is installed with apt-get when missing; the test is skipped, saying why, only when
that is impossible.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "week01/00_setup_and_hardware.ipynb"
OUT = ROOT / "test-output" / "browser"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("Chromium is not installed and this user cannot apt-get it: `sudo apt-get install chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, text=True,
                          timeout=600)
    path = shutil.which("chromium")
    if not path:
        pytest.skip(f"Chromium could not be installed (apt-get exit {done.returncode}: {done.stderr[-300:]})")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab serving a copy of the notebook (so autosave never touches the repository)."""
    (tmp_path / "week01").mkdir()
    shutil.copy(ROOT / NOTEBOOK, tmp_path / NOTEBOOK)
    port = free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={tmp_path}",
           "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
           "jupyterlab.NeverCheckForUpdate"] + (["--allow-root"] if os.geteuid() == 0 else [])
    log = open(tmp_path / "lab.log", "w")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "/lab", timeout=5):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                log.close()
                pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


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
            page.goto(f"{lab}/lab/tree/{NOTEBOOK}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.wait_for_timeout(2000)
            if page.locator(".jp-Dialog .jp-mod-accept").count():  # "Select Kernel": take the proposed python3
                page.click(".jp-Dialog .jp-mod-accept")
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            # Clear the stored outputs first, so every image, widget and bar checked below comes from this run.
            page.click("li.lm-MenuBar-item:has-text('Edit')")
            page.click("li.lm-Menu-item[data-command='editmenu:clear-all']")
            assert len(image_sources(page)) == 0
            page.click("li.lm-MenuBar-item:has-text('Run')")
            page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
            # Done when no cell is queued or running ([*]) and the last code cell has an execution count.
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                    return prompts.length > 0 && prompts.every(p => !p.textContent.includes('*'))
                        && /\\[\\d+\\]/.test(prompts[prompts.length - 1].textContent);
                }""", timeout=300_000)
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
