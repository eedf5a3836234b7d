"""Tasks with answers a program can check, and a fenced runner for model-written Python.

Introduced in week 4 (`week04/02_instruction_tuning_and_prompting.ipynb`):

* `arithmetic_problems(n, seed)`: generated word problems with integer answers (and the Python that solves each),
  so that prompting styles and fine-tuned models are scored by exact match, not by eye;
* `arithmetic_questions(n, seed)`: bare sums ("What is 40 - 26?") that a 135M model gets right about a third of
  the time, the verifiable task of week 4.4's preference tuning;
* `final_number(text)`: the number a response ends on, the usual way to read an answer out of free text;
* `run_python(code, timeout)`: program-of-thought runs the model's code in a separate Python process with a
  wall-clock timeout, a memory cap, no network and no file writes or child processes.

`run_python` is a fence against accidents (an endless loop, a huge list, a stray `open(..., "w")`), not a security
boundary: it uses audit hooks (PEP 578) and resource limits, which careful hostile code can get around. Run
untrusted code from strangers inside a container or a VM.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

__all__ = ["ProgramResult", "arithmetic_problems", "arithmetic_questions", "final_number", "run_python"]

# ----------------------------------------------------------------------------------------------- word problems
_NAMES = ["Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jia", "Kofi", "Lena", "Mo", "Nia",
          "Omar", "Priya", "Raj", "Sara", "Tom", "Uma"]
_THINGS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "coins", "shells", "cards", "eggs"]
_BOXES = {"box": "boxes", "bag": "bags", "jar": "jars", "basket": "baskets", "tray": "trays"}


def _problem(rng: random.Random) -> dict:
    name, other = rng.sample(_NAMES, 2)
    thing = rng.choice(_THINGS)
    box = rng.choice(sorted(_BOXES))
    boxes = _BOXES[box]
    kind = rng.choice(["add", "sub", "mul", "add_sub", "mul_add", "div"])
    if kind == "add":
        a, b = rng.randint(3, 40), rng.randint(3, 40)
        q = f"{name} has {a} {thing}. {other} gives {name} {b} more. How many {thing} does {name} have now?"
        program, answer = f"print({a} + {b})", a + b
    elif kind == "sub":
        a = rng.randint(20, 60)
        b = rng.randint(2, a - 5)
        q = f"{name} had {a} {thing} and gave {b} of them to {other}. How many {thing} does {name} have left?"
        program, answer = f"print({a} - {b})", a - b
    elif kind == "mul":
        a, b = rng.randint(3, 9), rng.randint(3, 12)
        q = f"There are {a} {boxes} with {b} {thing} in each {box}. How many {thing} are there in total?"
        program, answer = f"print({a} * {b})", a * b
    elif kind == "add_sub":
        a, b = rng.randint(10, 40), rng.randint(3, 20)
        c = rng.randint(2, a + b - 3)
        q = (f"{name} has {a} {thing}, buys {b} more, then gives {c} to {other}. "
             f"How many {thing} does {name} have now?")
        program, answer = f"print({a} + {b} - {c})", a + b - c
    elif kind == "mul_add":
        a, b, c = rng.randint(2, 6), rng.randint(3, 10), rng.randint(1, 15)
        q = (f"{name} fills {a} {boxes} with {b} {thing} each and has {c} {thing} left over. "
             f"How many {thing} did {name} start with?")
        program, answer = f"print({a} * {b} + {c})", a * b + c
    else:
        b, answer = rng.randint(2, 8), rng.randint(2, 12)
        a = b * answer
        q = f"{name} shares {a} {thing} equally among {b} friends. How many {thing} does each friend get?"
        program = f"print({a} // {b})"
    return {"question": q, "answer": answer, "program": program, "kind": kind}


def arithmetic_problems(n: int, seed: int = 0) -> list[dict]:
    """`n` word problems: dicts with question, answer (int), program (Python printing the answer) and kind.

    Six kinds (add, sub, mul, add_sub, mul_add, div), one or two steps, small whole numbers. The same seed gives the
    same problems; different seeds give (mostly) different ones, so train and test sets are made with two seeds and
    checked for overlap by question text.
    """
    rng = random.Random(seed)
    return [_problem(rng) for _ in range(n)]


def arithmetic_questions(n: int, seed: int = 0) -> list[dict]:
    """`n` one-step sums: dicts with question ("What is 40 - 26?"), expression, answer (int) and kind.

    Addition and subtraction of numbers up to 50 and one-digit multiplication, a third of each on average. Short on
    purpose: a prompt and its answer fit in about 40 tokens, so a CPU can sample and train on many of them.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.choice(["add", "sub", "mul"])
        if kind == "add":
            a, b = rng.randint(2, 40), rng.randint(2, 40)
            expression, answer = f"{a} + {b}", a + b
        elif kind == "sub":
            a = rng.randint(10, 50)
            b = rng.randint(2, a - 1)
            expression, answer = f"{a} - {b}", a - b
        else:
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            expression, answer = f"{a} * {b}", a * b
        out.append({"question": f"What is {expression}?", "expression": expression, "answer": answer, "kind": kind})
    return out


# ----------------------------------------------------------------------------------------------- reading answers
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> float | int | None:
    """The last number in `text` (commas as thousands separators allowed), or None when there is none.

    "So 3 + 4 = 7 apples." -> 7; "1,250" -> 1250; "2.5" -> 2.5; "no idea" -> None.
    """
    matches = _NUMBER.findall(text or "")
    if not matches:
        return None
    raw = matches[-1].replace(",", "")
    value = float(raw)
    return int(value) if value.is_integer() and "." not in raw else value


# ----------------------------------------------------------------------------------------------- running code
@dataclass
class ProgramResult:
    """What a program did: its output, its error (last line of the traceback, or why it was stopped), its time."""

    stdout: str
    error: str
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.error


# Runs in the child before the program: limits, then an audit hook that refuses network, child processes and
# writes, then the program itself (read from stdin, so that no file is written and argv stays short).
_PRELUDE = r'''
import sys
_code = sys.stdin.read()
try:
    import resource
    _mem = {mem}
    resource.setrlimit(resource.RLIMIT_AS, (_mem, _mem))
    resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu}))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
except (ImportError, ValueError, OSError):
    pass
_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
            "os.kill", "os.remove", "os.unlink", "os.rmdir", "os.rename", "shutil.", "ctypes.", "urllib.")
def _hook(event, args):
    if event.startswith(_BLOCKED):
        raise PermissionError(f"{{event}} is not allowed in this sandbox")
    if event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        raise PermissionError("writing files is not allowed in this sandbox")
sys.addaudithook(_hook)
del _hook
exec(compile(_code, "<program>", "exec"), {{"__name__": "__main__"}})
'''


def run_python(code: str, timeout: float = 5.0, memory_mb: int = 512, max_output: int = 10_000) -> ProgramResult:
    """Run `code` in a fresh Python process (isolated mode, empty environment, a temporary working folder).

    Stopped after `timeout` seconds of wall-clock time; address space capped at `memory_mb` (POSIX); no network,
    no child processes, no file writes (audit hooks). Returns the program's standard output (cut to `max_output`
    characters) and an error string, empty when the program ran to completion.
    """
    prelude = _PRELUDE.format(mem=int(memory_mb) * 2**20, cpu=max(1, int(timeout) + 1))
    start = time.perf_counter()
    env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
    if os.name == "nt":  # Windows needs SYSTEMROOT to start Python
        env["SYSTEMROOT"] = os.environ.get("SYSTEMROOT", "")
    with tempfile.TemporaryDirectory() as folder:
        try:
            proc = subprocess.run([sys.executable, "-I", "-B", "-c", prelude], input=code, capture_output=True,
                                  text=True, timeout=timeout, cwd=folder, env=env,
                                  start_new_session=os.name == "posix")
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return ProgramResult(out[:max_output], f"timed out after {timeout:g} s", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    error = ""
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        error = lines[-1] if lines else f"exited with code {proc.returncode}"
        if proc.returncode < 0 and not lines:
            error = f"killed by signal {-proc.returncode} (memory or CPU limit)"
    return ProgramResult(proc.stdout[:max_output], error, seconds)
