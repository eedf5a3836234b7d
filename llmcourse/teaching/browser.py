"""JupyterLab on loopback driven by Chromium: what the browser test and the thread benchmark share.

`jupyterlab(folder)` serves a folder from this environment on a free loopback port (no token, no news, no update
checks) and stops it afterwards; `chromium_path()` finds Debian's Chromium, installing it with apt-get when this user
may; `run_all(page, path)` opens a notebook, clears its stored outputs and runs every cell, returning when the last
code cell has finished.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError

__all__ = ["CHROMIUM_FLAGS", "browser_page", "chromium_path", "free_port", "jupyterlab", "run_all",
           "stop_process_group"]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium_path(install: bool = True) -> str:
    """Chromium's executable; installed with apt-get when missing and allowed (root), else ConfigError saying how."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ConfigError("Chromium is not installed and this user cannot apt-get it: `sudo apt-get install chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, text=True,
                          timeout=600)
    path = shutil.which("chromium")
    if not path:
        raise ConfigError(f"Chromium could not be installed (apt-get exit {done.returncode}: {done.stderr[-300:]})")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(folder: str | Path, env: dict[str, str] | None = None, start_timeout: float = 90) -> Iterator[str]:
    """Serve `folder` with JupyterLab on loopback; yields the base URL and stops the server (and its kernels)."""
    folder = Path(folder)
    port = free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={folder}",
           "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    cmd += ["--allow-root"] if os.geteuid() == 0 else []
    log_path = folder / "lab.log"
    server_env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(folder / ".runtime"), "HF_HUB_OFFLINE": "1",
                  "HF_DATASETS_OFFLINE": "1", **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=server_env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + start_timeout
        try:
            while True:
                try:
                    with urllib.request.urlopen(url + "/lab", timeout=5):
                        break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise ConfigError("JupyterLab did not start:\n" + log_path.read_text()[-3000:]) from None
                    time.sleep(0.5)
            yield url
        finally:
            stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a process started with start_new_session=True and everything it started: SIGTERM, then SIGKILL."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def browser_page(out: Path, width: int = 1300, height: int = 900) -> Iterator:
    """A Playwright page in Debian's Chromium; on an error, a full-page `failure.png` in `out` first."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        try:
            yield page
        except Exception:
            page.screenshot(path=str(out / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def run_all(page, base_url: str, notebook: str, timeout_s: float = 300) -> None:
    """Open `notebook` in JupyterLab, clear its outputs, run all cells and wait until the last code cell is done."""
    page.goto(f"{base_url}/lab/tree/{notebook}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_timeout(2000)
    if page.locator(".jp-Dialog .jp-mod-accept").count():  # "Select Kernel": take the proposed python3
        page.click(".jp-Dialog .jp-mod-accept")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    # Clear the stored outputs first, so everything on the page afterwards comes from this run.
    page.click("li.lm-MenuBar-item:has-text('Edit')")
    page.click("li.lm-Menu-item[data-command='editmenu:clear-all']")
    page.wait_for_function("() => document.querySelectorAll('.jp-OutputArea-output').length === 0", timeout=10_000)
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
    # Done when no cell is queued or running ([*]) and the last code cell has an execution count.
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
            return prompts.length > 0 && prompts.every(p => !p.textContent.includes('*'))
                && /\\[\\d+\\]/.test(prompts[prompts.length - 1].textContent);
        }""", timeout=int(timeout_s * 1000))
