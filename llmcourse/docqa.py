"""Questions about the installed libraries' own source, with answers a program can check (week 4.3).

Introduced in week 4 (`week04/03_retrieval_and_tools.ipynb`). The corpus is real text that ships offline: the source
files of a few modules of transformers, peft and trl, exactly as installed. The questions are generated from that
source, never written by hand: for every keyword argument with a literal default (a number, a string, True/False/None)
in a function signature or a config dataclass field, "In <library>'s `<owner>`, what is the default value of
`<name>`?". The answer is the default as written in the source, and the gold passage is the source lines that define
it, so a test can check that every answer is found in its own source text.

Files are read and parsed with `ast`, not imported, so building the set is fast and does not need the libraries to
import cleanly. The set depends on the installed versions; `build()` records them and `load()` caches it per version.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["MODULES", "Passage", "Question", "build", "check_answer", "corpus", "load", "normalize"]

# The modules whose source is the corpus: configuration and entry points a learner of weeks 3-4 has used.
MODULES = (
    "transformers.training_args",
    "transformers.generation.configuration_utils",
    "transformers.utils.quantization_config",
    "peft.tuners.lora.config",
    "peft.mapping_func",
    "trl.trainer.dpo_config",
    "trl.trainer.sft_config",
)


@dataclass(frozen=True)
class Passage:
    """A span of one source file: `text` is lines `start` to `end` (1-based, inclusive) of module `module`."""

    module: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Question:
    """One generated question: the answer is `answer` (source text of the default), found in `gold.text`."""

    id: str
    question: str
    answer: str
    library: str
    owner: str  # the function or class whose argument it is
    name: str  # the argument
    gold: Passage  # the defining lines with a few lines of context around them
    first: int  # the defining lines themselves: a retrieved chunk "finds" the answer when it covers first..last
    last: int


@functools.cache
def _source(module: str) -> tuple[Path, str]:
    """The path and text of `module`'s source file, found without importing it (or its package)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name is located without being imported
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {top} is not installed: docqa builds its questions from its source. Fix: "
                          f"`pip install {top}` (make setup installs it).")
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path, path.read_text(encoding="utf-8")
    raise ConfigError(f"{module} is not in the installed {top} (looked for {base}.py): the package changed its "
                      "layout. Fix: remove it from docqa.MODULES, or install the version in constraints.txt.")


def _literal(node: ast.expr | None, text: str) -> str | None:
    """The source text of a simple literal default (int, float, str, bool, None, a negative number), else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return _literal(node.operand, text) and ast.get_source_segment(text, node)
    if not isinstance(node, ast.Constant):
        return None
    value = node.value
    simple = isinstance(value, (bool, int, float)) or value is None or (
        isinstance(value, str) and 0 < len(value) <= 40 and "\n" not in value)
    return ast.get_source_segment(text, node) if simple else None


def _field_default(node: ast.expr | None) -> ast.expr | None:
    """`x: int = field(default=3, ...)` -> the node of 3; `x: int = 3` -> the node of 3."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "field":
        for kw in node.keywords:
            if kw.arg == "default":
                return kw.value
        return None
    return node


@functools.cache
def _entries(module: str) -> list[tuple[str, str, str, int, int]]:
    """(owner, argument, default, first line, last line) for every literal default in the module's source; the owner
    of a method is `Class.method`."""
    _, text = _source(module)
    found = []

    def visit(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
                pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
                for arg, default in pairs:
                    literal = _literal(default, text)
                    if literal is not None and arg.arg not in ("self", "cls"):
                        found.append((prefix + node.name, arg.arg, literal, arg.lineno,
                                      default.end_lineno or arg.lineno))
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
                        literal = _literal(_field_default(stmt.value), text)
                        if literal is not None and not stmt.target.id.startswith("_"):
                            found.append((prefix + node.name, stmt.target.id, literal, stmt.lineno,
                                          stmt.end_lineno or stmt.lineno))
                visit(node.body, prefix + node.name + ".")

    visit(ast.parse(text).body, "")
    return found


def corpus(modules: tuple[str, ...] = MODULES) -> dict[str, str]:
    """{module: its source text}: the documents retrieval searches."""
    return {m: _source(m)[1] for m in modules}


def normalize(text: str) -> str:
    """An answer's comparable form: quotes, backticks, spaces and a trailing period removed, lower case."""
    return text.strip().strip(".").strip().strip("`'\"").strip().lower()


def check_answer(response: str, answer: str) -> bool:
    """Whether `response` gives `answer`: the same number (5e-5 == 0.00005), or the same word as a whole token."""
    import re

    target = normalize(answer)
    try:
        number = float(target)
    except ValueError:
        number = None
    if number is not None:
        for token in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", response.lower()):
            if float(token) == number:
                return True
        return False
    words = re.findall(r"[a-z0-9_.\-/]+", response.lower())
    return target in words or normalize(response) == target


def _versions(modules: tuple[str, ...]) -> dict[str, str]:
    from importlib.metadata import version

    return {lib: version(lib) for lib in sorted({m.split(".")[0] for m in modules})}


UNINFORMATIVE = ("None", "True", "False")  # answers a guess gets right too often: 60% of all defaults are one of them


def build(modules: tuple[str, ...] = MODULES, seed: int = 0, context_lines: int = 3) -> list[Question]:
    """Every question the modules' source yields, in a seeded order: defaults that are numbers or strings only
    (None, True and False are left out: always guessing "None" would score a third). A question is dropped when
    the same owner and argument appear in two modules (ambiguous)."""
    rows: dict[tuple[str, str, str], tuple[str, str, int, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    for module in modules:
        for owner, name, default, first, last in _entries(module):
            library = module.split(".")[0]
            key = (library, owner, name)
            seen[key[1:]] = seen.get(key[1:], 0) + 1
            rows[key] = (module, default, first, last)
    questions = []
    for (library, owner, name), (module, default, first, last) in rows.items():
        if seen[(owner, name)] > 1 or default in UNINFORMATIVE:
            continue
        lines = _source(module)[1].splitlines()
        start, end = max(1, first - context_lines), min(len(lines), last + context_lines)
        gold = Passage(module, start, end, "\n".join(lines[start - 1:end]))
        digest = hashlib.sha1(f"{module}:{owner}:{name}".encode()).hexdigest()[:10]
        possessive = "' " if library.endswith("s") else "'s "
        questions.append(Question(
            id=digest, question=f"In {library}{possessive}`{owner}`, what is the default value of `{name}`?",
            answer=default, library=library, owner=owner, name=name, gold=gold, first=first, last=last))
    questions.sort(key=lambda q: q.id)
    random.Random(seed).shuffle(questions)
    return questions


def load(seed: int = 0) -> list[Question]:
    """`build(seed=seed)`, cached in the course cache under the installed versions (rebuilt when they change)."""
    from .assets import cache_dir
    from .files import cache_path

    key = hashlib.sha1(json.dumps([MODULES, _versions(MODULES), seed]).encode()).hexdigest()[:12]
    path = cache_dir() / "docqa" / f"questions-{key}.json"
    if path.exists():
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [Question(**{**r, "gold": Passage(**r["gold"])}) for r in rows]
    questions = build(seed=seed)
    with cache_path(path) as tmp:
        Path(tmp).write_text(json.dumps([asdict(q) for q in questions], indent=1), encoding="utf-8")
    return questions
