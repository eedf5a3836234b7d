"""Model surgery shared by the memory estimator and the LoRA helpers: meta copies, which layers to quantize, LoRA
adapters (peft's ``all-linear``), gradient checkpointing.

Introduced in week 4 (`week04/01_lora_and_qlora.ipynb`), through `prepare_lora` / `prepare_qlora` and `estimate`.
"""

from __future__ import annotations

import warnings
from typing import Any

from .types import Dtype, torch_dtype

__all__ = ["CLASSIFIER_HEADS", "add_lora", "enable_checkpointing", "keep_in_float", "linear_shape", "lora_config",
           "meta_model", "quantized_modules", "task_type"]

# Heads that train in full next to the adapters (peft's modules_to_save) and the pooler that feeds them: never
# quantized, never adapted. peft's "all-linear" leaves out only the output embeddings, so a classifier's head and
# pooler would otherwise get adapters.
CLASSIFIER_HEADS = ("classifier", "score", "qa_outputs")
_NOT_ADAPTED = (*CLASSIFIER_HEADS, "pooler")


def _model_class(config):
    import transformers

    for arch in config.architectures or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    try:
        transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        return transformers.AutoModelForCausalLM
    except KeyError:
        return transformers.AutoModel


def meta_model(config, dtype: Dtype):
    """The model of `config` on PyTorch's meta device (shapes and dtypes, no storage), weights in `dtype`."""
    import torch

    cls = _model_class(config)
    with torch.device("meta"):
        if hasattr(cls, "from_config"):
            return cls.from_config(config, dtype=torch_dtype(dtype))
        return cls._from_config(config, dtype=torch_dtype(dtype))


def linear_shape(module) -> tuple[int, int] | None:
    """(in_features, out_features) of an nn.Linear or a GPT-2 style Conv1D, else None."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.shape[0], module.nf
    return None


def _not_converted(model) -> set[str]:
    """Module names transformers keeps in 16-bit when quantizing (the output head, tied embeddings)."""
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        return set(get_keys_to_not_convert(model))
    except Exception:  # noqa: BLE001 - an older or newer transformers without it: the usual head
        return {"lm_head"}


def keep_in_float(model) -> list[str]:
    """Modules to leave unquantized when loading in 8/4-bit: what transformers keeps (the output head, tied
    embeddings) and classification heads, which train in full next to LoRA adapters (peft's modules_to_save) and so
    cannot be 4-bit. Pass it as `BitsAndBytesConfig(llm_int8_skip_modules=...)`."""
    keep = {n.rsplit(".", 1)[0] if n.endswith((".weight", ".bias")) else n for n in _not_converted(model)}
    keep |= {name for name, _ in model.named_modules() if name.split(".")[-1] in CLASSIFIER_HEADS}
    return sorted(keep)


def quantized_modules(model) -> dict[str, tuple[int, int]]:
    """{name: (in_features, out_features)} of the linear layers bitsandbytes would quantize."""
    skip = set(keep_in_float(model))
    out = {}
    for name, module in model.named_modules():
        shape = linear_shape(module)
        if shape is None or any(name == s or name.endswith("." + s) or name.startswith(s + ".") for s in skip):
            continue
        out[name] = shape
    return out


def task_type(model) -> str | None:
    """peft's task type for a transformers model: CAUSAL_LM, SEQ_CLS, TOKEN_CLS, or None."""
    name = type(model).__name__
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return "CAUSAL_LM"
    if name.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    if name.endswith("ForTokenClassification"):
        return "TOKEN_CLS"
    return None


def lora_config(model, r: int = 16, alpha: int | None = None, dropout: float = 0.05, targets: Any = "all-linear",
                task: str | None = None):
    """A peft LoraConfig: adapters on every linear layer but the output head ("all-linear"), and not on a
    classifier's head or pooler; `targets` may instead list layer names such as ["q_proj", "v_proj"].

    A mixture-of-experts model keeps its experts' weights fused in one tensor per projection (transformers 5), which
    peft adapts as parameters, without dropout: there the dropout is 0, with a warning."""
    from peft import LoraConfig

    if dropout and any(type(m).__name__.endswith("Experts") for m in model.modules()):
        warnings.warn(f"LoRA dropout {dropout} set to 0: this model's experts are fused weights, which peft adapts "
                      "as parameters, and those take no dropout.", stacklevel=2)
        dropout = 0.0
    exclude = None
    if targets in ("all-linear", None):
        targets = "all-linear"
        exclude = sorted(n for n, m in model.named_modules()
                         if linear_shape(m) and set(n.split(".")) & set(_NOT_ADAPTED)) or None
    return LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, lora_dropout=dropout,
                      target_modules=targets, exclude_modules=exclude, task_type=task)


def add_lora(model, config):
    """peft's get_peft_model without the FutureWarning about transformers' renamed is_gradient_checkpointing
    (peft reads the old name; nothing the learner can change)."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def enable_checkpointing(model) -> None:
    """Gradient checkpointing with use_reentrant=False (transformers 5 renamed it 'activation checkpointing')."""
    kwargs = {"use_reentrant": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if hasattr(model, "activation_checkpointing_enable"):
            try:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
                return
            except TypeError:
                pass
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
