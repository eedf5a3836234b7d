"""Grading, the judge: answers computed in the student's kernel, judged as plain data outside it.

A reference check cell may carry an answer spec in its metadata (``llmcourse.answer``): code that sets ``ANSWER``
from the student's work, on inputs it draws from ``rng`` (a NumPy generator seeded by the batch's secret seed),
and the tolerances of the comparison::

    "llmcourse": {"answer": {"code": "x_probe = torch.tensor(rng.normal(size=(3, 7)) * 10 + 500)\\n"
                                     "ANSWER = softmax(x_probe)", "rtol": 1e-5, "atol": 1e-6}}

For such an exercise the grader runs no check in the student's kernel. After the exercise cell it inserts an answer
cell, which runs that code and appends ``{"exercise", "answer"}`` (numbers, strings, nested lists: tensors and
arrays become lists) as one JSON line to a file in the kernel's working folder. The reference notebook, solutions
and all, runs the same cells once per batch with the same seed, in a kernel of its own: its answers are the expected
ones. The grader then reads both files as JSON (nothing is unpickled, nothing of the student's is called) and
compares them here. The seed is drawn afresh for every batch, so answers computed before the batch are useless, and
code in the student's kernel can change only its own answers: patching the checks, IPython's display or events,
numpy, or the grader's cells inside the kernel changes nothing a judge reads but the answer itself. The verdicts
written into the stored notebook are the judge's.

Where the learner's work is a state rather than a value (a git history), the answer is that state as data (a git
bundle) and the spec names a derivation (``"derive"``, one of ``DERIVATIONS``): the grader applies it to both answers,
in its own process, and judges what comes out. The facts are then gathered by the grader's code, never the kernel's.
"""

from __future__ import annotations

import importlib
import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ANSWERS_FILE", "DERIVATIONS", "AnswerSpec", "answer_spec", "derived", "judge", "new_seed",
           "read_answers"]

ANSWERS_FILE = ".llmcourse-answers.jsonl"
MAX_ANSWERS_BYTES = 16 * 2**20  # an answers file past this is not read: the answers count as not recorded
NOT_ATTEMPTED = ("NotImplementedError", "NameError")  # what a stub (or a cell never filled in) raises
# A spec's "derive": the function (module, name) the grader applies to an answer before judging it (see above)
DERIVATIONS = {"git-history": ("llmcourse.contrib", "history_from_bundle"),
               "fork-feature": ("llmcourse.contrib", "feature_from_files"),
               "peft-fork": ("llmcourse.peft_answers", "fork_facts")}


@dataclass(frozen=True)
class AnswerSpec:
    """How the kernel computes an exercise's answer, and how close it must come to the reference's."""

    code: str
    rtol: float = 1e-5
    atol: float = 1e-8
    derive: str | None = None  # a key of DERIVATIONS


def answer_spec(check_cell: Any) -> AnswerSpec | None:
    """The answer spec in a reference check cell's metadata, or None (the exercise is checked in the kernel)."""
    spec = check_cell.get("metadata", {}).get("llmcourse", {}).get("answer")
    if not isinstance(spec, dict) or not isinstance(spec.get("code"), str):
        return None
    derive = spec.get("derive")
    if derive is not None and derive not in DERIVATIONS:
        raise ValueError(f"answer spec derives with {derive!r}, which the judge does not know: use one of "
                         f"{sorted(DERIVATIONS)}")
    return AnswerSpec(spec["code"], float(spec.get("rtol", 1e-5)), float(spec.get("atol", 1e-8)), derive)


def new_seed() -> int:
    """A batch's secret seed."""
    return secrets.randbits(62)


def read_answers(folder: Path) -> dict[str, dict]:
    """The answers a kernel recorded in `folder`, by exercise (the last record of each), as plain JSON data."""
    path = Path(folder) / ANSWERS_FILE
    try:
        if path.stat().st_size > MAX_ANSWERS_BYTES:
            return {}
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    answers: dict[str, dict] = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("exercise"), str):
            answers[record["exercise"]] = record
    return answers


def judge(got: dict | None, expected: dict, spec: AnswerSpec) -> tuple[str, str]:
    """(status, message) of a student's answer record against the reference's.

    No record is None (the caller says why: the run stopped before the answer cell). A record with an error is
    ``not attempted`` for a stub's NotImplementedError or a missing name, else ``failed`` with the error.
    """
    if "answer" not in expected:
        raise ValueError(f"the reference's own answer raised {expected.get('error')}: {expected.get('message')}")
    if got is None:
        return "error", "the answer cell recorded no answer."
    if "error" in got:
        error, message = str(got.get("error")), str(got.get("message", ""))[:300]
        if error in NOT_ATTEMPTED:
            return "not attempted", f"{error}: {message}" if message else error
        return "failed", f"computing the answer raised {error}: {message}"
    want = _derived_reference(expected["answer"], spec)  # a failure here is the grader's, and raises
    try:
        answer = derived(got.get("answer"), spec)
    except ValueError as exc:
        return "failed", f"the answer could not be read: {exc}"
    problem = _compare(answer, want, spec, "answer")
    return ("passed", "") if problem is None else ("failed", problem)


def derived(answer: Any, spec: AnswerSpec) -> Any:
    """`answer` as the judge compares it: through the spec's derivation (in this process), if it names one. The
    programs a derivation starts on the student's code run in the sandbox (`llmcourse.programs`)."""
    if not spec.derive:
        return answer
    from llmcourse.programs import confiner

    from .. import isolation

    module, name = DERIVATIONS[spec.derive]
    with confiner(isolation.command_prefix):
        return getattr(importlib.import_module(module), name)(answer)


_REFERENCE_DERIVED: dict[tuple[str, str], Any] = {}  # (derivation, the reference's answer as JSON) -> what it gives


def _derived_reference(answer: Any, spec: AnswerSpec) -> Any:
    """`derived` for the reference's answer, worked out once per batch and process (one derivation runs the learner's
    tests in a sandbox: seconds, the same for every submission)."""
    if not spec.derive:
        return answer
    key = (spec.derive, json.dumps(answer, sort_keys=True))
    if key not in _REFERENCE_DERIVED:
        if len(_REFERENCE_DERIVED) >= 16:  # one batch needs one entry an exercise
            _REFERENCE_DERIVED.clear()
        _REFERENCE_DERIVED[key] = derived(answer, spec)
    return _REFERENCE_DERIVED[key]


def _compare(got: Any, want: Any, spec: AnswerSpec, where: str) -> str | None:
    """None when `got` matches `want`, else what differs (with the numbers)."""
    if isinstance(want, bool) or want is None or isinstance(want, str):
        return None if got == want and type(got) is type(want) else f"{where} is {_short(got)}, expected {_short(want)}"
    if isinstance(want, (int, float)):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return f"{where} is {_short(got)}, expected a number near {want:.6g}"
        if math.isnan(want):
            return None if isinstance(got, float) and math.isnan(got) else f"{where} is {got:.6g}, expected nan"
        if abs(got - want) <= spec.atol + spec.rtol * abs(want):
            return None
        return f"{where} is {got:.6g}, expected {want:.6g} (tolerance {spec.atol:g} + {spec.rtol:g}·|expected|)"
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            size = len(got) if isinstance(got, list) else "not a list"
            return f"{where} has {size} entries, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _compare(g, w, spec, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"{where} has keys {sorted(got) if isinstance(got, dict) else _short(got)}, expected {sorted(want)}"
        for k in want:
            problem = _compare(got[k], want[k], spec, f"{where}[{k!r}]")
            if problem is not None:
                return problem
        return None
    return f"{where}: the reference's answer is of a kind the judge does not compare ({type(want).__name__})"


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# The function the grader's first cell defines in the kernel (see assemble._init_cell): it runs an answer spec's code
# in a copy of the notebook's namespace and appends the answer, as JSON, to the answers file.
KERNEL_SAVE = '''
def _llmcourse_save_answer(exercise, code, seed, path):
    import json, numpy as np
    def plain(value, depth=0):
        if depth > 8:
            raise TypeError("the answer is nested too deeply")
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, (list, tuple)):
            return [plain(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v, depth + 1) for k, v in value.items()}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"an answer of type {type(value).__name__} cannot be recorded")
    namespace = dict(get_ipython().user_ns)
    namespace["rng"] = np.random.default_rng(seed)
    try:
        exec(compile(code, f"<answer to exercise {exercise}>", "exec"), namespace)
        record = {"exercise": exercise, "answer": plain(namespace["ANSWER"])}
    except Exception as exc:
        record = {"exercise": exercise, "error": type(exc).__name__, "message": str(exc)[:300]}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\\n")
    return record.get("error", "recorded")
'''
