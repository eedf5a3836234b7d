"""How much memory a model needs for a task, without loading it.

`estimate(model_or_config, task=...)` builds the model on PyTorch's *meta* device (tensors with a shape and a dtype
but no storage), counts its parameters by module type, and then *simulates* one forward pass (and, for training, the
backward pass) on meta tensors while a tracker adds up the bytes that would be alive at every moment. The peak of
that simulation is the activation memory; weights, gradients, optimizer states, LoRA adapters and the KV cache come
from exact counts. Nothing is downloaded beyond a config and no weight is ever materialised.

To keep it fast for an 8B model, the simulation runs a 2-layer and a 3-layer copy of the model and extrapolates
linearly to the real depth (every decoder layer has the same shape, so each one adds the same bytes).

Numbers are bytes "above the framework's baseline": what the task adds to a process that has already imported torch
and run a first small step (the libraries' own code and thread pools are not counted).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .simulation import MMAP_THRESHOLD_MAX, meta_patches, simulate
from .surgery import add_lora, lora_config, meta_model, quantized_modules
from .types import FORWARD_ONLY, Dtype, Quant, Task, dtype_bytes, parse_dtype, parse_quant, parse_task

__all__ = ["BREAKDOWN_KEYS", "BREAKDOWN_LABELS", "Estimate", "estimate", "format_bytes", "kv_cache_bytes",
           "load_config", "packaged_configs", "parse_size"]

NF4_BLOCK = 64  # bitsandbytes 4-bit block size: one absmax per 64 weights
DQ_BLOCK = 256  # double quantization: one fp32 scale per 256 absmax values
CONFIG_DIR = Path(__file__).parent / "configs"

BREAKDOWN_KEYS = ("weights", "adapters", "gradients", "optimizer", "activations", "kv_cache", "overhead")
# What glibc's default allocator keeps resident beyond the live tensors, on a CPU (docs/memory.md, "What glibc keeps").
# It serves blocks under its mmap ceiling (32 MiB) from heaps that keep freed memory, so the term grows with the peak
# of those small blocks, with what a task makes again and again (the KV cache generation grows token by token, the
# gradients full fine-tuning frees and makes at every step), with the largest small block (glibc raises its mmap
# threshold to each such block it frees and trims a heap's top only past twice that, so a loop's heap keeps room for a
# few of them), and a floor. Per task: (share of the small blocks' peak, share of the remade blocks, times the largest
# small block, MiB), fitted (`python -m benchmarks.memory --fit`) so that the total covers the highest resident peak
# of every row of the benchmark's tuning half with glibc's defaults: one pass or two steps at two threads and at one
# (the course's thread policy on a busy machine), and loops at two (8 passes, 4 `generate` calls or 6 steps: a
# notebook's loop over batches keeps more than one pass). GPUs count live tensors only (max_memory_allocated): no
# term there.
CPU_RETENTION = {
    "inference": (0.70, 0.00, 6.10, 0),
    "eval": (0.00, 0.00, 2.60, 12),
    "full": (0.65, 1.00, 1.10, 6),
    "lora": (1.15, 0.00, 0.00, 0),
    "qlora": (1.15, 0.00, 0.00, 0),  # LoRA's: QLoRA on a CPU is not fitted (docs/memory.md)
}
BREAKDOWN_LABELS = {
    "weights": "model weights",
    "adapters": "LoRA adapters",
    "gradients": "gradients",
    "optimizer": "optimizer states (AdamW)",
    "activations": "activations and temporaries",
    "kv_cache": "KV cache",
    "overhead": "CPU allocator slack",
}


# ----------------------------------------------------------------------------------------------------------- sizes
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(value: str | int | float) -> int:
    """'4GiB', '4GB', '4096MiB', '1.5 GiB' or a number of bytes -> bytes (int)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"cannot read the size {value!r}. Fix: write a number with a unit, e.g. '4GiB', '4GB' or "
                          "'4096MiB' (GiB = 1024^3 bytes, GB = 1000^3 bytes).")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_bytes(n: float) -> str:
    """Bytes in binary units: 1536 -> '1.5 KiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}" if abs(n) < 10 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# ---------------------------------------------------------------------------------------------------------- result
@dataclass
class Estimate:
    """The memory of one task in one configuration, as a breakdown in bytes (see `BREAKDOWN_KEYS`)."""

    model: str
    task: Task
    dtype: Dtype
    quant: Quant | None
    batch: int
    seq_len: int
    gradient_checkpointing: bool
    lora_r: int | None
    new_tokens: int
    device: str
    params: int
    trainable_params: int
    breakdown: dict[str, int]
    params_by_type: dict[str, int] = field(default_factory=dict)
    # training: the most activations and temporaries the forward and backward passes hold at any moment, even when
    # the optimizer step (or the end of the backward, all gradients made) is the moment the breakdown describes (the
    # part that sequence and tensor parallelism split)
    pass_activations: int = 0

    @property
    def total_bytes(self) -> int:
        return int(sum(self.breakdown.values()))

    @property
    def config_label(self) -> str:
        parts = [self.dtype if not self.quant else f"{self.quant} (compute {self.dtype})"]
        if self.gradient_checkpointing:
            parts.append("gradient checkpointing")
        parts.append(f"batch {self.batch} x {self.seq_len} tokens")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_bytes"] = self.total_bytes
        return d

    def rows(self) -> list[tuple[str, int]]:
        return [(BREAKDOWN_LABELS[k], self.breakdown[k]) for k in BREAKDOWN_KEYS if self.breakdown.get(k)]

    def __str__(self) -> str:
        lines = [f"{self.model}: {self.task}, {self.config_label}"]
        width = max(len(label) for label, _ in self.rows()) if self.rows() else 10
        for label, n in self.rows():
            lines.append(f"  {label:<{width}}  {format_bytes(n):>10}")
        lines.append(f"  {'total':<{width}}  {format_bytes(self.total_bytes):>10}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><td>{label}</td><td style='text-align:right'>{format_bytes(n)}</td></tr>"
                       for label, n in self.rows())
        return (f"<p><b>{self.model}</b>: {self.task}, {self.config_label}</p><table><tr><th>part</th><th>memory</th>"
                f"</tr>{body}<tr><td><b>total</b></td><td style='text-align:right'><b>{format_bytes(self.total_bytes)}"
                "</b></td></tr></table>")


# ---------------------------------------------------------------------------------------------------------- config
def packaged_configs() -> dict[str, Path]:
    """The config files the package carries for large well-known models: {hub id: path}."""
    out = {}
    for path in sorted(CONFIG_DIR.glob("*.json")):
        name = json.loads(path.read_text()).get("_name_or_path") or path.stem
        out[name] = path
    return out


def _find_packaged(name: str) -> Path | None:
    """A packaged config by hub id or short name; '-Instruct' variants share their base model's shapes."""
    keys = {name.lower().strip()}
    keys |= {k.split("/")[-1] for k in keys}
    keys |= {re.sub(r"-(instruct|chat|it)$", "", k) for k in keys}
    configs = packaged_configs()
    for hub_id, path in configs.items():
        if keys & {hub_id.lower(), hub_id.split("/")[-1].lower(), path.stem.lower()}:
            return path
    prefix = [path for hub_id, path in configs.items() if any(hub_id.split("/")[-1].lower().startswith(k)
                                                               for k in keys if len(k) >= 6)]
    return prefix[0] if len(prefix) == 1 else None


def load_config(model_or_config: Any):
    """A transformers config from a config object, a model, a local folder, a packaged config name or a hub id."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config
    if hasattr(model_or_config, "config") and isinstance(model_or_config.config, PretrainedConfig):
        return model_or_config.config
    if not isinstance(model_or_config, (str, Path)):
        raise ConfigError(f"estimate() needs a model name, a folder, a config or a model, not {type(model_or_config)}.")
    name = str(model_or_config)
    if Path(name, "config.json").is_file():
        cfg = AutoConfig.from_pretrained(name)
        cfg._name_or_path = Path(name).name  # a folder's name, not its absolute path (it ends up in outputs)
        return cfg
    packaged = _find_packaged(name)
    if packaged is not None:
        data = json.loads(packaged.read_text())
        data.pop("_name_or_path", None)
        model_type = data.pop("model_type")
        cfg = AutoConfig.for_model(model_type, **data)
        cfg._name_or_path = name
        return cfg
    try:
        from . import assets

        local = assets.resolve(name)
        if Path(local, "config.json").is_file():
            cfg = AutoConfig.from_pretrained(local)
            cfg._name_or_path = name
            return cfg
    except Exception:  # noqa: BLE001 - fall through to the hub (online) or a clear error below
        pass
    try:
        return AutoConfig.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001
        known = ", ".join(packaged_configs()) or "none"
        raise ConfigError(f"no config found for {name!r} ({type(exc).__name__}). Fix: pass a local folder with a "
                          f"config.json, a transformers config object, or a packaged config: {known}.") from exc


def _model_name(config) -> str:
    return getattr(config, "_name_or_path", "") or (config.architectures or [config.model_type])[0]


def _with_layers(config, n: int, decoder: int | None = None):
    """A copy with `n` layers (an encoder-decoder: `n` encoder and `decoder` (default `n`) decoder layers)."""
    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = n
    key = _decoder_depth_key(config)
    if key is not None:
        setattr(cfg, key, n if decoder is None else decoder)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = list(cfg.layer_types)[:n]
    return cfg


def _num_layers(config) -> int:
    return int(config.num_hidden_layers)


_DECODER_DEPTH = ("num_decoder_layers", "decoder_layers")  # T5's name, BART's name


def _decoder_depth_key(config) -> str | None:
    """The attribute that holds an encoder-decoder's decoder depth (T5's or BART's name), else None."""
    if not getattr(config, "is_encoder_decoder", False):
        return None
    return next((k for k in _DECODER_DEPTH if getattr(config, k, None) is not None), "num_hidden_layers")


def _decoder_layers(config) -> int | None:
    """The decoder's depth of an encoder-decoder (T5, BART), else None."""
    key = _decoder_depth_key(config)
    return None if key is None else int(getattr(config, key))


ONE_BLOCK = {"largest_small"}  # simulation results that are one block's size: they do not grow with depth


def _depth_extrapolated(config, run) -> dict[str, Any]:
    """`run(cfg)` -> dict of numbers, at the full depth from 2- and 3-layer copies: every layer of a stack has the same
    shapes, so each adds the same. An encoder-decoder varies its two stacks separately (three small runs)."""
    n, d = _num_layers(config), _decoder_layers(config)
    if n <= 3 and (d is None or d <= 3):
        return run(config)
    if d is None:
        r2, r3 = run(_with_layers(config, 2)), run(_with_layers(config, 3))
        line = {k: r3[k] + (r3[k] - r2[k]) * (n - 3) for k in r2}
        runs = (r2, r3)
    else:
        base, enc, dec = (run(_with_layers(config, 2, 2)), run(_with_layers(config, 3, 2)),
                          run(_with_layers(config, 2, 3)))
        line = {k: base[k] + (enc[k] - base[k]) * (n - 2) + (dec[k] - base[k]) * (d - 2) for k in base}
        runs = (base, enc, dec)
    for k in ONE_BLOCK.intersection(line):  # one block's size: the largest of the runs, not a line
        line[k] = max(r[k] for r in runs)
    return line


# ------------------------------------------------------------------------------------------------ counting weights
@meta_patches()
def _count(config, dtype: Dtype, quant: Quant | None, lora_r: int | None, double_quant: bool) -> dict[str, Any]:
    model = meta_model(config, dtype)
    seen, by_type, total = set(), {}, 0
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            by_type[type(module).__name__] = by_type.get(type(module).__name__, 0) + p.numel()
            total += p.numel()
    wbytes = total * dtype_bytes(dtype)
    quantized = quantized_modules(model) if quant else {}
    largest_q = 0
    for din, dout in quantized.values():
        n = din * dout
        largest_q = max(largest_q, n)
        wbytes -= n * dtype_bytes(dtype)
        if quant == "int8":
            wbytes += n + 4 * dout  # int8 weights + one fp32 scale per output row
        else:
            blocks = -(-n // NF4_BLOCK)
            wbytes += n // 2 + (blocks + 4 * -(-blocks // DQ_BLOCK) if double_quant else 4 * blocks)
    largest = max((p.numel() for p in model.parameters()), default=0)
    # the gradients of full fine-tuning are freed and made again at every step: those under glibc's mmap ceiling
    # come from (and go back to) its heaps
    small = sum(p.numel() * dtype_bytes(dtype) for p in _unique_params(model)
                if p.numel() * dtype_bytes(dtype) <= MMAP_THRESHOLD_MAX)
    adapter_params = add_lora(model, lora_config(model, r=lora_r)).get_nb_trainable_parameters()[0] if lora_r else 0
    return {"params": total, "by_type": by_type, "weight_bytes": wbytes, "adapter_params": adapter_params,
            "largest_quantized": largest_q, "largest_param": largest, "small_param_bytes": small}


def _unique_params(model):
    seen = set()
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            yield p


@functools.lru_cache(maxsize=256)
def _simulate_cached(config_json: str, model_type: str, *args) -> dict[str, int]:
    from transformers import AutoConfig

    data = json.loads(config_json)
    data.pop("model_type", None)
    return simulate(AutoConfig.for_model(model_type, **data), *args)


def _extrapolate(config, task, dtype, quant, batch, seq_len, lora_r, gc, device) -> dict[str, int]:
    def run(cfg):
        return _simulate_cached(cfg.to_json_string(use_diff=False), cfg.model_type, task, dtype, quant, batch,
                                seq_len, lora_r, gc, device)

    n, sim = _num_layers(config), None
    if _decoder_layers(config) is None and n > 3:
        sim = _trace_extrapolated(run(_with_layers(config, 2)), run(_with_layers(config, 3)), n)
    if sim is None:  # an encoder-decoder, a shallow model, or runs whose parts do not pair: the peaks, on lines
        sim = _depth_extrapolated(config, lambda cfg: {k: v for k, v in run(cfg).items()
                                                       if k not in ("trace", "marks")})
    return {k: max(0, v) for k, v in sim.items()}


def _trace_extrapolated(r2: dict, r3: dict, n: int) -> dict[str, int] | None:
    """The simulation's peak at depth `n` from the traces of its 2- and 3-layer runs, part by part.

    The peak's moment can move with depth: a short stack peaks at the end of the backward pass (the embeddings'
    gradients), a deep one at the end of the forward pass (every layer's activations with the logits); extrapolating
    the two runs' peaks as one straight line then misses (by the embeddings' gradients at SmolLM2-135M's shape). So
    the runs are cut where the simulation marked them (each layer's forward, the backward, each layer's backward:
    `simulation._LayerMarks`), each part of the 3-layer run is paired with the same part of the 2-layer run (the
    first layer with the first, the last with the last; a middle layer lies between the two), every operation's bytes
    are extrapolated to depth `n` on their own, and the peak is the largest of them. None without marks, or with
    parts that do not pair (the caller then extrapolates the two peaks, `_depth_extrapolated`).
    """
    import numpy as np

    parts2, parts3 = _parts(r2, 2), _parts(r3, 3)
    if not parts3 or set(parts2) != set(parts3):
        return None
    at_depth = []
    for role, ops3 in parts3.items():
        ops2 = parts2[role]
        if len(ops2) != len(ops3):  # the same part with other operations (rare): its peaks, paired
            if not (len(ops2) and len(ops3)):
                continue
            ops2, ops3 = ops2[[ops2[:, 0].argmax()]], ops3[[ops3[:, 0].argmax()]]
        at_depth.append(ops3 + (ops3 - ops2) * (n - 3))
    every = np.concatenate(at_depth)
    live, small, large, grads, kv = (int(x) for x in every[every[:, 0].argmax()])
    return {"peak": live, "gradients": grads, "kv": kv, "activations": live - grads - kv,
            "small_peak": int(every[:, 1].max()), "large_peak": int(every[:, 2].max()),
            "largest_small": max(r2["largest_small"], r3["largest_small"]),  # ONE_BLOCK: not a line
            "activation_peak": int((every[:, 0] - every[:, 3] - every[:, 4]).max())}


def _parts(run: dict, layers: int) -> dict:
    """A simulated run's trace cut at its marks: {role: operations}, the role naming the first and the last layer
    alike at every depth; a middle layer's parts are left out. Empty if the run has no marks or a role twice."""
    trace, marks = run.get("trace"), run.get("marks", ())
    if trace is None or not marks:
        return {}
    # where two marks fall on the same operation (a layer's backward ends where the next one's starts), the end
    # comes first, so that the operations after them belong to the layer that starts
    cuts = [("start", -1, 0), *sorted(marks, key=lambda m: (m[2], not m[0].endswith("_end")))]
    parts: dict = {}
    for (kind, layer, begin), (_, _, end) in zip(cuts, [*cuts[1:], ("end", -1, len(trace))]):
        if layer == -1:
            role: tuple = (kind,)
        elif layer in (0, layers - 1):
            role = (kind, "first" if layer == 0 else "last")
        else:
            continue
        if role in parts:
            return {}
        parts[role] = trace[begin:end]
    return parts


@functools.lru_cache(maxsize=256)
def _count_cached(config_json: str, model_type: str, dtype, quant, lora_r, double_quant):
    from transformers import AutoConfig

    data = json.loads(config_json)
    data.pop("model_type", None)
    return _count(AutoConfig.for_model(model_type, **data), dtype, quant, lora_r, double_quant)


def _count_extrapolated(config, dtype, quant, lora_r, double_quant) -> dict[str, Any]:
    largest = {}

    def run(cfg):
        c = _count_cached(cfg.to_json_string(use_diff=False), cfg.model_type, dtype, quant, lora_r, double_quant)
        largest.update(largest_quantized=c["largest_quantized"], largest_param=c["largest_param"])  # any depth's
        return {**{k: c[k] for k in ("params", "weight_bytes", "adapter_params", "small_param_bytes")},
                **{("type", t): n for t, n in c["by_type"].items()}}

    flat = _depth_extrapolated(config, run)
    out = {k: v for k, v in flat.items() if not isinstance(k, tuple)}
    out["by_type"] = {k[1]: v for k, v in flat.items() if isinstance(k, tuple)}
    return {**out, **largest}


def kv_cache_bytes(config, batch: int, tokens: int, dtype: Dtype = "bf16") -> int:
    """Bytes of a KV cache: 2 (keys and values) x layers x kv heads x head dim x batch x tokens x bytes."""
    heads = (getattr(config, "decoder_attention_heads", None) or getattr(config, "num_attention_heads", None)
             or config.n_head)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or config.hidden_size // heads
    layers = _decoder_layers(config) or _num_layers(config)  # an encoder-decoder caches in its decoder only
    return 2 * layers * kv_heads * head_dim * batch * tokens * dtype_bytes(dtype)


DECODE_SCORE_COPIES = 3  # float32 copies of the next token's scores while one is chosen: generate's own, and two


def decode_scores_bytes(config, batch: int, dtype: Dtype = "bf16") -> int:
    """Bytes a decoding step holds besides the cache: the last position's logits (in the model's dtype), the float32
    copy `generate` makes of them and the copies a logits processor makes (min_new_tokens: a clone and the masked
    result, with a vocabulary-long range and mask), `DECODE_SCORE_COPIES` in all. Sampling with top-k or top-p sorts
    them as well and holds more. With a 152k vocabulary this moment, not the prompt's forward, is the peak."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", 0) or 0
    return batch * vocab * (dtype_bytes(dtype) + 4 * DECODE_SCORE_COPIES) + vocab * 9  # int64 range, bool mask


# ------------------------------------------------------------------------------------------------------ the public
def estimate(model_or_config: Any, task: Task = "inference", *, dtype: Dtype | None = None, quant: Quant | None = None,
             batch: int = 1, seq_len: int = 512, lora_r: int = 16, gradient_checkpointing: bool = False,
             new_tokens: int = 32, double_quant: bool = True, device: str = "cpu") -> Estimate:
    """Estimate the peak memory of `task` for a model, in bytes, without loading any weight.

    model_or_config: a hub id or alias (packaged configs for large models work offline), a local folder, a
        transformers config, or a model (its config is used).
    task: "inference" (generation: a forward over batch x seq_len prompt tokens keeping the last position's logits,
        then `new_tokens` generated with a KV cache), "eval" (one forward pass without gradients over whole
        sequences, with logits at every position and the loss: perplexity, scoring, classification,
        `Trainer.evaluate`), "full" (training every weight with AdamW), "lora" (adapters on all linear layers, base
        frozen) or "qlora" (the same on a 4-bit base: quant defaults to "nf4"). Training assumes the loop lets go of
        the model's output before backward, as `Trainer` and `loss = model(...).loss` do; keeping `out` alive holds
        its logits too (batch x seq_len x vocabulary floats, docs/memory.md).
    dtype: "fp32", "bf16" or "fp16": the weights' dtype (for a quantized model, the compute dtype of the layers
        that stay unquantized). Default fp32, or bf16 with quantization.
    quant: None, "int8" or "nf4" (bitsandbytes); not allowed with task="full".
    device: "cpu" or "cuda": which attention kernel runs (a fused kernel keeps no attention scores: always on CUDA,
        on a CPU where torch picks its flash kernel) and the optimizer's temporary memory (foreach AdamW on GPUs).
    """
    task, quant, dtype = parse_task(task), parse_quant(quant), parse_dtype(dtype)
    if task == "qlora" and quant is None:
        quant = "nf4"
    if task == "full" and quant:
        raise ConfigError(f"full fine-tuning cannot train {quant} weights. Fix: task='qlora' (adapters on a "
                          "quantized base) or quant=None.")
    dtype = dtype or ("bf16" if quant else "fp32")
    if batch < 1 or seq_len < 1:
        raise ConfigError(f"batch ({batch}) and seq_len ({seq_len}) must be at least 1.")
    config = load_config(model_or_config)
    lora = lora_r if task in ("lora", "qlora") else None
    counts = _count_extrapolated(config, dtype, quant, lora, double_quant)
    gc = bool(gradient_checkpointing) and task not in FORWARD_ONLY
    sim = _extrapolate(config, task, dtype, quant, batch, seq_len, lora, gc, device)
    wb = dtype_bytes(dtype)
    breakdown = dict.fromkeys(BREAKDOWN_KEYS, 0)
    breakdown["weights"] = counts["weight_bytes"]
    if task == "inference":
        kv = kv_cache_bytes(config, batch, seq_len + new_tokens, dtype) if sim["kv"] else 0
        breakdown["kv_cache"] = kv
        breakdown["activations"] = max(sim["activations"] + max(0, sim["kv"] - kv),
                                       decode_scores_bytes(config, batch, dtype) if sim["kv"] else 0)
        trainable = 0
    elif task == "eval":  # the cache transformers builds by default (use_cache) is alive with the logits
        breakdown["kv_cache"], breakdown["activations"] = sim["kv"], sim["activations"]
        trainable = 0
    else:
        if task == "full":
            trainable, state_bytes = counts["params"], wb
            all_grads = counts["params"] * wb
            step_temp = all_grads if device == "cuda" else 2 * counts["largest_param"] * wb
        else:
            trainable, state_bytes = counts["adapter_params"], 4  # peft keeps adapters in fp32
            breakdown["adapters"] = trainable * 4
            all_grads = trainable * 4
            step_temp = all_grads
        breakdown["optimizer"] = 2 * trainable * state_bytes
        if all_grads + step_temp > sim["peak"]:  # the optimizer step is the peak moment
            breakdown["gradients"], breakdown["activations"] = all_grads, step_temp
        else:
            breakdown["gradients"], breakdown["activations"] = sim["gradients"], sim["activations"]
    if device == "cpu":
        small_share, remade_share, largest_times, floor = CPU_RETENTION[task]
        remade = {"inference": breakdown["kv_cache"], "full": counts["small_param_bytes"]}.get(task, 0)
        breakdown["overhead"] = int(small_share * sim["small_peak"] + remade_share * remade
                                    + largest_times * sim["largest_small"] + floor * 2**20)
    return Estimate(model=_model_name(config), task=task, dtype=dtype, quant=quant, batch=batch, seq_len=seq_len,
                    gradient_checkpointing=gc, lora_r=lora, new_tokens=new_tokens if task == "inference" else 0,
                    device=device, params=counts["params"], trainable_params=trainable,
                    breakdown={k: int(v) for k, v in breakdown.items()}, params_by_type=counts["by_type"],
                    pass_activations=int(sim["activation_peak"]) if task not in FORWARD_ONLY else 0)
