"""llmcourse.tasks: generated word problems, reading answers, and the fenced Python runner."""

import pytest

from llmcourse.tasks import arithmetic_problems, final_number, run_python


def test_problems_are_seeded_and_correct():
    a, b = arithmetic_problems(50, seed=3), arithmetic_problems(50, seed=3)
    assert a == b
    assert a != arithmetic_problems(50, seed=4)
    assert {p["kind"] for p in a} == {"add", "sub", "mul", "add_sub", "mul_add", "div"}
    for p in a:
        assert isinstance(p["answer"], int) and p["answer"] >= 0
        assert eval(p["program"][len("print("):-1]) == p["answer"]  # the reference program prints the answer
        assert p["question"].endswith("?")


@pytest.mark.parametrize("text, expected", [
    ("So 3 + 4 = 7 apples.", 7), ("The answer is 1,250.", 1250), ("2.5 each", 2.5), ("-4", -4),
    ("no number here", None), ("", None), ("12 boxes of 3 make 36", 36), ("The answer is 7.", 7),
])
def test_final_number(text, expected):
    assert final_number(text) == expected


def test_run_python_returns_output():
    r = run_python("print(6 * 7)")
    assert r.ok and r.stdout.strip() == "42"


def test_run_python_reports_errors():
    r = run_python("print(1 / 0)")
    assert not r.ok and r.error.startswith("ZeroDivisionError")


def test_run_python_stops_an_endless_loop():
    r = run_python("while True: pass", timeout=1)
    assert r.error.startswith("timed out") and r.seconds < 5


@pytest.mark.parametrize("code", [
    "import socket; socket.create_connection(('example.com', 80))",
    "open('x.txt', 'w').write('hi')",
    "import os; os.system('echo hi')",
    "import subprocess; subprocess.run(['echo', 'hi'])",
])
def test_run_python_refuses_network_writes_and_processes(code):
    r = run_python(code)
    assert not r.ok and "not allowed" in r.error


@pytest.mark.platform("linux")  # RLIMIT_AS: macOS accepts the limit but does not enforce it, Windows has none
def test_run_python_caps_memory():
    r = run_python("x = bytearray(4 * 2**30)", memory_mb=256)
    assert not r.ok and "MemoryError" in r.error
