"""The public API: `__all__` is exactly what `llmcourse/__init__.py` imports, and importing it stays light."""

import ast
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import llmcourse

PACKAGE = Path(llmcourse.__file__).parent


def test_public_names_are_exactly_all():
    """Every public non-module attribute is in __all__ and every name in __all__ is really there (no lazy loader)."""
    public = {name for name, value in vars(llmcourse).items()
              if not name.startswith("_") and not isinstance(value, ModuleType)}
    assert public == set(llmcourse.__all__)
    assert len(llmcourse.__all__) == len(set(llmcourse.__all__))


def test_all_names_are_explicit_imports():
    """Editors and type checkers see the API: each name of __all__ comes from a `from .module import name` line."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom) and node.level
                for alias in node.names}
    assert imported == set(llmcourse.__all__)


def test_lesson_modules_load_on_first_use():
    import llmcourse.checks

    assert llmcourse.checks.check is not None  # the notebooks' `llmcourse.checks.check`
    assert isinstance(llmcourse.data, ModuleType)


def test_import_does_not_load_torch():
    """`import llmcourse` (and so the `llmcourse` command) must not pay for torch, transformers or peft."""
    code = "import sys, llmcourse; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_module_is_small_and_documented():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert text.lstrip().startswith(('"""', "#")), f"{path.name} has no module docstring"
        assert len(text.splitlines()) <= 650, f"{path.name} is over 650 lines: split it by concern"
