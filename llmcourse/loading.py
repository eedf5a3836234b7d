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


def load_model(name: str, dtype=None, quant: str | None = None, budget=None, task: str = "inference",
               device: str | None = None):
    """(model, tokenizer) for causal LM `name` (hub id, alias or folder), resolved offline when needed.

    Args:
        dtype: "fp32", "bf16", "fp16" or a torch dtype; default fp32 on CPU, bf16/fp16 on a GPU that supports it.
        quant: None, "int8" or "nf4" (bitsandbytes).
        budget, task: memory budget and task for the planner (see llmcourse.plan); unused without a planner.
        device: "cpu", "cuda" or "mps"; default: the detected accelerator.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = _torch_dtype(dtype)
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
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
