"""llmcourse.setup, the notebooks' setup cell: it tells local, Colab and Kaggle apart and installs only where needed."""

import functools
import os
import sys

import pytest

from llmcourse import device, environment
from llmcourse.environment import COLAB_EXTRAS, install_command, setup

MARKERS = ("COLAB_RELEASE_TAG", "COLAB_GPU", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE")


@pytest.fixture()
def machine(tmp_path, monkeypatch):
    """This machine with no platform marker: the marker variables unset, '/' replaced by an empty folder (returned)."""
    for var in (*MARKERS, "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(var, raising=False)
    detect_here = functools.partial(device.detect_platform, root=tmp_path)
    monkeypatch.setattr(device, "detect_platform", detect_here)  # what detect() writes on the card
    monkeypatch.setattr(environment, "detect_platform", detect_here)  # what setup() decides the install from
    monkeypatch.setattr(environment, "detect", functools.partial(device.detect, probe_bnb=False))  # test_device probes
    return tmp_path


@pytest.mark.parametrize("env, folder, expected", [
    ({}, None, "local"),
    ({"COLAB_RELEASE_TAG": "release-colab_20261101"}, None, "colab"),
    ({"COLAB_GPU": "0"}, None, "colab"),  # set, even to 0, on every Colab runtime
    ({}, "opt/colab", "colab"),
    ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, None, "kaggle"),
    ({"KAGGLE_URL_BASE": "https://www.kaggle.com"}, None, "kaggle"),
    ({}, "kaggle/working", "kaggle"),
    ({"COLAB_GPU": "1", "KAGGLE_URL_BASE": "https://www.kaggle.com"}, None, "colab"),  # Colab's markers win
], ids=["local", "colab-tag", "colab-gpu", "colab-folder", "kaggle-run", "kaggle-url", "kaggle-folder", "both"])
def test_setup_detects_the_platform_and_installs_only_there(machine, monkeypatch, capsys, env, folder, expected):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    if folder:
        (machine / folder).mkdir(parents=True)
    calls = []
    card = setup(quiet=True, runner=calls.append)
    out = capsys.readouterr().out
    assert card.platform == expected
    if expected == "local":
        assert calls == [] and "detected" not in out
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"  # no fork warnings from tokenizers in notebooks
    else:
        assert calls == [[sys.executable, "-m", "pip", "install", "-q", *COLAB_EXTRAS]]
        assert f"llmcourse: {expected} detected: installing {', '.join(COLAB_EXTRAS)}" in out


def test_install_command_names_what_colab_and_kaggle_lack():
    assert install_command("local") == []
    assert install_command("colab") == install_command("kaggle")
    assert {"peft", "bitsandbytes", "diffusers", "gguf"} <= set(install_command("colab")[5:])


def test_setup_silences_torchao_import_notes_but_not_errors():
    """torchao's import logs a note with the install path (its GPU kernels cannot load here); after setup() it does
    not reach the notebook, while an error from the same logger still does."""
    import subprocess

    pytest.importorskip("torchao")
    script = ("import logging, llmcourse\n"
              "llmcourse.setup(quiet=True)\n"
              "import torchao\n"
              "logging.getLogger('torchao').error('an error still shows')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, LLMCOURSE_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "an error still shows" in out.stderr
    assert "Failed to load" not in out.stderr and "site-packages" not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("conda_env, expected", [("llmcourse", "CONDA"), ("base", ".venv"), ("", ".venv")])
def test_make_setup_uses_the_activated_conda_environment(tmp_path, conda_env, expected):
    """`conda env create -f environment.yml` then `make lab` must not install everything again into .venv."""
    import shutil
    import subprocess
    from pathlib import Path

    if not shutil.which("make"):
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    prefix = tmp_path / "conda-env"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDA") and k != "VENV"}
    if conda_env:
        env.update(CONDA_PREFIX=str(prefix), CONDA_DEFAULT_ENV=conda_env)
    dry = subprocess.run(["make", "-n", "-B", "-C", str(root), "setup"], env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    want = f"{prefix}/bin/python -m pip install" if expected == "CONDA" else ".venv/bin/python -m pip install"
    assert want in dry.stdout, dry.stdout
    assert ("-m venv .venv" in dry.stdout) == (expected == ".venv"), dry.stdout


@pytest.mark.platform("linux", "darwin")
@pytest.mark.parametrize("gpu", [False, True])
def test_make_setup_takes_torch_from_the_cpu_index_only_without_an_nvidia_gpu(tmp_path, gpu):
    """TORCH_INDEX (PyTorch's CPU wheel index) is used where no NVIDIA GPU is found, with the default index behind it;
    a machine with one (simulated: an `nvidia-smi` on PATH) keeps the default index, which has the CUDA build."""
    import shutil
    import subprocess
    from pathlib import Path

    make = shutil.which("make")
    if not make:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if gpu:
        fake = bin_dir / "nvidia-smi"
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
    path = os.pathsep.join([str(bin_dir)] + [d for d in os.environ["PATH"].split(os.pathsep)
                                             if not (Path(d) / "nvidia-smi").exists()])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDA") and k != "VENV"}
    env["PATH"] = path
    dry = subprocess.run([make, "-n", "-B", "-C", str(root), "setup", "TORCH_INDEX=http://127.0.0.1:9/cpu"],
                         env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    torch_line = next(line for line in dry.stdout.splitlines() if '"torch==' in line)
    if gpu:
        assert "--index-url" not in torch_line, torch_line
    else:
        first, fallback = torch_line.split(" || ")
        assert "--index-url http://127.0.0.1:9/cpu" in first and "--index-url" not in fallback, torch_line
    plain = subprocess.run([make, "-n", "-B", "-C", str(root), "setup"], env=env, capture_output=True, text=True)
    assert "--index-url" not in plain.stdout and " || " not in next(
        line for line in plain.stdout.splitlines() if '"torch==' in line)


def test_known_noise_is_quiet_and_errors_still_show():
    """bitsandbytes on a CPU with AVX512-BF16 warns at import that an optional kernel from the Hub is missing;
    after `quiet_known_noise` (which `setup` calls) a fresh process imports it without a word, and an error from the
    same logger still shows."""
    import subprocess

    code = ("from llmcourse.environment import quiet_known_noise\nquiet_known_noise()\nimport logging\n"
            "import bitsandbytes\nlogging.getLogger('bitsandbytes.backends.cpu.ops').error('an error shows')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kernels-community" not in proc.stderr
    assert "an error shows" in proc.stderr
