"""llmcourse: the helper package of a course on large language models for a modest laptop.

The public API is imported lazily (importing the package stays fast; torch loads on first use).
"""

import importlib
import importlib.util

__version__ = "0.1.0"

_EXPORTS = {
    "AssetUnavailable": "errors",
    "ConfigError": "errors",
    "CourseError": "errors",
    "GradingError": "errors",
    "HardwareCard": "device",
    "HardwareError": "errors",
    "MemoryBudgetError": "errors",
    "Estimate": "memory",
    "Plan": "planner",
    "detect": "device",
    "estimate": "memory",
    "is_offline": "assets",
    "list_assets": "assets",
    "load_model": "loading",
    "resolve": "assets",
    "plan": "planner",
    "prepare_lora": "qlora",
    "prepare_qlora": "qlora",
    "seed_everything": "device",
    "setup": "environment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")  # a submodule: llmcourse.data, llmcourse.checks...
        raise AttributeError(f"module 'llmcourse' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
