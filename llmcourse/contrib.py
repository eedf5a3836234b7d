"""A sandbox "upstream" project for practising the open-source contribution workflow with real git.

Introduced in week 7 (`week07/02_contribution_workflow.ipynb`), reused by week 8's capstone for its model card.
The files of the small `wordstats` package (code, tests, contributing guide, pull-request template) and the model-card
template live as data in `llmcourse/templates/`; `create_upstream` turns them into a bare git repository with a short
history, as a maintainer's server would hold it. Everything the learner does to it happens in the notebook.
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
from importlib import resources
from pathlib import Path

from llmcourse import programs  # the sandbox, where the grader gathers the facts
from llmcourse.errors import ConfigError, HardwareError

__all__ = ["check_feature", "check_history", "create_upstream", "feature_files", "feature_from_files", "fill_template",
           "history_facts", "history_from_bundle", "history_record", "start_upstream", "template_text"]

_MAINTAINER = ["-c", "user.name=Wordstats Maintainers", "-c", "user.email=maintainers@wordstats.example"]
# (commit date, message, files) of the upstream history; paths are relative to templates/wordstats without ".tmpl"
_HISTORY = [
    ("2025-03-02T10:00:00+00:00", ("core: add words, word_count, top_words and type_token_ratio\n\n"
                                   "The first release: word-level statistics with no dependencies."),
     ["wordstats/__init__.py", "wordstats/core.py", "tests/test_core.py", "pyproject.toml", "README.md", ".gitignore"]),
    ("2025-03-09T10:00:00+00:00", ("docs: add contributing guide and pull request template\n\n"
                                   "Contributors asked how to send changes; this writes down the rules "
                                   "the maintainers apply."),
     ["CONTRIBUTING.md", "PULL_REQUEST_TEMPLATE.md"]),
]


def _templates() -> Path:
    return Path(str(resources.files("llmcourse") / "templates"))


def template_text(name: str) -> str:
    """The text of template `name` from `llmcourse/templates` (e.g. "model_card.md", "wordstats/README.md")."""
    path = _templates() / (name + ".tmpl")
    if not path.is_file():
        names = sorted(str(p.relative_to(_templates()))[:-5] for p in _templates().rglob("*.tmpl"))
        raise ConfigError(f"no template named {name!r}. Available: {', '.join(names)}.")
    return path.read_text(encoding="utf-8")


def fill_template(name: str, **fields: str) -> str:
    """Template `name` with its `$field` placeholders replaced; a missing field raises ConfigError naming it."""
    try:
        return string.Template(template_text(name)).substitute(**fields)
    except KeyError as exc:
        field = exc.args[0]
        raise ConfigError(f"template {name!r} needs the field {field!r}: pass it as {field}='...'.") from None


def _git(*args: str, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(["git", *args], check=False, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise HardwareError(f"`git {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def start_upstream(folder: str | Path) -> tuple[Path, Path]:
    """(`folder/upstream.git`, a working repository with an empty `main` to build its history in); week 7.2 and 7.3.

    Raises when git is missing or `folder` already holds an upstream. Clone the working repository to the bare path
    with `git clone --bare` once its history is written, then delete it.
    """
    if shutil.which("git") is None:
        raise HardwareError("git is not installed: install it (apt-get install git, or git-scm.com) and rerun.")
    folder = Path(folder)
    bare = folder / "upstream.git"
    if bare.exists():
        raise ConfigError(f"{bare.name} already exists in {folder.name}: use a new, empty folder.")
    work = folder / "_upstream_work"
    work.mkdir(parents=True)
    _git("init", "-q", "-b", "main", cwd=work)
    return bare, work


def create_upstream(folder: str | Path) -> Path:
    """Create `folder/upstream.git`, a bare repository of the `wordstats` package with a two-commit history.

    Commit dates and author are fixed, so the upstream commit hashes are the same on every machine.
    """
    bare, work = start_upstream(folder)
    source = _templates() / "wordstats"
    for date, message, files in _HISTORY:
        for rel in files:
            src = source / (rel.removeprefix(".") + ".tmpl")
            dst = work / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
        _git("add", *files, cwd=work)
        env = dict(os.environ, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        _git(*_MAINTAINER, "commit", "-q", "-m", message, cwd=work, env=env)
    _git("clone", "-q", "--bare", str(work), str(bare), cwd=folder)
    shutil.rmtree(work)
    return bare


# ---- checks of the week 7 exercises (the learner's feature, test and commit) ----------------------------------------

# (text, sentences): a sentence holds at least one word and ends at a run of . ! ? or at the end of the text
SENTENCE_CASES = [
    ("", 0), ("...", 0), ("Hello", 1), ("Hello.", 1), ("One. Two", 2), ("Wait... what?! Fine.", 3),
    ("Hi! Bye? Ok.", 3), ("  It rains.  It pours!  ", 2), ("?!", 0), ("Yes!!! No... Maybe", 3),
]
SUBJECT_PATTERN = r"^[a-z][a-z0-9_-]*: [a-z].*[^.]$"


def _python(args: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    import sys

    # PYTEST_DISABLE_PLUGIN_AUTOLOAD: the course's environment holds pytest plugins (nbval, playwright, ...) that the
    # project does not use; loading them takes 4 s of every 4.5 s pytest run here
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1", PY_COLORS="0", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    env.pop("PYTHONPATH", None)
    try:
        return subprocess.run([*programs.prefix(cwd), sys.executable, *args], check=False, cwd=cwd,
                              capture_output=True, text=True, errors="replace", env=env, timeout=timeout)
    except subprocess.TimeoutExpired:  # a learner's loop: the run failed, with pytest's code for an interrupted run
        return subprocess.CompletedProcess(args, 2, "", f"stopped after {timeout} s")


def _sentence_tests(repo: Path) -> list[Path]:
    """The test files under `repo/tests` that mention sentence_count."""
    return [p for p in (repo / "tests").glob("test_*.py") if "sentence_count" in p.read_text(encoding="utf-8")]


def _has_test(tests: list[Path]) -> bool:
    """Whether one of `tests` defines a test function."""
    return any("def test_" in p.read_text(encoding="utf-8") for p in tests)


def _probe_feature(repo: Path, texts: list[str]) -> tuple[list[int] | None, bool, str]:
    """(sentence_count of each text or None, whether wordstats exports it in __all__, the error) in `repo`'s own
    wordstats, in a fresh interpreter."""
    import json

    probe = ("import json, wordstats\n"
             f"cases = {list(texts)!r}\n"
             "print(json.dumps([[wordstats.sentence_count(t) for t in cases], 'sentence_count' in wordstats.__all__]))")
    done = _python(["-c", probe], cwd=repo)
    if done.returncode != 0:
        return None, False, (done.stderr.strip().splitlines() or ["?"])[-1]
    try:
        counts, exported = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, TypeError, IndexError):  # the learner's code printed over the probe's line
        return None, False, "the probe's output could not be read: " + done.stdout.strip()[-100:]
    return counts, exported is True, ""


def _suite_passes(repo: Path, *tests: str) -> tuple[int, str]:
    """(pytest's exit code, its last line) for `repo`'s tests (or just `tests`)."""
    # --noconftest: a conftest.py of the learner's could turn failures into passes
    done = _python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", *tests], cwd=repo)
    return done.returncode, (done.stdout.strip().splitlines() or [""])[-1]


def _fails_on_upstream(tests: list[Path], upstream: Path) -> int:
    """pytest's exit code for `tests` copied into a fresh clone of `upstream` (without the feature)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=Path(upstream).parent) as tmp:  # beside upstream: inside a grader's sandbox
        clean = Path(tmp) / "upstream"
        _git("clone", "-q", str(Path(upstream).resolve()), str(clean), cwd=Path(tmp))
        for p in tests:
            shutil.copy(p, clean / "tests" / p.name)
        return _suite_passes(clean, *[f"tests/{p.name}" for p in tests])[0]


def _ruff(repo: Path) -> tuple[int, str]:
    done = _python(["-m", "ruff", "check", "-q", "."], cwd=repo)
    return done.returncode, " | ".join(done.stdout.strip().splitlines()[:3])


def check_feature(repo: str | Path, upstream: str | Path) -> None:
    """Raise CheckFailed unless `repo` adds a working `wordstats.sentence_count`, a test of it that passes there and
    fails on `upstream`'s code, and still passes ruff. Week 7 exercise 2.1."""
    from llmcourse.checks import expect

    repo = Path(repo)
    touched = [p for p in [*(repo / "wordstats").glob("*.py"), *(repo / "tests").glob("*.py")]
               if "sentence_count" in p.read_text(encoding="utf-8")]
    if not touched:  # nothing written yet: the exercise cell is still the stub
        raise NotImplementedError("sentence_count appears nowhere in the package or its tests")
    got, _, error = _probe_feature(repo, [t for t, _ in SENTENCE_CASES])
    expect(got is not None, f"`import wordstats; wordstats.sentence_count(...)` failed in your fork: {error} "
           "(is it defined in core.py and imported in __init__.py?)")
    for (text, want), have in zip(SENTENCE_CASES, got):
        expect(have == want, f"sentence_count({text!r}) is {have}, expected {want}.")
    tests = _sentence_tests(repo)
    expect(_has_test(tests),
           "no test under tests/ calls sentence_count: add a file like tests/test_sentences.py with a test_ function.")
    code, last = _suite_passes(repo)
    expect(code == 0, "the test suite fails in your fork: " + last)
    code = _fails_on_upstream(tests, Path(upstream))
    expect(code in (1, 2), "your test does not fail on upstream's code (without the feature): "
           f"pytest exit code {code}. A test must prove the feature, so it has to fail without it.")
    code, out = _ruff(repo)
    expect(code == 0, "ruff finds problems: " + out)


def _fresh_fork(folder: Path, branch: str | None = None) -> tuple[Path, Path]:
    """(upstream, a clone of it on `branch`) in the empty `folder`, with a local author."""
    upstream = create_upstream(folder)
    repo = folder / "fork"
    _git("clone", "-q", str(upstream), str(repo), cwd=folder)
    _git("config", "user.name", "Judge", cwd=repo)
    _git("config", "user.email", "judge@llmcourse.invalid", cwd=repo)
    if branch:
        _git("switch", "-q", "-c", branch, cwd=repo)
    return upstream, repo


FEATURE_FOLDERS = ("wordstats", "tests")  # exercise 2.1's answer carries the .py files of these folders of the fork
FEATURE_FILES_BYTES = 256 * 2**10  # more is refused: the fork's code and tests weigh a few KiB
FEATURE_TEXTS = 64  # at most this many probe texts, of at most FEATURE_TEXT_CHARS characters each
FEATURE_TEXT_CHARS = 1000


def feature_files(write_feature, folder: str | Path, texts: list[str]) -> dict:
    """Exercise 2.1's answer for the grader's judge: `write_feature` applied to a fresh fork in the empty `folder`.
    The answer is what it wrote, not facts about it: the text of every .py file under the fork's wordstats/ and
    tests/, with `texts` (the batch's seed draws them). The grader rebuilds the fork from those files and gathers
    what `check_feature` verifies in its own process and sandbox (`feature_from_files`), so code in the kernel
    cannot forge the facts."""
    _, repo = _fresh_fork(Path(folder), "add-sentence-count")
    write_feature(repo)
    files = {p.relative_to(repo).as_posix(): p.read_text(encoding="utf-8", errors="replace")
             for top in FEATURE_FOLDERS for p in sorted((repo / top).rglob("*.py"))}
    return {"files": files, "texts": [str(t) for t in texts]}


def _feature_answer(answer: object) -> tuple[dict[str, str], list[str]]:
    """(files, texts) of a `feature_files` answer; ValueError, saying what is wrong, for anything else."""
    import re

    if not isinstance(answer, dict) or not isinstance(answer.get("files"), dict) \
            or not isinstance(answer.get("texts"), list):
        raise ValueError("the answer is not a fork's files (the .py files of wordstats/ and tests/, and the probe "
                         "texts): it was not made by llmcourse.contrib.feature_files")
    files, texts = answer["files"], answer["texts"]
    pattern = rf"({'|'.join(FEATURE_FOLDERS)})(/[A-Za-z0-9_]+)+\.py"
    for rel, text in files.items():
        if not isinstance(rel, str) or not re.fullmatch(pattern, rel) or not isinstance(text, str):
            raise ValueError(f"the answer holds {str(rel)[:80]!r}, which is not a .py file under "
                             f"{' or '.join(f + '/' for f in FEATURE_FOLDERS)}")
    size = sum(len(text.encode("utf-8", errors="replace")) for text in files.values())
    if size > FEATURE_FILES_BYTES:
        raise ValueError(f"the answer's files hold {size:,} bytes, more than {FEATURE_FILES_BYTES:,}")
    if len(texts) > FEATURE_TEXTS or not all(isinstance(t, str) and len(t) <= FEATURE_TEXT_CHARS for t in texts):
        raise ValueError(f"the answer's probe texts are not at most {FEATURE_TEXTS} strings of at most "
                         f"{FEATURE_TEXT_CHARS} characters")
    return files, texts


def feature_from_files(answer: object) -> dict:
    """What `check_feature` verifies, gathered by the grader from the files a `feature_files` answer carries: on a
    fresh fork of upstream whose wordstats/ and tests/ code are those files, sentence_count of each probe text, the
    export, whether the fork's tests pass, whether its test of sentence_count fails on upstream's code, whether ruff
    is clean; and the texts, which the judge compares with the reference's. Raises ValueError for an answer that is
    not such a record.

    Runs in the grader's process (`teaching.grading.judge.derived`). The learner's code runs only in the programs it
    starts (Python, pytest, ruff), each confined to this fork's folder (`llmcourse.programs`): under the judge, a
    sandbox like a kernel's where the machine has bubblewrap (no network, a private read-only view of the system,
    only that folder writable); the facts are their exit codes and printed counts, read here."""
    import tempfile

    files, texts = _feature_answer(answer)
    with tempfile.TemporaryDirectory(prefix="llmcourse-feature-") as tmp:
        upstream, repo = _fresh_fork(Path(tmp), "add-sentence-count")
        for top in FEATURE_FOLDERS:
            for p in (repo / top).rglob("*.py"):
                p.unlink()
        for rel, text in files.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text, encoding="utf-8", errors="replace")
        with programs.confined_to(Path(tmp)):
            return {"texts": texts} | _feature_facts(repo, upstream, texts)


def _feature_facts(repo: Path, upstream: Path, texts: list[str]) -> dict:
    """What `check_feature` verifies of `repo`, as plain data, with sentence_count of each of `texts`."""
    counts, exported, _ = _probe_feature(repo, texts)
    tests = _sentence_tests(repo)
    return {"counts": counts, "exported": exported, "has_test": _has_test(tests),
            "suite_passes": _suite_passes(repo)[0] == 0,
            "test_fails_on_upstream": bool(tests) and _fails_on_upstream(tests, upstream) in (1, 2),
            "ruff_clean": _ruff(repo)[0] == 0}


def history_facts(repo: str | Path, base: str = "main") -> dict:
    """What `check_history` verifies of `repo`'s branch over `base`, as plain data: the branch, its commits, a clean
    tree, the message's shape and what the last commit touches."""
    repo = Path(repo)
    commits = _git("rev-list", f"{base}..HEAD", cwd=repo).split()
    return ({"branch": _git("rev-parse", "--abbrev-ref", "HEAD", cwd=repo).strip(), "commits": len(commits),
             "status": _git("status", "--porcelain", cwd=repo).strip().splitlines()}
            | _commit_facts(_git("log", "-1", "--format=%B", cwd=repo),
                            _git("show", "--name-only", "--format=", "HEAD", cwd=repo).split()))


def _commit_facts(message: str, files: list[str]) -> dict:
    """The commit's message shape and what it touches, as `check_history` judges them (`history_facts` reads them
    from a working repository, `history_from_bundle` from a bundle)."""
    import re

    lines = message.strip("\n").splitlines()
    subject = lines[0] if lines else ""
    return {"subject": subject, "subject_length_ok": len(subject) <= 72,
            "subject_format": re.match(SUBJECT_PATTERN, subject) is not None,
            "body": len(lines) >= 3 and lines[1] == "" and any(line.strip() for line in lines[2:]), "files": files,
            "code_and_test": any(f.startswith("wordstats/") for f in files) and any(f.startswith("tests/")
                                                                                  for f in files)}


def check_history(repo: str | Path, base: str = "main") -> None:
    """Raise CheckFailed unless `repo` is on a feature branch holding exactly one clean commit over `base`, with a
    message in the `area: imperative summary` format, touching code and tests. Week 7 exercise 2.2."""
    from llmcourse.checks import expect

    facts = history_facts(repo, base)
    expect(facts["branch"] != base,
           f"you are on {base!r}: work on a feature branch (git switch -c add-sentence-count).")
    if not facts["commits"]:  # nothing committed yet: the exercise cell is still the stub
        raise NotImplementedError(f"no commit on the branch over {base}")
    expect(facts["commits"] == 1, f"the branch holds {facts['commits']} commits over {base}, expected exactly 1 "
           "(CONTRIBUTING.md asks for one commit per feature; squash with git reset --soft main, then commit).")
    expect(not facts["status"],
           f"the working tree is not clean (uncommitted or untracked files): {facts['status'][:3]}.")
    subject = facts["subject"]
    expect(facts["subject_length_ok"], f"the subject line has {len(subject)} characters, at most 72 allowed.")
    expect(facts["subject_format"],
           f"the subject {subject!r} is not `area: imperative summary` (lower-case area, colon, space, lower-case "
           "verb, no trailing period), e.g. 'core: add sentence_count'.")
    expect(facts["body"], "the message needs a blank line after the subject, then a body saying what changed and why.")
    expect(facts["code_and_test"],
           f"the commit changes {facts['files']}: it must hold both the code (wordstats/) and its test (tests/).")


def history_record(write_feature, commit_feature, folder: str | Path, stamp: str) -> dict:
    """Exercise 2.2's answer for the grader's judge: in a fresh fork in the empty `folder`, on a feature branch, the
    learner's own `write_feature` (exercise 2.1, so the files are the ones their commit names) writes the feature,
    `stamp` (the batch's seed draws it) is added to the code and `commit_feature` commits. The answer is the
    repository itself, not facts about it: its history as a git bundle (base64), the branch checked out and whether
    the tree is clean. The grader gathers what `check_history` verifies from the bundle (`history_from_bundle`), so
    code in the kernel cannot forge those facts; only the tree's cleanliness is the kernel's word."""
    import base64

    _, repo = _fresh_fork(Path(folder), "add-sentence-count")
    write_feature(repo)
    core = repo / "wordstats" / "core.py"
    core.write_text(core.read_text(encoding="utf-8") + f"# {stamp}\n", encoding="utf-8")
    commit_feature(repo)
    bundle = Path(folder) / "history.bundle"
    _git("bundle", "create", "-q", str(bundle), "--all", cwd=repo)
    return {"bundle": base64.b64encode(bundle.read_bytes()).decode("ascii"),
            "branch": _git("rev-parse", "--abbrev-ref", "HEAD", cwd=repo).strip(),
            "clean": not _git("status", "--porcelain", cwd=repo).strip()}


HISTORY_BUNDLE_BYTES = 2**20  # a bigger bundle is refused: the exercise's repository weighs a few KiB


def history_from_bundle(answer: object, base: str = "main") -> dict:
    """What `check_history` verifies, gathered by the grader from the repository a `history_record` answer carries
    (a git bundle, never code): commits over `base`, on the branch, the message's shape, what the commit touches and
    the stamp it holds; `clean` is the kernel's word. Raises ValueError for an answer that is not such a record.

    Runs in the grader's process on a student's bytes: git only reads the bundle into a fresh bare repository (no
    checkout, no hooks, no configuration but git's defaults)."""
    import base64
    import binascii
    import tempfile

    if not isinstance(answer, dict) or not isinstance(answer.get("bundle"), str) \
            or not isinstance(answer.get("branch"), str) or not isinstance(answer.get("clean"), bool):
        raise ValueError("the answer is not a repository (a git bundle, the branch and whether the tree is clean): "
                         "it was not made by llmcourse.contrib.history_record")
    try:
        data = base64.b64decode(answer["bundle"], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the answer's git bundle is not base64") from None
    if len(data) > HISTORY_BUNDLE_BYTES:
        raise ValueError(f"the answer's git bundle holds {len(data):,} bytes, more than {HISTORY_BUNDLE_BYTES:,}")
    with tempfile.TemporaryDirectory(prefix="llmcourse-history-") as tmp:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp, "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}

        def git(*args: str) -> str:
            try:
                done = subprocess.run(["git", "-c", "core.hooksPath=" + os.devnull, *args], cwd=tmp, env=env,
                                      capture_output=True, text=True, errors="replace", timeout=60)
            except subprocess.TimeoutExpired:
                raise ValueError(f"git {args[0]} on the answer's bundle took over 60 s") from None
            if done.returncode != 0:
                raise ValueError(f"git {args[0]} refused the answer's bundle: {done.stderr.strip()[:200]}")
            return done.stdout

        Path(tmp, "history.bundle").write_bytes(data)
        heads = {}
        for line in git("bundle", "list-heads", "history.bundle").splitlines():
            oid, _, ref = line.partition(" ")
            heads[ref] = oid
        if "HEAD" not in heads or f"refs/heads/{base}" not in heads:
            raise ValueError(f"the answer's git bundle lacks HEAD or {base}: it holds {sorted(heads)[:5]}")
        git("init", "-q", "--bare", "repo.git")
        git("--git-dir=repo.git", "fetch", "-q", "--no-tags", "history.bundle", "+refs/heads/*:refs/heads/*")
        head = heads["HEAD"]

        def at(*args: str) -> str:
            return git("--git-dir=repo.git", *args)

        facts = _commit_facts(at("log", "-1", "--format=%B", head),
                              at("show", "--name-only", "--format=", head).split())
        try:
            stamp = (at("show", f"{head}:wordstats/core.py").rstrip("\n").splitlines() or [""])[-1]
        except ValueError:  # no such file in the commit
            stamp = ""
        branch = answer["branch"]
        return {k: facts[k] for k in ("subject_length_ok", "subject_format", "body", "code_and_test")} | {
            "commits": len(at("rev-list", f"{heads[f'refs/heads/{base}']}..{head}").split()),
            "on_branch": branch != base and heads.get(f"refs/heads/{branch}") == head,
            "clean": answer["clean"], "committed_stamp": stamp}
