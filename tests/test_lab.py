"""`make lab` serves JupyterLab: start it on a free loopback port, get /lab, stop it."""

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from llmcourse.teaching.browser import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.platform("linux", "darwin")  # make, and a process group to stop
def test_make_lab_serves_jupyterlab(tmp_path):
    port = free_port()
    args = (f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token= --ServerApp.password= "
            f"--ServerApp.runtime_dir={tmp_path}")
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    try:
        status, deadline = None, time.time() + 120
        while time.time() < deadline and status != 200:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=5) as r:
                    status = r.status
                    page = r.read().decode("utf-8", "replace")
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                time.sleep(1)
        assert status == 200
        assert "JupyterLab" in page
    finally:
        stop_process_group(proc, timeout=30)
