"""A mixture of experts' matmuls on a CPU in 16-bit: expert by expert in fp32, so that memory stays bounded.

transformers multiplies each expert's share of the tokens with one grouped matmul (`torch._grouped_mm`). In bf16 on
a CPU that kernel runs through oneDNN, which keeps memory, outside any tensor, for every new split of the tokens
among the experts, and routing makes a new split at nearly every step: the process grows from step to step with no
bound a plan could give (docs/memory.md, "Mixtures of experts in 16-bit on a CPU"). With oneDNN switched off the
growth stops, but PyTorch's own bf16 kernel made a LoRA step of a small Mixtral 8x slower.

`experts_matmul` does the same product expert by expert in fp32 (PyTorch's BLAS path, which keeps nothing back) and
rounds each result to the weights' dtype: bounded memory at the plain kernel's speed. It keeps only the 16-bit inputs
for its backward, and makes one expert's fp32 copies at a time. `limit_expert_memory(model)` (called by `load_model`)
routes transformers' grouped matmul through it for CPU operands in 16-bit; `llmcourse.simulation` runs the same
function on meta tensors, so that the plan counts what it holds.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from .errors import ConfigError
from .types import Dtype, parse_dtype

__all__ = ["cpu_experts_in_float32", "experts_matmul", "limit_expert_memory"]


def cpu_experts_in_float32(config: Any, dtype: Dtype | str | Any, device: str) -> bool:
    """Whether a model of `config` in `dtype` on `device` is a mixture of experts in 16-bit on a CPU: where
    `experts_matmul` runs its experts' products."""
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    try:
        half = parse_dtype(dtype) in ("bf16", "fp16")
    except ConfigError:  # not a float dtype (a quantized model's storage)
        half = False
    return bool(experts) and half and device == "cpu"


def _spans(offs, rows: int, device_type: str, most: int | None) -> list[tuple[int, int, int]]:
    """(expert, first row, end row) for each expert with rows. On meta tensors the split is unknown: one expert
    takes the most rows one expert can get (`most`: each token reaches an expert once), so that its fp32 copies are
    the largest any step makes."""
    if device_type == "meta":
        return [(0, 0, min(rows, most or rows))]
    spans, start = [], 0
    for e, end in enumerate(offs.tolist()):
        if end > start:
            spans.append((e, start, end))
        start = end
    return spans


@functools.cache
def _experts_matmul_function():
    """The autograd function, made on first use (importing this module must not import torch)."""
    import torch

    class ExpertsMatmul(torch.autograd.Function):
        """out[rows of expert e] = input[rows of e] @ weight[e], each product in fp32, rounded to weight's dtype."""

        @staticmethod
        def forward(ctx, input, weight, offs, most):
            ctx.save_for_backward(input, weight)
            ctx.spans = _spans(offs, input.shape[0], input.device.type, most)  # read once, for the backward too
            out = input.new_zeros((input.shape[0], weight.shape[-1]), dtype=weight.dtype)
            for e, start, end in ctx.spans:
                out[start:end] = input[start:end].float() @ weight[e].float()
            return out

        @staticmethod
        def backward(ctx, grad):
            input, weight = ctx.saved_tensors
            grad_input = grad_weight = None
            if ctx.needs_input_grad[0]:
                grad_input = torch.zeros_like(input)
                for e, start, end in ctx.spans:
                    grad_input[start:end] = grad[start:end].float() @ weight[e].float().T
            if ctx.needs_input_grad[1]:
                grad_weight = torch.zeros_like(weight)
                for e, start, end in ctx.spans:
                    grad_weight[e] = input[start:end].float().T @ grad[start:end].float()
            return grad_input, grad_weight, None, None

    return ExpertsMatmul


def experts_matmul(input, weight, offs, most_rows: int | None = None):
    """transformers' grouped matmul (`input` (rows, d_in) sorted by expert, `weight` (experts, d_in, d_out), `offs`
    each expert's end row), expert by expert in fp32 with the result in `weight`'s dtype; differentiable.
    most_rows: on meta tensors, the most rows one expert can get (default: all of them)."""
    return _experts_matmul_function().apply(input.to(weight.dtype), weight, offs, most_rows)


def _routed(grouped_mm, device_type: str, top_k: int = 1):
    """transformers' `_grouped_mm`, with `device_type` operands in 16-bit sent to `experts_matmul` (on meta with
    `top_k` experts per token: one expert gets at most the rows / top_k tokens)."""
    import torch

    @functools.wraps(grouped_mm)
    def routed(input, weight, offs):
        if weight.device.type == device_type and weight.dtype in (torch.bfloat16, torch.float16):
            return experts_matmul(input, weight, offs, -(-input.shape[0] // top_k))
        return grouped_mm(input, weight, offs)

    routed.llmcourse_experts = device_type
    return routed


def limit_expert_memory(model: Any) -> bool:
    """Route `model`'s experts through `experts_matmul` where `cpu_experts_in_float32` says so; True if it did.

    It replaces transformers' grouped matmul (`transformers.integrations.moe._grouped_mm`, what the default experts
    implementation calls) once per process; GPU and fp32 operands still take transformers' own path."""
    if not cpu_experts_in_float32(model.config, getattr(model, "dtype", None), model.device.type):
        return False
    from transformers.integrations import moe

    if getattr(moe._grouped_mm, "llmcourse_experts", None) != "cpu":
        moe._grouped_mm = _routed(moe._grouped_mm, "cpu")
    return True


@contextlib.contextmanager
def meta_experts(device: str, config: Any = None):
    """For `llmcourse.simulation`: a context in which meta operands in 16-bit take `experts_matmul`, as a model
    loaded by `load_model` does on a CPU (elsewhere nothing changes); `config` gives the experts per token."""
    try:
        from transformers.integrations import moe
    except ImportError:
        yield
        return
    saved = moe._grouped_mm
    if device == "cpu":
        moe._grouped_mm = _routed(saved, "meta", getattr(config, "num_experts_per_tok", None) or 1)
    try:
        yield
    finally:
        moe._grouped_mm = saved
