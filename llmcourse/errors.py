"""The course's exceptions: one base class, a few specific ones, messages that say what to do.

    CourseError                      base: catch this to catch everything the package raises on purpose
    ├── AssetUnavailable             a model or data set is neither on the hub (offline) nor packaged
    ├── MemoryBudgetError            a task does not fit the memory budget, whatever the plan
    ├── HardwareError                the hardware cannot do what was asked (bf16 on a T4, 4-bit without bitsandbytes)
    ├── ConfigError                  an argument or file has a value the course cannot use
    └── GradingError                 a grading run could not start (missing reference notebook, bad arguments)

Every message states what happened, the numbers involved, and the fix.
"""

from __future__ import annotations

__all__ = [
    "AssetUnavailable",
    "ConfigError",
    "CourseError",
    "GradingError",
    "HardwareError",
    "MemoryBudgetError",
]


class CourseError(Exception):
    """Base class of every error the course raises on purpose."""


class AssetUnavailable(CourseError):
    """A model or data set cannot be had here (offline and not packaged, or its package is not installed)."""

    def __init__(self, name: str, reason: str, available: list[str] | None = None, fix: str | None = None):
        self.name = name
        self.available = list(available or [])
        parts = [f"{name!r} is not available: {reason}."]
        if self.available:
            parts.append("Available offline: " + ", ".join(self.available) + ".")
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))


class MemoryBudgetError(CourseError):
    """No configuration of the task fits the memory budget."""

    def __init__(self, message: str, needed_bytes: int | None = None, budget_bytes: int | None = None):
        self.needed_bytes = needed_bytes
        self.budget_bytes = budget_bytes
        super().__init__(message)


class HardwareError(CourseError):
    """The hardware cannot do what was asked."""


class ConfigError(CourseError, ValueError):
    """A value the course cannot use; the message names the accepted values."""


class GradingError(CourseError):
    """A grading run could not start."""
