"""`load_model`: a causal language model and its tokenizer in one call, offline or online.

Introduced in week 1 (`week01/00_setup_and_hardware.ipynb`). The notebooks also show the plain transformers calls;
this helper adds what is easy to get wrong: offline resolution, the dtype the hardware really supports, and a
bitsandbytes quantization config.
"""

from __future__ import annotations

from typing import Any

from .assets import resolve
from .errors import HardwareError
from .types import Dtype, Quant, Task, parse_dtype, parse_quant, parse_task, torch_dtype

__all__ = ["load_model", "quantization_config"]


def quantization_config(quant: Quant | str | None, compute_dtype: Any = None):
    """A BitsAndBytesConfig for quant 'int8' or 'nf4' (None for no quantization)."""
    quant = parse_quant(quant)
    if quant is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:
        raise HardwareError(f"quant={quant!r} needs bitsandbytes, which failed to import ({exc}). "
                            "Fix: `pip install bitsandbytes`, or load without quantization.") from None
    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype or torch.float32)


def _plan_for(path: str, dtype: Dtype | None, quant: Quant | None, budget, task: Task, device: str):
    """The memory plan for this load (None if it cannot be computed; MemoryBudgetError if nothing fits)."""
    import dataclasses
    import warnings

    import torch

    from .errors import CourseError, MemoryBudgetError
    from .planner import plan

    card = None
    if device == "cpu" and torch.cuda.is_available():
        from .device import detect

        card = dataclasses.replace(detect(), kind="cpu")
    try:
        p = plan(path, budget=budget, task=task, dtype=dtype, quant=quant, device=card)
    except MemoryBudgetError:
        raise
    except CourseError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model the estimator cannot trace still loads
        warnings.warn(f"no memory plan for {path} ({type(exc).__name__}: {exc}); loading without one", stacklevel=3)
        return None
    if not p.fits:
        msg = (f"{p.model} in {p.estimate.config_label} needs about {p.total_bytes / 2**30:.2f} GiB for task "
               f"'{task}', more than the budget of {p.budget_bytes / 2**30:.2f} GiB ({p.budget_reason}).")
        if budget is not None:
            raise MemoryBudgetError(msg + " Fix: leave dtype and quant unset so that the planner chooses, or "
                                    "raise the budget.", needed_bytes=p.total_bytes, budget_bytes=p.budget_bytes)
        warnings.warn(msg, stacklevel=3)
    return p


def load_model(name: str, dtype: Any = None, quant: Quant | str | None = None, budget: Any = None,
               task: Task = "inference", device: str | None = None):
    """(model, tokenizer) for causal LM `name` (hub id, alias or folder), resolved offline when needed.

    Before loading anything, the memory planner (llmcourse.plan) chooses the dtype and quantization that fit
    `budget` for `task` (or checks the ones given), so that a model too large for the machine raises
    MemoryBudgetError instead of killing the kernel. The plan is attached as `model.llmcourse_plan`.

    Args:
        dtype: "fp32", "bf16", "fp16" or a torch dtype; default: the planner's choice (fp32 when it fits).
        quant: None, "int8" or "nf4" (bitsandbytes); default: the planner's choice (none when it fits).
        budget: memory budget, bytes or a string like "4GiB"; default: the device's free memory with a margin.
        task: "inference" (generation), "eval" (a forward pass over whole sequences with logits at every position,
            as perplexity and scoring do), "full", "lora" or "qlora": what the model will be used for (the plan
            depends on it).
        device: "cpu", "cuda" or "mps"; default: the detected accelerator.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype, quant, task = parse_dtype(dtype), parse_quant(quant), parse_task(task)
    plan = _plan_for(path, dtype, quant, budget, task, device)
    if plan is not None:
        plan.model = plan.estimate.model = name
        dtype, quant = plan.dtype, plan.quant
    if dtype is None:
        dtype = "fp32"
        if device == "cuda":
            dtype = "bf16" if torch.cuda.get_device_capability()[0] >= 8 else "fp16"
    kwargs = {"dtype": torch_dtype(dtype)}
    qconf = quantization_config(quant, compute_dtype=kwargs["dtype"])
    if qconf is not None:
        kwargs["quantization_config"] = qconf
        kwargs["device_map"] = {"": 0 if device == "cuda" else device}
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if qconf is None:
        model = model.to(device)
    elif device == "cpu":
        from .qlora import guard_cpu_4bit

        guard_cpu_4bit(model)  # 4-bit layers stay trainable after generate() (a bitsandbytes CPU bug)
    from .experts import limit_expert_memory

    limit_expert_memory(model)  # as the plan assumes: a mixture of experts in 16-bit on a CPU, expert by expert
    model.eval()
    model.llmcourse_plan = plan
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
