"""Week 7.3's exercises as the grader judges them (issue 21): the learner's work on the peft fork as data, and the
facts the grader gathers from it in its own process.

Each answer spec rebuilds the exercise on a fresh fork in a folder of its own, with the learner's own functions (so
what a later exercise names is what their earlier one wrote): 3.1 writes the feature, 3.2 commits it, lets upstream
move and resolves the rebase's conflict, 3.3 answers the review. The answer is the fork as it is then, not facts
about it: its commits over upstream (a git bundle), the text of the files that differ from its HEAD, and the two
things only the kernel can say (a rebase left unfinished, a commit amended). The grader builds the same upstream
(its commits have fixed authors and dates, so the same hashes), fetches the bundle, lays the files over its HEAD and
gathers what the checks verify (`fork_facts`): every program that runs the learner's code (peft's tests under the
mutants, the LoraConfig probe, ruff) is confined to the fork's folder (`llmcourse.programs`; under the judge, a
sandbox like a kernel's). Only the new tests run, not peft's whole offline selection: the probe of valid values, 0.0
among them, shows what a broken default would break.
"""

from __future__ import annotations

import base64
import binascii
import re
import subprocess
import tempfile
from pathlib import Path

from . import programs  # the sandbox, where the grader gathers the facts
from .upstream import (
    CONFIG_FILE,
    HOLES,
    create_peft_upstream,
    fresh_fork,
    git,
    move_upstream,
    new_tests,
    rebase_onto_moved_upstream,
    run_peft_tests,
    run_ruff,
)

__all__ = ["FORK_ANSWER_BYTES", "feature_answer", "fork_facts", "rebase_answer", "review_answer"]

FORK_ANSWER_BYTES = 2**20  # bundle and files together; the learner's commit and two edited files weigh a few KiB
UNCHECKED = {"has no check at all": {"when": "True", "reject": False}}  # upstream's behaviour, as a mutant
KINDS = ("feature", "rebase", "review")  # 3.1, 3.2, 3.3
_PATH = re.compile(r"(src|tests)(/(?!\.\.?/)[A-Za-z0-9_.-]+)+")  # the answer carries these files' text
OTHERS = 100  # changed files elsewhere: named only (they make the tree unclean), at most this many


def feature_answer(write_feature, folder: str | Path, dropouts: list[float]) -> dict:
    """Exercise 3.1's answer: `write_feature` on a fresh fork in the empty `folder`, the fork as data."""
    _, repo = fresh_fork(folder)
    write_feature(repo)
    return _fork_state(repo, "feature", dropouts)


def rebase_answer(write_feature, resolve_conflict, folder: str | Path, dropouts: list[float]) -> dict:
    """Exercise 3.2's answer: the learner's feature committed on a fresh fork in the empty `folder`, upstream moved,
    the rebase stopped at the conflict, `resolve_conflict` run; the fork as data."""
    bare, repo = fresh_fork(folder)
    write_feature(repo)
    rebase_onto_moved_upstream(bare, repo)
    resolve_conflict(repo)
    return _fork_state(repo, "rebase", dropouts)


def review_answer(write_feature, resolve_conflict, answer_review, folder: str | Path, dropouts: list[float]) -> dict:
    """Exercise 3.3's answer: as 3.2's, then `answer_review`; the fork as data, and whether the reviewed commit was
    replaced."""
    bare, repo = fresh_fork(folder)
    write_feature(repo)
    rebase_onto_moved_upstream(bare, repo)
    resolve_conflict(repo)
    reviewed = git("rev-parse", "HEAD", cwd=repo).strip()
    answer_review(repo)
    return _fork_state(repo, "review", dropouts, amended=git("rev-parse", "HEAD", cwd=repo).strip() != reviewed)


def _fork_state(repo: Path, kind: str, dropouts: list[float], amended: bool = False) -> dict:
    """The fork as data: HEAD, its commits over upstream/main as a git bundle (base64; None when HEAD is upstream's),
    the text of every file that differs from HEAD (None: deleted), and the kernel's word on a rebase in progress and
    on the amended commit."""
    base = git("rev-parse", "upstream/main", cwd=repo).strip()
    head = git("rev-parse", "HEAD", cwd=repo).strip()
    bundle = None
    if head != base:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fork.bundle"
            git("bundle", "create", "-q", str(path), "HEAD", f"^{base}", cwd=repo)
            bundle = base64.b64encode(path.read_bytes()).decode("ascii")
    changed = set(git("diff", "--name-only", "HEAD", cwd=repo).split())
    changed |= set(git("ls-files", "--others", "--exclude-standard", cwd=repo).split())
    files = {rel: (repo / rel).read_text(encoding="utf-8", errors="replace") if (repo / rel).is_file() else None
             for rel in sorted(changed) if _PATH.fullmatch(rel)}
    return {"kind": kind, "dropouts": [float(v) for v in dropouts], "head": head, "bundle": bundle, "files": files,
            "others": sorted(rel for rel in changed if rel not in files)[:OTHERS],  # changes elsewhere, named only
            "rebasing": any((repo / ".git" / d).exists() for d in ("rebase-merge", "rebase-apply")),
            "amended": bool(amended)}


def _read(answer: object) -> dict:
    """A `_fork_state` answer, checked; ValueError, saying what is wrong, for anything else."""
    if not isinstance(answer, dict) or answer.get("kind") not in KINDS or not isinstance(answer.get("files"), dict) \
            or not isinstance(answer.get("others"), list) or len(answer["others"]) > OTHERS \
            or not all(isinstance(o, str) and len(o) <= 300 for o in answer["others"]) \
            or not isinstance(answer.get("head"), str) or not re.fullmatch(r"[0-9a-f]{40}", answer["head"]) \
            or not isinstance(answer.get("rebasing"), bool) or not isinstance(answer.get("amended"), bool) \
            or not isinstance(answer.get("dropouts"), list) or len(answer["dropouts"]) > 32 \
            or not all(isinstance(v, float) for v in answer["dropouts"]) \
            or not (answer.get("bundle") is None or isinstance(answer.get("bundle"), str)):
        raise ValueError("the answer is not a peft fork (its commits, files and probe values): it was not made by "
                         "llmcourse.peft_answers")
    size = len(answer["bundle"] or "")
    for rel, text in answer["files"].items():
        if not isinstance(rel, str) or not _PATH.fullmatch(rel) or any(part in (".", "..") for part in rel.split("/")) \
                or not (text is None or isinstance(text, str)):
            raise ValueError(f"the answer holds {str(rel)[:80]!r}, which is not a file under src/ or tests/")
        size += len((text or "").encode("utf-8", errors="replace"))
    if size > FORK_ANSWER_BYTES:
        raise ValueError(f"the answer holds {size:,} bytes, more than {FORK_ANSWER_BYTES:,}")
    return answer


def fork_facts(answer: object) -> dict:
    """What the checks of 3.1-3.3 verify, gathered by the grader from a fork answer (`feature_answer`,
    `rebase_answer`, `review_answer`), as plain data: the kind and the probe values, then for 3.1 whether the config
    file changed, for 3.2 and 3.3 the branch's shape (commits over upstream, on its tip, conflict markers, a clean
    tree; the rebase in progress and, for 3.3, the amended commit are the kernel's word), and for all the tree's
    answer (the new tests pass, which mutants they catch, LoraConfig on each probe value and on r=0, ruff). Raises
    ValueError for an answer that is not a fork, or whose commits do not sit on upstream's history."""
    answer = _read(answer)
    kind, dropouts = answer["kind"], answer["dropouts"]
    with tempfile.TemporaryDirectory(prefix="llmcourse-peft-") as tmp:
        folder = Path(tmp)
        bare = create_peft_upstream(folder)
        if kind != "feature":  # 3.2 and 3.3 rebase onto upstream's next commits
            move_upstream(bare)
        repo = folder / "peft"
        git("clone", "-q", str(bare), str(repo), cwd=folder)
        git("remote", "add", "upstream", str(bare), cwd=repo)
        git("fetch", "-q", "upstream", cwd=repo)
        _checkout(repo, answer["head"], answer["bundle"], folder)
        for rel, text in answer["files"].items():
            path = repo / rel
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        with programs.confined_to(folder):
            facts = {"kind": kind, "dropouts": dropouts}
            if kind == "feature":
                changed = git("diff", "--name-only", "upstream/main", cwd=repo).split()
                return facts | {"config_changed": CONFIG_FILE in changed} | _tree_answer(repo, dropouts, UNCHECKED)
            branch = _branch_answer(repo, answer["rebasing"], answer["others"])
            if kind == "rebase":
                return facts | branch | _tree_answer(repo, dropouts, {})
            return facts | {"amended": answer["amended"]} | branch | _tree_answer(repo, dropouts, HOLES, named=True)


def _checkout(repo: Path, head: str, bundle: str | None, folder: Path) -> None:
    """Check out `head` in `repo`: upstream's own commit, or the tip of the answer's bundle fetched on it (git only
    reads the bundle's objects: no hooks, no configuration come with it)."""
    if bundle is not None:
        try:
            data = base64.b64decode(bundle, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the answer's git bundle is not base64") from None
        path = folder / "fork.bundle"
        path.write_bytes(data)
        done = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "fetch", "-q", "--no-tags", str(path),
                               "HEAD"], cwd=repo, capture_output=True, text=True, errors="replace", timeout=60)
        if done.returncode != 0:
            raise ValueError(f"git refused the answer's bundle (its commits must sit on upstream's history): "
                             f"{done.stderr.strip()[:200]}")
    done = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "checkout", "-q", "--detach", head], cwd=repo,
                          capture_output=True, text=True, errors="replace", timeout=60)
    if done.returncode != 0:
        raise ValueError(f"the answer's HEAD {head[:12]} is neither upstream's nor in its bundle")
    shared = subprocess.run(["git", "merge-base", "HEAD", "upstream/main"], cwd=repo, capture_output=True, text=True)
    if shared.returncode != 0:
        raise ValueError(f"the answer's HEAD {head[:12]} shares no history with upstream: it is not a fork of it")


def _tree_answer(repo: Path, dropouts: list[float], holes: dict, named: bool = False,
                 base: str = "upstream/main") -> dict:
    """What the checks verify of `repo`'s tree, as data: the new tests (do they pass, which mutants they catch), each
    probe's value and outcome ("ok" or the error's type, and with `named` whether the message names the value: only
    3.3 asks for it), LoraConfig(r=0), ruff."""
    new = new_tests(repo, base)
    probe = {f"lora_dropout={v!r}": {"lora_dropout": v} for v in dropouts} | {"r=0": {"r": 0}}
    result = run_peft_tests(repo, new, own=False, holes=holes if new else {}, probe=probe)
    if "error" in result:  # the tree does not import (a conflict marker, a syntax error)
        return {"new_tests": bool(new), "runs": "crashed"}

    def outcome(v: float) -> list:
        got = result["probe"][f"lora_dropout={v!r}"]
        return [v, "ok", False] if got is None else [v, str(got).split(":")[0], named and repr(v) in str(got)]

    try:  # the harness's report, which the learner's tests ran beside: read defensively
        facts = {"new_tests": bool(new),
                 "from_fork": Path(str(result["peft_file"])).resolve().is_relative_to(repo.resolve() / "src"),
                 "tests_pass": bool(new) and result["runs"]["tests"]["code"] == 0,
                 "caught": {name: bool(new) and result["runs"][name]["code"] != 0 for name in holes},
                 "probe": [outcome(v) for v in dropouts],
                 "r=0": "`r` should be a positive integer" in str(result["probe"]["r=0"] or "")}
    except (KeyError, TypeError, AttributeError, ValueError):
        return {"new_tests": bool(new), "runs": "unreadable"}
    return facts | {"ruff_clean": run_ruff(repo)[0] == 0}


def _branch_answer(repo: Path, rebasing: bool, others: list[str], base: str = "upstream/main") -> dict:
    """The branch's shape, as data: a rebase left unfinished (the kernel's word), conflict markers, commits over
    `base`, on its tip, a clean tree (no file differs from HEAD, here or among the `others` the answer names)."""
    text = (repo / CONFIG_FILE).read_text(encoding="utf-8", errors="replace") if (repo / CONFIG_FILE).is_file() else ""
    head = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=repo, capture_output=True, text=True).stdout.strip()
    return {"rebasing": rebasing, "markers": any(m in text for m in ("<<<<<<<", "=======\n", ">>>>>>>")),
            "commits": len(git("rev-list", f"{base}..HEAD", cwd=repo).split()),
            "on_base": head == git("rev-parse", base, cwd=repo).strip(),
            "clean": not others and not git("status", "--porcelain", cwd=repo).strip()}
