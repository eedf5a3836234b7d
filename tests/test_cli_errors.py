"""Every user error of the `llmcourse` command: a non-zero exit and one line on stderr, never a traceback.

Errors the course detects (a bad value, a missing file) exit with 1 and print exactly one line,
`error: what happened ... Fix: what to do`. argparse's own usage errors (an unknown option, a missing argument)
exit with 2 and print argparse's usage lines, then one `llmcourse ...: error: ...` line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmcourse.cli import main, parse_parameters

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "grading_sample.ipynb"
MODEL = "meta-llama/Llama-3.1-8B"  # a packaged config: no download


def _cases(tmp: Path) -> list[tuple[list[str], str]]:
    """(argv, a piece of the expected message)."""
    text = tmp / "notes.txt"
    text.write_text("not a notebook", encoding="utf-8")
    blocker = tmp / "a-file"
    blocker.write_text("x", encoding="utf-8")
    return [
        (["badges", "--repo", "foo"], "not a GitHub address"),
        (["plan", MODEL, "--budget", "12XB"], "cannot read the size '12XB'"),
        (["plan", MODEL, "--task", "pretrain"], "task 'pretrain' is not one of"),
        (["plan", MODEL, "--quant", "int4"], "quantization 'int4' is not one of"),
        (["plan", MODEL, "--dtype", "fp8"], "dtype 'fp8' is not one of"),
        (["plan", MODEL, "--device", "tpu"], "unknown simulated device 'tpu'"),
        (["plan", MODEL, "--batch", "0"], "must be at least 1"),
        (["plan", MODEL, "--task", "full", "--quant", "nf4"], "cannot be quantized"),
        (["plan", "no-such-org/no-such-model-anywhere", "--device", "t4"], "no config found"),
        (["release", str(tmp / "missing.ipynb")], "not found"),
        (["release", str(text)], "is not a notebook"),
        (["release", str(FIXTURE), "--out", str(blocker)], "File exists"),
        (["grade", str(FIXTURE), "--notebook", str(tmp / "missing.ipynb")], "reference notebook"),
        (["grade", str(tmp / "missing.ipynb"), "--notebook", str(FIXTURE)], "is not a file"),
        (["grade", str(FIXTURE), "--notebook", str(FIXTURE), "-p", "1X", "3"], "is not a parameter name"),
        (["grade", str(FIXTURE), "--notebook", str(FIXTURE), "-p", "X", "[1, 2"], "not a YAML literal"),
        (["grade", str(FIXTURE), "--notebook", str(FIXTURE), "--jobs", "0"], "must be positive"),
        (["course", "--only", "week99"], "no notebook of curriculum/syllabus.yaml"),
        (["execute", "week99/00_nothing.ipynb"], "is not in curriculum/syllabus.yaml"),
    ]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_user_errors_exit_non_zero_with_one_line(tmp_path, capsys, offline):
    cases = _cases(tmp_path)
    assert len(cases) >= 12
    wrong = []
    for argv, expected in cases:
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        if not (code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
                and "Fix:" in lines[0] and "Traceback" not in err):
            wrong.append((argv, code, err))
    assert wrong == []


@pytest.mark.parametrize("argv", [["plan"], ["grade", "x.ipynb"], ["plan", MODEL, "--no-such-option"], ["teach"]])
def test_usage_errors_are_argparse_s(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.splitlines()[0].startswith("usage: llmcourse") and ": error: " in err.splitlines()[-1]
    assert "Traceback" not in err


def test_parameters_are_yaml_literals():
    assert parse_parameters([["N", "20"], ["LR", "1e-3"], ["ON", "true"], ["NAME", "smollm2"], ["L", "[1, 2]"]]) == {
        "N": 20, "LR": 1e-3, "ON": True, "NAME": "smollm2", "L": [1, 2]}


@pytest.mark.parametrize("argv, expected", [
    (["badges", "--repo", "foo"], "not a GitHub address"),
    (["plan", MODEL, "--budget", "12XB"], "cannot read the size"),
    (["release", "missing.ipynb"], "not found"),
])
def test_no_traceback_reaches_a_terminal(argv, expected, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "llmcourse.cli", *argv], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
