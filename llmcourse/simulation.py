"""Run a model's task on PyTorch's meta device and count the bytes alive at each moment.

`simulate` builds the model on meta tensors (no memory, no weights), runs generation's prefill, a forward pass with
the loss, or a training step's forward and backward, while `LiveBytes` adds up every tensor the operations create
and frees. What real kernels would do differently on meta is patched for the run (`meta_patches`,
`meta_attention`, `llmcourse.experts.meta_experts`). `llmcourse.memory.estimate` turns the result into an estimate.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref

from .experts import meta_experts
from .surgery import add_lora, enable_checkpointing, lora_config, meta_model, quantized_modules
from .types import FORWARD_ONLY, Dtype, Quant, Task

__all__ = ["MMAP_THRESHOLD_MAX", "LiveBytes", "meta_patches", "simulate"]

MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's largest dynamic mmap threshold on 64-bit systems


@contextlib.contextmanager
def meta_patches():
    """What running a model on meta tensors needs, undone on exit:

    - transformers' mask helpers, and its check for padding without a mask, read values, which meta tensors have
      not: no packed sequences, and no padding (every mask all ones);
    - mixture-of-experts layers multiply each expert's share of the tokens with one grouped matmul, whose meta kernel
      takes bf16 only: on meta it goes through transformers' own fallback, whose outputs have the same shapes (every
      token through its top-k experts, not through all of them);
    - peft's adapters on fused expert weights switch autocast off for their device, which fails for "meta": there it
      is a no-op (nothing on meta runs under autocast); and lora_config's warning about their dropout stays quiet.
    """
    import torch
    from transformers import PreTrainedModel, masking_utils

    warn_padding, nonzero = PreTrainedModel.warn_if_padding_and_no_attention_mask, torch.Tensor.nonzero

    def every_index(self, *args, **kwargs):  # on meta, every element counts as non-zero (every label is valid)
        if self.device.type != "meta" or args or kwargs:
            return nonzero(self, *args, **kwargs)
        return torch.empty((self.numel(), self.dim()), dtype=torch.long, device="meta")

    patches = [(masking_utils, "find_packed_sequence_indices", lambda *a, **k: None),
               (masking_utils, "fast_all", lambda *a, **k: True),
               (PreTrainedModel, "warn_if_padding_and_no_attention_mask",  # reads token values (DeBERTa-v2)
                lambda self, input_ids, attention_mask: None if input_ids.device.type == "meta"
                else warn_padding(self, input_ids, attention_mask)),
               (torch.Tensor, "nonzero", every_index)]  # DeBERTa-v2 keeps the labels that are >= 0
    try:
        from transformers.integrations import moe
    except ImportError:
        moe = None
    if moe is not None:
        grouped = moe._can_use_grouped_mm
        patches.append((moe, "_can_use_grouped_mm",
                        lambda input, weight, offs: weight.device.type != "meta" and grouped(input, weight, offs)))
    autocast = torch.autocast
    patches.append((torch, "autocast", lambda device_type, *args, **kwargs: contextlib.nullcontext()
                    if device_type == "meta" else autocast(device_type, *args, **kwargs)))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches if hasattr(owner, name)]
    for owner, name, value in patches:
        if hasattr(owner, name):
            setattr(owner, name, value)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"LoRA dropout .* set to 0")
            yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


class LiveBytes:
    """A dispatch mode that adds up the bytes of the tensors alive at each moment (on meta tensors)."""

    def __init__(self, ignore):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._record(out)
                return out

        self.mode = Mode()
        self.ignore = set(ignore)
        self.live: dict[int, tuple[int, int]] = {}  # storage address -> (serial number, bytes)
        self.serial = 0
        self.current = 0
        self.peak = 0
        self.peak_snapshot: dict[int, int] = {}  # serial -> bytes, at the peak moment
        # glibc serves blocks above its mmap threshold (at most 32 MiB) with mmap and gives them back when freed,
        # smaller ones from heaps that keep freed memory: the peak of the small ones is what a heap must hold
        self.small = self.small_peak = self.large = self.large_peak = 0
        # glibc raises its mmap threshold to the size of each such block freed, and trims a heap's top only past twice
        # that: the largest small block sets how much a heap may keep
        self.largest_small = 0
        # after each operation: (live bytes, small blocks' bytes, large blocks' bytes, the last serial number)
        self.trace: list[tuple[int, int, int, int]] = []

    def _free(self, key: int) -> None:
        n = self.live.pop(key, (0, 0))[1]
        self.current -= n
        if n > MMAP_THRESHOLD_MAX:
            self.large -= n
        else:
            self.small -= n

    def serial_of(self, tensor) -> int | None:
        entry = self.live.get(tensor.untyped_storage()._cdata)
        return entry[0] if entry else None

    def _record(self, out) -> None:
        import torch
        from torch.utils._pytree import tree_flatten

        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self.live or key in self.ignore:
                continue
            self.serial += 1
            n = storage.nbytes()
            self.live[key] = (self.serial, n)
            self.current += n
            if n > MMAP_THRESHOLD_MAX:
                self.large += n
                self.large_peak = max(self.large_peak, self.large)
            else:
                self.small += n
                self.small_peak = max(self.small_peak, self.small)
                self.largest_small = max(self.largest_small, n)
            weakref.finalize(storage, self._free, key)
            if self.current > self.peak:
                self.peak = self.current
                self.peak_snapshot = dict(self.live.values())
        self.trace.append((self.current, self.small, self.large, self.serial))

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def _fake_quantized_linear(module, compute_dtype):
    """Make a meta Linear/Conv1D behave like a bitsandbytes one for memory: it dequantizes its weight to the compute
    dtype in every forward and backward (a temporary the size of the weight) and saves its input for the backward."""
    import torch

    class DequantMatmul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, transposed):
            ctx.save_for_backward(x)
            ctx.weight, ctx.transposed = weight, transposed
            w = weight.to(compute_dtype) * 1  # the dequantized copy
            return x @ (w if transposed else w.t())

        @staticmethod
        def backward(ctx, grad):
            w = ctx.weight.to(compute_dtype) * 1
            return grad @ (w.t() if ctx.transposed else w), None, None

    transposed = type(module).__name__ == "Conv1D"

    def forward(x):
        out = DequantMatmul.apply(x.to(compute_dtype), module.weight, transposed)
        return out + module.bias if module.bias is not None else out

    module.forward = forward


def _inputs(model, batch: int, seq_len: int, task: Task):
    import torch

    ids = torch.zeros(batch, seq_len, dtype=torch.long, device="meta")
    kwargs = {"input_ids": ids}  # no attention mask: all ones is the same, and checking it needs real values
    name = type(model).__name__
    causal = name.endswith("ForCausalLM") or name.endswith("LMHeadModel")
    seq2seq = getattr(model.config, "is_encoder_decoder", False)
    if task == "inference" and seq2seq:  # encode the prompt, then the decoder's first step, with its cache
        kwargs["decoder_input_ids"] = torch.zeros(batch, 1, dtype=torch.long, device="meta")
        kwargs["use_cache"] = True
    elif task == "inference":  # generation's prefill: transformers keeps the last position's logits only
        if causal:
            kwargs["use_cache"] = True
            kwargs["logits_to_keep"] = 1
    elif causal or seq2seq or name.endswith("ForMaskedLM"):  # eval, training: logits at every position, the loss
        kwargs["labels"] = ids
    elif name.endswith("ForSequenceClassification"):
        kwargs["labels"] = torch.zeros(batch, dtype=torch.long, device="meta")
    return kwargs, causal


def _cache_tensors(out) -> list:
    pkv = getattr(out, "past_key_values", None)
    if pkv is None:
        return []
    tensors = []
    caches = [pkv] + [getattr(pkv, a) for a in ("self_attention_cache", "cross_attention_cache") if hasattr(pkv, a)]
    for cache in caches:  # an encoder-decoder's cache holds one for its self- and one for its cross-attention
        for layer in getattr(cache, "layers", []):
            for attr in ("keys", "values"):
                t = getattr(layer, attr, None)
                if t is not None:
                    tensors.append(t)
    return tensors


def _flash_attention_on(device: str, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa) -> bool:
    """Whether `device`'s scaled_dot_product_attention would run a fused kernel that keeps only the output and the
    log-sum-exp: on CUDA, flash or memory-efficient attention (the same memory); on a CPU, torch's own choice for
    these dtypes, head sizes, mask, dropout and grouped heads, asked on tiny real tensors."""
    import torch

    if attn_mask is not None and attn_mask.requires_grad and torch.is_grad_enabled():
        # a learned bias (T5's relative positions) that needs its gradient: CUDA's memory-efficient kernel returns
        # it, torch's CPU flash kernel has none, so a CPU runs the math form
        return device != "cpu"
    if device != "cpu":
        return True

    def tiny(t, heads_dim=True):
        shape = (1, t.shape[1], 2, t.shape[-1]) if heads_dim else (1,) * (t.dim() - 2) + (2, 2)
        return torch.zeros(shape, dtype=t.dtype)

    mask = None if attn_mask is None else tiny(attn_mask, heads_dim=False)
    choice = torch._fused_sdp_choice(tiny(query), tiny(key), tiny(value), attn_mask=mask, dropout_p=dropout_p,
                                     is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    return choice == int(torch.nn.attention.SDPBackend.FLASH_ATTENTION)


@contextlib.contextmanager
def _meta_attention(device: str):
    """On meta tensors, scaled_dot_product_attention decomposes into its math form (every score materialized, 16-bit
    inputs upcast), which the real fused kernels never hold: where the device would run one, run the CPU flash
    kernel's meta function instead (the output and a float log-sum-exp per query; its backward the three input
    gradients), as `_flash_attention_on` decides."""
    import torch

    functional = torch.nn.functional
    original = functional.scaled_dot_product_attention

    def attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if query.device.type == "meta" and _flash_attention_on(device, query, key, value, attn_mask, dropout_p,
                                                               is_causal, scale, enable_gqa):
            # the CPU kernel's meta function has no gradient for a mask: a learned bias is passed detached, so the
            # simulation leaves out its gradient (batch x heads x queries x keys, once per backward)
            mask = attn_mask.detach() if attn_mask is not None and attn_mask.requires_grad else attn_mask
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                query, key, value, dropout_p, is_causal, attn_mask=mask, scale=scale)[0]
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, enable_gqa=enable_gqa)

    functional.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


@contextlib.contextmanager
def _meta_dropout(device: str):
    """Dropout keeps what its backward needs: on CUDA the fused kernel's mask, one byte an element; on a CPU (and on
    meta tensors) a noise tensor of the input's dtype, four bytes an element in fp32. Where the device is CUDA, the
    simulation runs the fused form, whose meta function returns that boolean mask."""
    import torch

    functional = torch.nn.functional
    original = functional.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        if device == "cuda" and input.device.type == "meta" and training and 0 < p < 1 and not inplace:
            return torch.native_dropout(input, p, True)[0]
        return original(input, p, training, inplace)

    functional.dropout = dropout
    try:
        yield
    finally:
        functional.dropout = original


@meta_patches()
def simulate(config, task: Task, dtype: Dtype, quant: Quant | None, batch: int, seq_len: int, lora_r: int | None,
              gradient_checkpointing: bool, device: str = "cpu") -> dict[str, int]:
    """Run the task on meta tensors; return the peak live bytes split into activations / gradients / kv, the peaks
    of the small and the large blocks, the highest activations at any moment (`activation_peak`: at the end of a
    deep model's backward the gradients make the peak, with few activations left), and the run's trace and marks
    (for `memory._trace_extrapolated`)."""
    import torch

    model = meta_model(config, dtype)
    tdtype = next(model.parameters()).dtype
    if quant:
        for name in quantized_modules(model):
            _fake_quantized_linear(model.get_submodule(name), tdtype)
    train = task not in FORWARD_ONLY
    if task in ("lora", "qlora"):
        for p in model.parameters():
            p.requires_grad_(False)
        model = add_lora(model, lora_config(model, r=lora_r or 16))
    if train:
        model.train()
        if gradient_checkpointing:
            enable_checkpointing(model)
    else:
        model.eval()
    kwargs, _ = _inputs(model.get_base_model() if hasattr(model, "peft_config") else model, batch, seq_len, task)
    params = list(model.parameters()) + list(model.buffers())
    tracker = LiveBytes(p.untyped_storage()._cdata for p in params)
    kv_sizes: dict[int, int] = {}  # serial number -> bytes of each KV cache tensor
    marks = _LayerMarks(tracker, _layer_stack(model, config))
    with _meta_attention(device), _meta_dropout(device), meta_experts(device, config), tracker, marks:
        if train:
            out = model(**kwargs)
            loss = out.loss if getattr(out, "loss", None) is not None else out[0].float().mean()
            del out
            marks.mark("backward")
            loss.backward()
            del loss
        else:
            with torch.no_grad():
                try:
                    out = model(**kwargs)
                except TypeError:
                    kwargs.pop("logits_to_keep", None)
                    out = model(**kwargs)
            kv_sizes = {tracker.serial_of(t): t.untyped_storage().nbytes() for t in _cache_tensors(out)}
            del out
    grad_sizes = {tracker.serial_of(p.grad): p.grad.untyped_storage().nbytes() for p in model.parameters()
                  if p.grad is not None}
    snap = tracker.peak_snapshot
    grads = sum(n for k, n in snap.items() if k in grad_sizes)
    kv = sum(n for k, n in snap.items() if k in kv_sizes)
    trace = _trace(tracker, grad_sizes, kv_sizes)
    return {"peak": tracker.peak, "gradients": grads, "kv": kv, "activations": tracker.peak - grads - kv,
            "small_peak": tracker.small_peak, "large_peak": tracker.large_peak, "largest_small": tracker.largest_small,
            "activation_peak": int((trace[:, 0] - trace[:, 3] - trace[:, 4]).max(initial=0)),
            "trace": trace, "marks": tuple(marks.marks)}


def _layer_stack(model, config):
    """The model's stack of identical layers (the ModuleList as long as the config's depth), or None."""
    import torch

    depth = getattr(config, "num_hidden_layers", None)
    for module in model.modules():
        if (isinstance(module, torch.nn.ModuleList) and len(module) == depth and depth
                and len({type(m) for m in module}) == 1):
            return module
    return None


class _LayerMarks:
    """Where in the trace each layer's forward starts and ends, the backward starts, and each layer's backward
    starts and ends: hooks on the layers (forward) and on their input and output tensors (backward), which read
    nothing and make no tensor. Each mark is (kind, layer or -1, trace position)."""

    def __init__(self, tracker: LiveBytes, stack):
        self.tracker, self.stack, self.marks, self.handles = tracker, stack, [], []
        self.in_backward = False

    def mark(self, kind: str, layer: int = -1) -> None:
        if kind == "backward":
            self.in_backward = True
        self.marks.append((kind, layer, len(self.tracker.trace)))

    def _first_tensor(self, value):
        import torch
        from torch.utils._pytree import tree_flatten

        return next((t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)), None)

    def _on_grad(self, tensor, kind: str, layer: int) -> None:
        if tensor is not None and tensor.requires_grad:
            tensor.register_hook(lambda grad: self.mark(kind, layer))

    def __enter__(self):
        if self.stack is None:
            return self
        for i, layer in enumerate(self.stack):
            def pre(module, args, kwargs, i=i):
                if not self.in_backward:  # a checkpointed layer runs its forward again during the backward
                    self.mark("forward", i)
                    self._on_grad(self._first_tensor((args, kwargs.get("hidden_states"))), "backward_end", i)

            def post(module, args, kwargs, output, i=i):
                if not self.in_backward:
                    self.mark("forward_end", i)
                    self._on_grad(self._first_tensor(output), "backward_layer", i)

            self.handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
            self.handles.append(layer.register_forward_hook(post, with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _trace(tracker: LiveBytes, grad_sizes: dict[int, int], kv_sizes: dict[int, int]):
    """The run, operation by operation: an int64 array of (live, small blocks, large blocks, gradients, KV cache)
    bytes after each. A gradient (or a cache tensor) is alive from the operation that made it to the end of the run."""
    import numpy as np

    made = sorted([(serial, n, 0) for serial, n in grad_sizes.items() if serial is not None]
                  + [(serial, n, 1) for serial, n in kv_sizes.items() if serial is not None])
    rows, held, i = [], [0, 0], 0
    for live, small, large, serial in tracker.trace:
        while i < len(made) and made[i][0] <= serial:
            held[made[i][2]] += made[i][1]
            i += 1
        rows.append((live, small, large, held[0], held[1]))
    return np.array(rows, dtype=np.int64).reshape(-1, 5)
