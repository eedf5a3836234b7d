"""Runs peft's tests on a learner's fork for `llmcourse.upstream.run_peft_tests`; a script, run by path.

It reads its job from stdin as one JSON line: a nonce, the LoraConfig probe, the pytest arguments, the new tests and
the mutants. It imports what peft needs (torch, transformers, pytest) but never peft itself, whose code on the fork
is the learner's: each job runs in a forked child that imports it (so the imports are paid once), with its output
sent elsewhere, and this process reads the child's exit code from the system and its data from a pipe of its own.
It also makes itself undumpable, so no child can read its memory or open its file descriptors. So the learner's
code, tests included, can report only its own behaviour: nothing it does changes the exit code of another run, and
the result line this process prints (prefixed with the nonce, which no child ever sees) is its own.
"""

import json
import os
import sys

MAX_DATA = 2**20  # what a child may report through its pipe


def _undumpable() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass


def _probe(job: dict) -> tuple[int, dict]:
    import peft
    from peft import LoraConfig

    probe = {}
    for key, kwargs in job["probe"].items():
        try:
            LoraConfig(**kwargs)
            probe[key] = None
        except Exception as exc:
            probe[key] = f"{type(exc).__name__}: {exc}"
    return 0, {"peft_file": peft.__file__, "probe": probe}


class _Failures:
    def __init__(self):
        self.failed = []

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)


def _tests(job: dict) -> tuple[int, dict]:
    import pytest

    if job.get("hole"):  # a mutant of a correct check: it lets the values of its hole through, or rejects them
        from peft import LoraConfig

        hole, original = job["hole"], LoraConfig.__post_init__

        def post_init(self):
            p = self.lora_dropout
            if eval(hole["when"], {"p": p}):
                if hole["reject"]:
                    raise ValueError(f"lora_dropout={p} rejected by a mutant")
                self.lora_dropout = 0.0
                original(self)
                self.lora_dropout = p
            else:
                original(self)

        LoraConfig.__post_init__ = post_init
    failures = _Failures()
    code = pytest.main([*job["args"], *job["options"]], plugins=[failures])
    return int(code), {"failed": failures.failed[:50]}


def _run(job: dict, output: str) -> tuple[int, dict | None]:
    """(exit code, data) of `job` run in a forked child whose stdout and stderr go to the file `output`."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the learner's code runs here only
        os.close(read)
        code = 3
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code, data = (_probe if job["kind"] == "probe" else _tests)(job)
            os.write(write, json.dumps(data).encode()[:MAX_DATA])
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    chunks, size = [], 0
    while size <= MAX_DATA:
        chunk = os.read(read, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    try:
        data = json.loads(b"".join(chunks)) if chunks else None
    except ValueError:
        data = None
    return os.waitstatus_to_exitcode(status), data if isinstance(data, dict) else None


def _warm_up(fork_src: str) -> None:
    """Import, once and before any child, what peft's import and its tests need: pytest, torch, transformers, and
    the modules the course's own installed peft loads (the fork's folder taken off the path meanwhile, and that
    peft forgotten afterwards, so that each child imports the fork's)."""
    import pytest  # noqa: F401
    import torch  # noqa: F401

    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != fork_src]
    try:
        import peft  # noqa: F401  the installed one
        import peft.tuners.lora  # noqa: F401
    except Exception:
        pass
    finally:
        sys.path[:] = saved
        for name in [n for n in sys.modules if n == "peft" or n.startswith("peft.")]:
            del sys.modules[name]


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    sys.stdin.close()
    _undumpable()
    sys.modules.update(bitsandbytes=None, torchao=None)  # hidden: the config tests use neither (4 s less per run)
    _warm_up(spec["src"])

    folder = spec["folder"]
    code, probe = _run({"kind": "probe", "probe": spec["probe"]}, os.path.join(folder, "probe.txt"))
    if code != 0 or probe is None or not isinstance(probe.get("probe"), dict):
        with open(os.path.join(folder, "probe.txt"), encoding="utf-8", errors="replace") as f:
            tail = f.read().strip().splitlines()[-3:]
        print(spec["nonce"] + json.dumps({"error": " | ".join(tail) or f"exit code {code}"}), flush=True)
        return
    result = {"peft_file": str(probe.get("peft_file")), "probe": probe["probe"], "runs": {}}
    jobs = [("tests", spec["tests"], None)] if spec["tests"] else []  # none: the probe alone
    jobs += [(name, spec["new"], hole) for name, hole in spec["holes"].items()]
    for name, args, hole in jobs:
        output = os.path.join(folder, "tests.txt" if name == "tests" else "mutant.txt")
        code, data = _run({"kind": "tests", "args": args, "options": spec["options"], "hole": hole}, output)
        failed = (data or {}).get("failed", [])
        result["runs"][name] = {"code": code, "failed": [str(f) for f in failed] if isinstance(failed, list) else []}
    print(spec["nonce"] + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
