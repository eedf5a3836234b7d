"""The course's typed values: task, dtype and quantization, and the one table of dtypes.

Introduced in week 3 (`week03/01_small_models_on_a_laptop.ipynb`, where the planner first chooses a dtype).
Strings from a user (a function argument, the command line) are parsed once, at the boundary, by `parse_task`,
`parse_dtype` and `parse_quant`; everything inside the package then works with these values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPES", "FORWARD_ONLY", "QUANTS", "TASKS", "Dtype", "Quant", "Task", "dtype_bytes", "dtype_of",
           "parse_dtype", "parse_quant", "parse_task", "torch_dtype"]

Task = Literal["inference", "eval", "full", "lora", "qlora"]
FORWARD_ONLY: tuple[Task, ...] = ("inference", "eval")  # no gradients, no optimizer
Dtype = Literal["fp32", "bf16", "fp16"]
Quant = Literal["int8", "nf4"]  # bitsandbytes; None means no quantization

TASKS: tuple[Task, ...] = get_args(Task)
DTYPES: tuple[Dtype, ...] = get_args(Dtype)
QUANTS: tuple[Quant, ...] = get_args(Quant)

# The one dtype table: course name -> (torch attribute, bytes per element).
_DTYPE_TABLE: dict[Dtype, tuple[str, int]] = {"fp32": ("float32", 4), "bf16": ("bfloat16", 2), "fp16": ("float16", 2)}
_NO_QUANT = (None, "", "none")


def parse_task(value: Any) -> Task:
    """A task name ('inference', 'eval', 'full', 'lora', 'qlora'); ConfigError for anything else."""
    if value not in TASKS:
        raise ConfigError(f"task {value!r} is not one of {', '.join(TASKS)}. Fix: pass one of those names.")
    return value


def parse_dtype(value: Any) -> Dtype | None:
    """'fp32', 'bf16', 'fp16', their torch names ('bfloat16'...) or a torch dtype -> the course name; None stays."""
    if value is None or (isinstance(value, str) and value in _DTYPE_TABLE):
        return value
    name = str(value).removeprefix("torch.")
    for short, (torch_name, _) in _DTYPE_TABLE.items():
        if name == torch_name:
            return short
    raise ConfigError(f"dtype {value!r} is not one of {', '.join(DTYPES)}. Fix: pass one of those names.")


def parse_quant(value: Any) -> Quant | None:
    """None, '' or 'none' -> None (no quantization); 'int8' or 'nf4' stay; ConfigError for anything else."""
    if value in _NO_QUANT:
        return None
    if value not in QUANTS:
        raise ConfigError(f"quantization {value!r} is not one of none, {', '.join(QUANTS)}. "
                          "Fix: pass one of those names.")
    return value


def dtype_bytes(dtype: Dtype) -> int:
    """Bytes per element of `dtype`: 4 for fp32, 2 for bf16 and fp16."""
    return _DTYPE_TABLE[dtype][1]


def torch_dtype(dtype: Dtype) -> torch.dtype:
    """The torch dtype of a course dtype name ('bf16' -> torch.bfloat16)."""
    import torch

    return getattr(torch, _DTYPE_TABLE[dtype][0])


def dtype_of(value: torch.dtype) -> Dtype | None:
    """The course name of a torch dtype (torch.float16 -> 'fp16'); None for dtypes the course does not use."""
    try:
        return parse_dtype(value)
    except ConfigError:
        return None
