"""LoRA and QLoRA in one call, with the defaults the QLoRA paper recommends and a guard for CPUs.

    model = prepare_qlora(model)   # a model loaded in 4-bit (load_model(name, quant="nf4"))
    model = prepare_lora(model)    # an unquantized model

Both put LoRA adapters on every linear layer but the output head (the QLoRA paper found that adapting all linear
layers is needed to match full fine-tuning; peft's own default for Llama is only q_proj and v_proj), freeze the rest,
and print how many parameters train. `prepare_qlora` also

* turns on gradient checkpointing with ``use_reentrant=False`` (no need to make the inputs require grad),
* upcasts nothing that does not need it: peft's ``prepare_model_for_kbit_training`` converts every parameter that is
  not 4-bit (embeddings and output head included) to fp32, which can cost more memory than 4-bit saves on a small
  model; here only the norms are upcast, and only when the model runs in fp16,
* guards a silent bitsandbytes bug on CPUs with AVX512-BF16: the first no-grad forward of a 4-bit layer (a
  ``generate()`` call, an evaluation) repacks its weights into an inference-only layout whose kernel has no
  backward, so the base layers stop passing gradients and training quietly stops learning. `guard_cpu_4bit` turns
  that repacking off and undoes it where it already happened.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .surgery import add_lora, enable_checkpointing, lora_config, task_type

__all__ = ["guard_cpu_4bit", "prepare_lora", "prepare_qlora"]


def _linear4bit_modules(model) -> list:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def _is_quantized(model) -> bool:
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return True
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in model.modules())


def guard_cpu_4bit(model) -> int:
    """Keep every bitsandbytes 4-bit layer of `model` trainable on CPU; return how many layers were unpacked.

    bitsandbytes (0.49+) repacks a 4-bit layer's weights for fast CPU inference in its first no-grad forward and
    never packs them back; the packed layout runs a kernel without a backward. This sets the layer switch
    `support_avx512bf16_for_cpu = False` (so it never repacks) and converts already repacked weights back.
    """
    unpacked = 0
    for module in _linear4bit_modules(model):
        module.support_avx512bf16_for_cpu = False
        weight = module.weight
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
            unpacked += 1
    return unpacked


def _wrap(model, r: int, alpha: int, dropout: float, targets: Any, gradient_checkpointing: bool, verbose: bool,
          kind: str):
    import torch

    if hasattr(model, "peft_config"):
        raise ConfigError(f"this model already has adapters ({type(model).__name__}); call {kind} on the base model.")
    if r < 1:
        raise ConfigError(f"LoRA rank r={r} must be at least 1 (8 to 64 are common).")
    for p in model.parameters():
        p.requires_grad_(False)
    if kind == "prepare_qlora":
        norm_dtype = {p.dtype for n, p in model.named_parameters() if p.dtype in (torch.float16, torch.bfloat16)}
        if norm_dtype == {torch.float16}:
            for module in model.modules():
                if "norm" in type(module).__name__.lower():
                    module.float()
    if gradient_checkpointing:
        enable_checkpointing(model)
        if getattr(model, "config", None) is not None and hasattr(model.config, "use_cache"):
            model.config.use_cache = False
    config = lora_config(model, r=r, alpha=alpha, dropout=dropout, targets=targets, task=task_type(model))
    peft_model = add_lora(model, config)
    n_adapted = sum(1 for m in peft_model.modules() if hasattr(m, "lora_A") and len(m.lora_A))
    if not n_adapted:
        raise ConfigError(f"{type(model).__name__} has no linear layer matching {targets!r} to put LoRA adapters on. "
                          "Fix: targets='all-linear', or names of its linear layers such as ['q_proj', 'v_proj'].")
    peft_model.llmcourse_prepared = kind
    if verbose:
        trainable, total = peft_model.get_nb_trainable_parameters()
        print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%) "
              f"in LoRA adapters of rank {r} on {n_adapted} layers")
    return peft_model


def prepare_qlora(model, r: int = 16, alpha: int = 32, dropout: float = 0.05, targets: Any = "all-linear",
                  gradient_checkpointing: bool = True, verbose: bool = True):
    """Add LoRA adapters to a model loaded in 4-bit (or 8-bit) and make it ready to train. Returns the peft model.

    r, alpha, dropout: the LoRA rank, scale (the update is multiplied by alpha / r) and dropout on the adapter input.
    targets: "all-linear" (every linear layer but the heads) or a list of layer names such as ["q_proj", "v_proj"].
    gradient_checkpointing: recompute activations in the backward pass (use_reentrant=False): less memory, ~30%
        slower.
    """
    if not _is_quantized(model):
        raise ConfigError("prepare_qlora() needs a model loaded in 4-bit or 8-bit, e.g. "
                          "load_model(name, quant='nf4'); for a model in fp32/bf16/fp16 use prepare_lora().")
    guard_cpu_4bit(model)
    peft_model = _wrap(model, r, alpha, dropout, targets, gradient_checkpointing, verbose, "prepare_qlora")
    guard_cpu_4bit(peft_model)
    return peft_model


def prepare_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.05, targets: Any = "all-linear",
                 gradient_checkpointing: bool = False, verbose: bool = True):
    """Add LoRA adapters to an unquantized model (fp32/bf16/fp16) and freeze the rest. Returns the peft model.

    Same arguments as `prepare_qlora`; gradient checkpointing is off by default (turn it on to save memory).
    """
    if _is_quantized(model):
        raise ConfigError("this model is quantized (bitsandbytes layers): use prepare_qlora(model) instead.")
    return _wrap(model, r, alpha, dropout, targets, gradient_checkpointing, verbose, "prepare_lora")
