"""`load_model`: a causal language model and its tokenizer in one call, offline or online.

Introduced in week 1 (`week01/00_setup_and_hardware.ipynb`). The notebooks also show the plain transformers calls;
this helper adds what is easy to get wrong: offline resolution, the dtype the hardware really supports, and a
bitsandbytes quantization config.
"""

from __future__ import annotations

from .assets import resolve
from .errors import ConfigError, HardwareError

__all__ = ["DTYPES", "QUANTS", "load_model"]

DTYPES = ("fp32", "bf16", "fp16")
QUANTS = (None, "int8", "nf4")


def _torch_dtype(dtype):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise ConfigError(f"dtype {dtype!r} is not supported: use one of {', '.join(DTYPES)}.")
    return table[dtype]


def quantization_config(quant: str | None, compute_dtype=None):
    """A BitsAndBytesConfig for quant 'int8' or 'nf4' (None for no quantization)."""
    if quant is None or quant == "none":
        return None
    if quant not in QUANTS:
        raise ConfigError(f"quant {quant!r} is not supported: use None, 'int8' or 'nf4'.")
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


def _plan_for(path: str, dtype, quant, budget, task: str, device: str):
    """The memory plan for this load (None if it cannot be computed; MemoryBudgetError if nothing fits)."""
    import warnings

    import torch

    from .errors import CourseError, MemoryBudgetError
    from .planner import plan

    fixed_dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, dtype)
    card = None
    if device == "cpu" and torch.cuda.is_available():
        from types import SimpleNamespace

        from .device import detect

        card = SimpleNamespace(**dict(vars(detect()), kind="cpu"))
    try:
        p = plan(path, budget=budget, task=task, dtype=fixed_dtype, quant=quant, device=card)
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


def load_model(name: str, dtype=None, quant: str | None = None, budget=None, task: str = "inference",
               device: str | None = None):
    """(model, tokenizer) for causal LM `name` (hub id, alias or folder), resolved offline when needed.

    Before loading anything, the memory planner (llmcourse.plan) chooses the dtype and quantization that fit
    `budget` for `task` (or checks the ones given), so that a model too large for the machine raises
    MemoryBudgetError instead of killing the kernel. The plan is attached as `model.llmcourse_plan`.

    Args:
        dtype: "fp32", "bf16", "fp16" or a torch dtype; default: the planner's choice (fp32 when it fits).
        quant: None, "int8" or "nf4" (bitsandbytes); default: the planner's choice (none when it fits).
        budget: memory budget, bytes or a string like "4GiB"; default: the device's free memory with a margin.
        task: "inference", "full", "lora" or "qlora": what the model will be used for (the plan depends on it).
        device: "cpu", "cuda" or "mps"; default: the detected accelerator.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = _torch_dtype(dtype)
    if quant == "none":
        quant = None
    plan = _plan_for(path, torch_dtype, quant, budget, task, device)
    if plan is not None:
        plan.model = plan.estimate.model = name
        torch_dtype = _torch_dtype(plan.dtype)
        quant = plan.quant
    if torch_dtype is None:
        torch_dtype = torch.float32
        if device == "cuda":
            torch_dtype = torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16
    kwargs = {"dtype": torch_dtype}
    qconf = quantization_config(quant, compute_dtype=torch_dtype)
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
    model.eval()
    model.llmcourse_plan = plan
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
