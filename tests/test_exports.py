import importlib

import llmcourse


def test_all_is_sorted_and_every_name_resolves():
    assert llmcourse.__all__ == sorted(llmcourse.__all__)
    for name in llmcourse.__all__:
        assert getattr(llmcourse, name) is not None, name


def test_public_names_are_exactly_all():
    public = {n for n in dir(llmcourse) if not n.startswith("_")}
    modules = {n for n in public if isinstance(getattr(llmcourse, n), type(importlib))}
    assert public - modules == set(llmcourse.__all__)


def test_every_module_is_small_and_documented():
    from pathlib import Path

    for path in Path(llmcourse.__file__).parent.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert text.lstrip().startswith(('"""', "#")), f"{path.name} has no module docstring"
        assert len(text.splitlines()) <= 650, f"{path.name} is over 650 lines: split it by concern"
