"""Exercise checks: one verdict line per exercise, recorded in the cell output for the grader.

Introduced in week 1 (`week01/00_setup_and_hardware.ipynb`); every notebook's check cells call `check`.
A check cell looks like::

    check("1.1", lambda: expect_close(softmax(x), torch.softmax(x, -1), what="softmax(x)"),
          hint="subtract the row maximum before exp")

The lambda runs the learner's code. `check` prints ``✓ Exercise 1.1 passed``, ``✗ Exercise 1.1: <why> Hint: <hint>``
or ``… Exercise 1.1 not attempted`` and displays a machine-readable record (MIME type `RESULT_MIME`) that
`llmcourse grade` reads back from the executed notebook.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "RESULT_MIME",
    "CheckFailed",
    "CheckResult",
    "check",
    "expect",
    "expect_close",
    "expect_equal",
    "expect_in_range",
]

RESULT_MIME = "application/vnd.llmcourse.check+json"


class CheckFailed(AssertionError):
    """Raised by the expect_* helpers: the message says what was wrong, with numbers."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one exercise check."""

    exercise: str
    status: str  # "passed" | "failed" | "not attempted" | "error"
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def _ipython_display_(self) -> None:
        """Already shown by `check`: as a cell's last value it shows nothing more."""

    def line(self) -> str:
        if self.status == "passed":
            return f"✓ Exercise {self.exercise} passed"
        if self.status == "not attempted":
            return f"… Exercise {self.exercise} not attempted: {self.message}"
        return f"✗ Exercise {self.exercise}: {self.message}"


def _to_numpy(x: Any):
    import numpy as np

    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def expect(condition: bool, message: str) -> None:
    """Fail with `message` unless `condition` holds."""
    if not bool(condition):
        raise CheckFailed(message)


def expect_equal(actual: Any, expected: Any, what: str = "your answer") -> None:
    """Exact equality (numbers, strings, lists, tuples, dicts)."""
    if hasattr(actual, "tolist") and not isinstance(actual, (str, bytes)):
        actual = actual.tolist()
    if hasattr(expected, "tolist") and not isinstance(expected, (str, bytes)):
        expected = expected.tolist()
    if actual != expected:
        a, e = repr(actual), repr(expected)
        if len(a) > 80:
            a = a[:77] + "..."
        if len(e) > 80:
            e = e[:77] + "..."
        raise CheckFailed(f"{what} is {a}, expected {e}.")


def expect_close(actual: Any, expected: Any, what: str = "your answer", atol: float = 1e-5,
                 rtol: float = 1e-4) -> None:
    """Elementwise closeness of numbers, arrays or tensors, shapes included."""
    import numpy as np

    try:
        a, e = _to_numpy(actual), _to_numpy(expected)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"{what} could not be read as numbers ({exc}).") from None
    if a.shape != e.shape:
        raise CheckFailed(f"{what} has shape {tuple(a.shape)}, expected {tuple(e.shape)}.")
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(e)):
        raise CheckFailed(f"{what} contains NaN or inf (expected finite values: overflow?).")
    diff = np.abs(a - e)
    tol = atol + rtol * np.abs(e)
    if np.any(diff > tol):
        worst = float(diff.max())
        raise CheckFailed(f"{what} differs from the reference by up to {worst:.3g} "
                          f"(tolerance {atol:g} + {rtol:g}·|x|).")


def expect_in_range(value: float, low: float, high: float, what: str = "your answer") -> None:
    """`low <= value <= high`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} should be a number, got {type(value).__name__}.") from None
    if math.isnan(v) or not (low <= v <= high):
        raise CheckFailed(f"{what} is {v:.4g}, expected between {low:g} and {high:g}.")


def _run(exercise: str, test: Callable[[], Any], hint: str) -> CheckResult:
    suffix = f" Hint: {hint}" if hint else ""
    try:
        outcome = test()
    except NotImplementedError:
        return CheckResult(exercise, "not attempted", "fill in the exercise cell above and run it.")
    except NameError as exc:
        return CheckResult(exercise, "not attempted", f"{exc}: run the exercise cell above first.")
    except CheckFailed as exc:
        return CheckResult(exercise, "failed", f"{exc}{suffix}")
    except Exception as exc:  # the learner's code raised: report it as a failure, do not crash the notebook
        return CheckResult(exercise, "failed", f"your code raised {type(exc).__name__}: {exc}.{suffix}")
    if outcome is False:
        return CheckResult(exercise, "failed", f"the answer is not right.{suffix}")
    return CheckResult(exercise, "passed", "")


def check(exercise: str, test: Callable[[], Any], hint: str = "") -> CheckResult:
    """Run `test` (a zero-argument callable using the learner's answer), print one verdict line and record it.

    `test` passes by returning anything but False without raising. It fails by raising `CheckFailed` (use the
    expect_* helpers) or returning False; a stub raising `NotImplementedError` or a missing name means "not attempted".
    """
    result = _run(str(exercise), test, hint)
    _emit(result)
    return result


def _emit(result: CheckResult) -> None:
    line = result.line()
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({"text/plain": line, RESULT_MIME: asdict(result)}, raw=True)
            return
    except ImportError:
        pass
    print(line)
