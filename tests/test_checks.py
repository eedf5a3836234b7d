import math

import numpy as np
import pytest
import torch

from llmcourse import checks
from llmcourse.checks import CheckFailed, check, expect, expect_close, expect_equal, expect_in_range


def run(test, hint=""):
    results = []
    orig = checks._emit
    checks._emit = results.append
    try:
        out = check("9.9", test, hint=hint)
    finally:
        checks._emit = orig
    assert results == [out]
    return out


def test_pass_fail_and_not_attempted():
    assert run(lambda: expect_equal(4, 4)).status == "passed"
    bad = run(lambda: expect_equal(5, 4, what="the count"), hint="count twice")
    assert bad.status == "failed" and "the count is 5, expected 4" in bad.message and "Hint: count twice" in bad.message

    def stub():
        raise NotImplementedError()

    assert run(stub).status == "not attempted"
    assert run(lambda: undefined_name).status == "not attempted"  # noqa: F821
    assert run(lambda: False).status == "failed"
    assert run(lambda: 1 / 0).status == "failed"  # the learner's error is a failure, not a crash


def test_lines_are_one_line_verdicts():
    assert run(lambda: None).line() == "✓ Exercise 9.9 passed"
    assert run(lambda: expect(False, "x is wrong")).line().startswith("✗ Exercise 9.9: x is wrong")
    assert "\n" not in run(lambda: expect(False, "a")).line()


def test_expect_close_reports_shape_and_difference():
    expect_close(torch.ones(3), np.ones(3))
    with pytest.raises(CheckFailed, match="shape"):
        expect_close(torch.ones(3), np.ones(4))
    with pytest.raises(CheckFailed, match="differs from the reference by up to 0.5"):
        expect_close([1.0, 1.5], [1.0, 1.0])
    with pytest.raises(CheckFailed, match="NaN"):
        expect_close([math.nan], [1.0])


def test_expect_in_range():
    expect_in_range(0.5, 0, 1)
    with pytest.raises(CheckFailed, match="between 0 and 1"):
        expect_in_range(1.5, 0, 1)
    with pytest.raises(CheckFailed):
        expect_in_range(float("nan"), 0, 1)


def test_result_is_recorded_for_the_grader():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    captured = []
    shell.display_pub.publish = lambda data, metadata=None, **kw: captured.append(data)
    try:
        check("1.2", lambda: None)
    finally:
        InteractiveShell.clear_instance()
    assert captured and captured[0][checks.RESULT_MIME] == {"exercise": "1.2", "status": "passed", "message": ""}
    assert captured[0]["text/plain"] == "✓ Exercise 1.2 passed"
