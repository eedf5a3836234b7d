"""A real library as a git upstream: peft's pinned source releases, its own tests and linter, for week 7.3.

Introduced in `week07/03_contributing_to_peft.ipynb` (the warm-up on a made-up package is `llmcourse.contrib`).
The facts live here once: which releases, where their source distributions are stored, which of peft's own tests
run offline (`OFFLINE_TESTS`), which ruff peft's config demands. `fetch_sources` downloads them at set-up time (the
only step that needs the package index); everything else works offline:

    create_peft_upstream(folder)   bare `upstream.git`: the real releases 0.21.0 and 0.21.1, one commit and tag each
    move_upstream(bare)            upstream moves on: the real 0.21.2 release, then one commit the course writes
    run_peft_tests(repo, ...)      peft's offline tests, the learner's new tests, and a probe of LoraConfig
    check_feature / check_rebase / check_review     the exercise checks (3.1, 3.2, 3.3)
    feature_answer / rebase_answer / review_answer  their answers, as data, for the grader's judge
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from llmcourse import programs  # the sandbox, where the grader gathers the facts
from llmcourse.assets import cache_dir
from llmcourse.contrib import start_upstream
from llmcourse.errors import AssetUnavailable, HardwareError

__all__ = [
    "FORK_RELEASE", "OFFLINE_TESTS", "PEFT_RELEASES", "RUFF_VERSION", "check_feature", "check_rebase", "check_review",
    "create_peft_upstream", "fetch_sources", "fresh_fork", "git", "move_upstream", "new_tests",
    "rebase_onto_moved_upstream", "run_peft_tests", "run_ruff", "sdist_path",
]

PEFT_RELEASES = ("0.21.0", "0.21.1", "0.21.2")  # real releases, oldest first; the last one arrives "meanwhile"
FORK_RELEASE = "0.21.1"  # the learner forks upstream when this is its newest release
RUFF_VERSION = "0.16.4"  # peft's pyproject.toml: [tool.ruff] required-version = "==0.16.4"
# The rule for peft's own tests that run offline, fast: the config tests of the LoRA family (the code the feature
# touches), minus the ones that download an adapter from the hub (they load PEFT_MODELS_TO_TEST by name).
OFFLINE_TESTS = ("tests/test_config.py", "lora and not from_pretrained and not runtime_config")
# pytest options: peft's pyproject adds --cov (pytest-cov, not installed here): -o addopts= drops it
PYTEST_OPTIONS = ("-o", "addopts=", "-q", "-p", "no:cacheprovider", "-W", "ignore")
CONFIG_FILE = "src/peft/tuners/lora/config.py"
ANCHOR = "        self.peft_type = PeftType.LORA\n"  # first line of LoraConfig.__post_init__'s own checks
_RELEASER = ["-c", "user.name=The PEFT maintainers", "-c", "user.email=peft-releases@llmcourse.invalid"]
_COURSE = ["-c", "user.name=Course maintainer (llmcourse)", "-c", "user.email=maintainer@llmcourse.invalid"]
_DATES = {"0.21.0": "2026-06-01T12:00:00+00:00", "0.21.1": "2026-06-15T12:00:00+00:00",
          "0.21.2": "2026-07-01T12:00:00+00:00", "course": "2026-07-02T12:00:00+00:00"}  # fixed, for stable hashes


# ---- the pinned sources ---------------------------------------------------------------------------------------------
def sources_dir() -> Path:
    """Where the source distributions and the pinned ruff are stored: the course's cache folder."""
    return cache_dir() / "sources"


def sdist_path(version: str) -> Path:
    """The stored source distribution of peft `version`."""
    return sources_dir() / f"peft-{version}.tar.gz"


def ruff_binary() -> Path:
    """The ruff that peft's own config asks for, installed apart from the course's ruff."""
    return sources_dir() / f"ruff-{RUFF_VERSION}" / "bin" / "ruff"


def fetch_sources() -> list[Path]:
    """Download what is missing (peft's source releases, ruff==RUFF_VERSION); needs the package index once."""
    sources_dir().mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    for version in PEFT_RELEASES:
        if not sdist_path(version).is_file():
            subprocess.run([*pip, "download", "-q", "--no-deps", "--no-binary", ":all:", f"peft=={version}",
                            "-d", str(sources_dir())], check=True)
    if not ruff_binary().is_file():
        subprocess.run([*pip, "install", "-q", "--target", str(ruff_binary().parents[1]), f"ruff=={RUFF_VERSION}"],
                       check=True)
    return [*(sdist_path(v) for v in PEFT_RELEASES), ruff_binary()]


def _require_sources() -> None:
    missing = [p.name for p in [*(sdist_path(v) for v in PEFT_RELEASES), ruff_binary()] if not p.is_file()]
    if missing:
        raise AssetUnavailable("peft source releases", f"{', '.join(missing)} not in the course cache",
                               fix="run `make setup` (or `llmcourse sources --fetch`) once while online.")
    if shutil.which("git") is None:
        raise HardwareError("git is not installed: install it (apt-get install git, or git-scm.com) and rerun.")


# ---- the upstream repository ----------------------------------------------------------------------------------------
def git(*args: str, cwd: Path, author: list[str] | None = None, date: str | None = None) -> str:
    """`git <args>` in `cwd` (as `author`, dated `date`); its output, or HardwareError with git's message."""
    env = dict(os.environ, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date) if date else None
    done = subprocess.run(["git", *(author or []), *args], check=False, cwd=cwd, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise HardwareError(f"`git {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _unpack_release(version: str, work: Path) -> None:
    """Replace the tracked files of `work` by the release's source (packaging metadata left out)."""
    if (work / "src").exists():
        git("rm", "-rq", ".", cwd=work)
    with tarfile.open(sdist_path(version)) as tar:
        for member in tar.getmembers():
            rel = member.name.split("/", 1)[1] if "/" in member.name else ""
            if not member.isfile() or rel == "PKG-INFO" or ".egg-info/" in rel or rel == "setup.cfg":
                continue
            dst = work / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(tar.extractfile(member).read())


def _release(version: str, work: Path) -> None:
    _unpack_release(version, work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", f"Release: v{version}", cwd=work, author=_RELEASER, date=_DATES[version])
    git("tag", f"v{version}", cwd=work, author=_RELEASER, date=_DATES[version])


def create_peft_upstream(folder: str | Path) -> Path:
    """Create `folder/upstream.git`: peft's releases up to FORK_RELEASE, one commit and one tag each."""
    _require_sources()
    bare, work = start_upstream(folder)
    for version in PEFT_RELEASES[:PEFT_RELEASES.index(FORK_RELEASE) + 1]:
        _release(version, work)
    git("clone", "-q", "--bare", str(work), str(bare), cwd=folder)
    shutil.rmtree(work)
    return bare


R_CHECK = ('        if self.r <= 0:\n'
           '            raise ValueError(f"`r` should be a positive integer, got {self.r}: LoRA needs a rank of at '
           'least 1.")\n')
R_TEST = ('    def test_lora_config_r_must_be_positive(self):\n'
          '        with pytest.raises(ValueError, match="`r` should be a positive integer, got 0"):\n'
          '            LoraConfig(r=0)\n\n')


def move_upstream(bare: str | Path) -> str:
    """Upstream moves on: the real next release, then a commit the course writes as a maintainer (it validates `r`
    at the top of LoraConfig.__post_init__, the lines exercise 3.1 edits). Returns the new upstream log."""
    bare = Path(bare)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "-q", str(bare), str(work), cwd=Path(tmp))
        _release(PEFT_RELEASES[-1], work)
        config = work / CONFIG_FILE
        config.write_text(config.read_text(encoding="utf-8").replace(ANCHOR, ANCHOR + R_CHECK, 1), encoding="utf-8")
        tests = work / "tests" / "test_config.py"
        anchor = "    def test_lora_config_layers_to_transform_validation(self):\n"
        tests.write_text(tests.read_text(encoding="utf-8").replace(anchor, R_TEST + anchor, 1), encoding="utf-8")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "FIX Validate that LoRA rank r is positive\n\nLoraConfig(r=0) was accepted and "
             "failed only later, inside get_peft_model. Raise at once,\nwith the value.", cwd=work, author=_COURSE,
             date=_DATES["course"])
        git("push", "-q", "--tags", "origin", "main", cwd=work)
    return git("log", "--format=%h %an  %s", cwd=bare).strip()


# ---- peft's own tests and linter, on a working copy ------------------------------------------------------------------
def _env(repo: Path) -> dict:
    # PYTEST_DISABLE_PLUGIN_AUTOLOAD: the course's pytest plugins (nbval, playwright, ...) are not peft's; loading
    # them adds about 4 s to every run here
    env = dict(os.environ, PYTHONPATH=str(Path(repo).resolve() / "src"), PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return env


def run_ruff(repo: str | Path) -> tuple[int, str]:
    """peft's linter as its Makefile runs it (`ruff check` and `ruff format --check` on src and tests), with the
    pinned ruff and the project's own config. Returns (exit code, output)."""
    _require_sources()
    out, code = [], 0
    for args in (["check", "src", "tests"], ["format", "--check", "src", "tests"]):
        done = subprocess.run([*programs.prefix(repo), str(ruff_binary()), *args], cwd=repo, capture_output=True,
                              text=True, errors="replace", env=_env(repo))
        code = code or done.returncode
        out.append(re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr).strip())  # no terminal colours
    return code, "\n".join(out)


BAD_DROPOUTS = (-0.1, 1.0, 1.5)  # below 0, exactly 1 (every activation dropped), above 1
GOOD_DROPOUTS = (0.0, 0.05, 0.5, 0.99)
HOLES = {  # mutants of a correct check: a good test of it fails under each one
    "lets negatives through": {"when": "p < 0", "reject": False},
    "lets 1.0 through": {"when": "p == 1.0", "reject": False},
    "lets values above 1 through": {"when": "p > 1", "reject": False},
    "rejects valid values": {"when": "0 <= p < 1", "reject": True},
}


def new_tests(repo: str | Path, base: str) -> list[str]:
    """Node ids of the test functions that `repo`'s working tree adds over commit `base` (peft's tests/ folder)."""
    repo = Path(repo)
    found = []
    for path in sorted((repo / "tests").glob("test_*.py")):
        rel = path.relative_to(repo).as_posix()
        done = subprocess.run(["git", "show", f"{base}:{rel}"], cwd=repo, capture_output=True, text=True)
        before = _test_names(done.stdout) if done.returncode == 0 else set()
        try:
            after = _test_names(path.read_text(encoding="utf-8"))
        except SyntaxError:
            continue  # the test run reports it
        found += [f"{rel}::{name}" for name in sorted(after - before)]
    return found


def _test_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {f"{node.name}::{f.name}" for f in node.body
                      if isinstance(f, ast.FunctionDef) and f.name.startswith("test")}
    return names


def run_peft_tests(repo: str | Path, new: list[str] = (), own: bool = True, holes: dict | None = None,
                   probe: dict | None = None, timeout: int = 300) -> dict:
    """On `repo`'s own peft (PYTHONPATH=src): probe LoraConfig with `probe` kwargs, run peft's OFFLINE_TESTS (if
    `own`) and the `new` tests, then the `new` tests under each mutant of `holes`, each in a child of one harness
    process that never imports the fork's code itself (`llmcourse/peft_harness.py`). Returns {"peft_file", "probe":
    {key: None or "Error: message"}, "runs": {name: {"code", "failed"}}, "output"} (pytest's output of the first
    run), or {"error", "output"} when the fork's peft does not import."""
    import secrets


    repo = Path(repo).resolve()
    files, k = OFFLINE_TESTS
    names = [n.split("::")[-1] for n in new]
    tests = ([files, *sorted({n.split("::")[0] for n in new} - {files}), "-k", " or ".join([f"({k})", *names])]
             if own else list(new))
    with tempfile.TemporaryDirectory(dir=programs.folder()) as tmp:  # a folder a confined harness can write
        nonce = secrets.token_hex(16) + " "  # marks the harness's own result line: its children never see it
        spec = {"nonce": nonce, "folder": tmp, "src": str(repo / "src"), "probe": probe or {},
                "options": list(PYTEST_OPTIONS), "tests": tests, "new": list(new), "holes": holes or {}}
        script = Path(tmp) / "harness.py"  # run from a folder of its own: the package's folder would shadow modules
        script.write_text(Path(__file__).with_name("peft_harness.py").read_text(encoding="utf-8"), encoding="utf-8")
        try:
            done = subprocess.run([*programs.prefix(repo), sys.executable, str(script)], input=json.dumps(spec) + "\n",
                                  cwd=repo, capture_output=True, text=True, errors="replace", env=_env(repo),
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"the tests ran past {timeout} s", "output": ""}
        output = Path(tmp) / "tests.txt"
        output = output.read_text(encoding="utf-8", errors="replace") if output.is_file() else ""
        line = next((line for line in reversed(done.stdout.splitlines()) if line.startswith(nonce)), None)
        try:
            result = json.loads(line[len(nonce):])
        except (TypeError, ValueError):
            tail = done.stderr.strip().splitlines()[-3:]
            return {"error": " | ".join(tail) or f"exit code {done.returncode}", "output": output}
    return result | {"output": output}


# ---- the checks of exercises 3.1-3.3: each runs peft's own tests on the learner's tree ------------------------------
def _probe(with_r: bool = False) -> dict:
    kwargs = {f"lora_dropout={v}": {"lora_dropout": v} for v in (*BAD_DROPOUTS, *GOOD_DROPOUTS)}
    return kwargs | ({"r=0": {"r": 0}} if with_r else {})


def _expect_tests_pass(result: dict, repo: Path, what: str) -> None:
    from llmcourse.checks import expect

    expect("error" not in result, f"the test run on {what} crashed: {result.get('error')}")
    expect(Path(result["peft_file"]).resolve().is_relative_to(repo.resolve() / "src"),
           f"the tests imported peft from {result['peft_file']}, not from {what}'s src/ folder.")
    run = result["runs"]["tests"]
    expect(run["code"] == 0, f"peft's own tests (and yours) fail on {what}: exit code {run['code']}, failed: "
           f"{', '.join(run['failed'][:3]) or 'collection error, see the output'}.")


def _expect_dropout_rule(result: dict) -> None:
    from llmcourse.checks import expect

    for v in BAD_DROPOUTS:
        got = result["probe"][f"lora_dropout={v}"]
        expect(got is not None and got.startswith("ValueError"),
               f"LoraConfig(lora_dropout={v}) gives {got or 'no error'}, expected a ValueError.")
    for v in GOOD_DROPOUTS:
        got = result["probe"][f"lora_dropout={v}"]
        expect(got is None, f"LoraConfig(lora_dropout={v}) raises {got}: values in [0, 1) must be accepted.")


def _expect_clean_branch(repo: Path, base: str) -> str:
    from llmcourse.checks import expect

    commits = git("rev-list", f"{base}..HEAD", cwd=repo).split()
    expect(len(commits) == 1, f"the branch holds {len(commits)} commits over {base}, expected exactly 1: one "
           "focused commit per pull request (fold later fixes into it with git commit --amend).")
    parent = git("rev-parse", "HEAD~1", cwd=repo).strip()
    expect(parent == git("rev-parse", base, cwd=repo).strip(),
           f"your commit does not sit on {base}'s newest commit: rebase it (git rebase {base}).")
    status = git("status", "--porcelain", cwd=repo).strip()
    expect(not status, f"the working tree is not clean: {status.splitlines()[:3]}.")
    return commits[0]


def _expect_ruff_clean(repo: Path) -> None:
    from llmcourse.checks import expect

    code, out = run_ruff(repo)
    expect(code == 0, f"peft's linter (ruff {RUFF_VERSION}, the project's config) finds problems: "
           + " | ".join(line for line in out.splitlines() if line.strip())[:300])


def check_feature(repo: str | Path, base: str = "upstream/main") -> None:
    """Exercise 3.1: `repo`'s working tree makes LoraConfig reject lora_dropout outside [0, 1), adds a test that
    fails on `base` and passes here, keeps peft's offline tests green and its linter clean."""
    from llmcourse.checks import expect

    repo = Path(repo)
    changed = git("diff", "--name-only", base, cwd=repo).split()
    changed += git("ls-files", "--others", "--exclude-standard", cwd=repo).split()
    if not changed:  # nothing written yet: the exercise cell is still the stub
        raise NotImplementedError(f"the working tree equals {base}")
    expect(CONFIG_FILE in changed, f"you changed {changed[:4]} but not {CONFIG_FILE}, where LoraConfig lives.")
    new = new_tests(repo, base)
    expect(new, "no new test function under tests/: add one (e.g. a class TestLoraDropoutValidation at the end of "
           "tests/test_config.py) that builds LoraConfig with a bad lora_dropout.")
    _expect_ruff_clean(repo)
    result = run_peft_tests(repo, new, probe=_probe())
    _expect_tests_pass(result, repo, "your fork")
    _expect_dropout_rule(result)
    with tempfile.TemporaryDirectory() as tmp:  # your tests on upstream's code: they must fail there
        clean = Path(tmp) / "upstream"
        clean.mkdir()
        archive = subprocess.run(["git", "archive", "--format=tar", base], cwd=repo, capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(clean, filter="data")
        for rel in sorted({n.split("::")[0] for n in new}):
            shutil.copy(repo / rel, clean / rel)
        before = run_peft_tests(clean, new, own=False)
    code = before.get("runs", {}).get("tests", {}).get("code")
    expect(code in (1, 2), f"your new tests do not fail on {base}'s code, without your change (pytest exit code "
           f"{code}): a test must prove the change, so it has to fail without it.")


def check_rebase(repo: str | Path, base: str = "upstream/main") -> None:
    """Exercise 3.2: the rebase is finished, the branch is one commit on upstream's newest commit, and the resolved
    file keeps both the maintainer's check of `r` and your check of lora_dropout, with every test green."""
    from llmcourse.checks import expect

    repo = Path(repo)
    text = (repo / CONFIG_FILE).read_text(encoding="utf-8")
    rebasing = any((repo / ".git" / d).exists() for d in ("rebase-merge", "rebase-apply"))
    if rebasing and "<<<<<<<" in text:  # the exercise cell is still the stub
        raise NotImplementedError("the conflict is still in the file")
    expect(not rebasing, "the rebase is not finished: git add the resolved file, then git rebase --continue "
           "(with GIT_EDITOR=true to keep the message).")
    for marker in ("<<<<<<<", "=======\n", ">>>>>>>"):
        expect(marker not in text, f"{CONFIG_FILE} still holds a conflict marker {marker.strip()!r}.")
    _expect_clean_branch(repo, base)
    _expect_ruff_clean(repo)
    result = run_peft_tests(repo, new_tests(repo, base), probe=_probe(with_r=True))
    _expect_tests_pass(result, repo, "your rebased branch")
    got = result["probe"]["r=0"]
    expect(got is not None and "`r` should be a positive integer" in got,
           f"LoraConfig(r=0) gives {got or 'no error'}: the maintainer's check of r was lost in the resolution.")
    _expect_dropout_rule(result)


def check_review(repo: str | Path, before: str, base: str = "upstream/main") -> None:
    """Exercise 3.3: the reviewer's requests are in the amended commit (it replaced `before`): the message names
    the bad value, and the tests fail under every mutant of HOLES, so they pin the whole rule down."""
    from llmcourse.checks import expect

    repo = Path(repo)
    if git("rev-parse", "HEAD", cwd=repo).strip() == before:  # the exercise cell is still the stub
        raise NotImplementedError("the commit is the one the reviewer saw")
    _expect_clean_branch(repo, base)
    new = new_tests(repo, base)
    expect(new, f"the branch adds no test function over {base}.")
    _expect_ruff_clean(repo)
    result = run_peft_tests(repo, new, holes=HOLES, probe=_probe(with_r=True))
    _expect_tests_pass(result, repo, "your branch")
    _expect_dropout_rule(result)
    for v in BAD_DROPOUTS:
        got = result["probe"][f"lora_dropout={v}"]
        expect(str(v) in got,
               f"the error for lora_dropout={v} does not name the value: {got!r}. The reviewer asked for it.")
    for hole in HOLES:
        expect(result["runs"][hole]["code"] != 0, f"your tests still pass when the check {hole}: a test must "
               "fail for that mistake (the reviewer asked for both sides of the range and for valid values).")


# ---- the exercises' starting points --------------------------------------------------------------------------------
def fresh_fork(folder: str | Path) -> tuple[Path, Path]:
    """(upstream, a fork of it on the exercises' branch, with the upstream remote and a local author) in the empty
    `folder`: the notebook's state before exercise 3.1."""
    folder = Path(folder)
    bare = create_peft_upstream(folder)
    repo = folder / "peft"
    git("clone", "-q", str(bare), str(repo), cwd=folder)
    git("remote", "add", "upstream", str(bare), cwd=repo)
    git("fetch", "-q", "upstream", cwd=repo)
    git("config", "user.name", "Course learner", cwd=repo)
    git("config", "user.email", "learner@llmcourse.invalid", cwd=repo)
    git("switch", "-q", "-c", "validate-lora-dropout", cwd=repo)
    return bare, repo


def rebase_onto_moved_upstream(bare: Path, repo: Path) -> None:
    """The notebook's steps after 3.1: commit the feature, upstream moves, the rebase stops at the conflict."""
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "FIX Validate lora_dropout in LoraConfig\n\nReject values outside [0, 1).", cwd=repo)
    move_upstream(bare)
    git("fetch", "-q", "upstream", cwd=repo)
    subprocess.run(["git", "rebase", "upstream/main"], cwd=repo, capture_output=True, text=True)
