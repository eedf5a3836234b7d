"""Can I run (or fine-tune) this model here, and how? `plan(model, budget=..., task=...)` answers.

It tries the configurations a careful engineer would, in this order, and keeps the first that fits the budget:
full precision (fp32), half precision (bf16, or fp16 where the hardware has no bf16), 8-bit weights, 4-bit (nf4)
weights, gradient checkpointing (training only), then smaller batches. Full fine-tuning cannot use quantized
weights, and QLoRA starts at 4-bit. The result is a `Plan`: the chosen configuration, its memory breakdown
(`plan.estimate`), a plain-words explanation, an HTML table in notebooks and a bar chart (`plan.plot()`).

Command line: `llmcourse plan MODEL --task qlora --budget 4GiB [--json]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .device import HardwareCard, simulated_card
from .errors import ConfigError, HardwareError, MemoryBudgetError
from .memory import BREAKDOWN_KEYS, BREAKDOWN_LABELS, Estimate, estimate, format_bytes, load_config, parse_size
from .types import FORWARD_ONLY, Dtype, Quant, Task, parse_dtype, parse_quant, parse_task

__all__ = ["Plan", "compute_dtypes", "plan"]

CPU_MARGIN = 0.8  # of the available RAM: the OS, the notebook and the data need the rest
GPU_MARGIN = 0.9  # of the free GPU memory
CUDA_CONTEXT = 512 * 2**20  # the CUDA context and kernels take about this much outside torch's allocator


def _card(device: HardwareCard | str | None) -> HardwareCard:
    if device is None:
        from .device import detect

        return detect()
    if isinstance(device, str):
        return simulated_card(device)
    return device


def _default_budget(card) -> tuple[int, str]:
    free = int(card.free_memory)
    if card.kind == "cuda":
        budget = int(free * GPU_MARGIN) - CUDA_CONTEXT
        why = (f"{int(GPU_MARGIN * 100)}% of the {format_bytes(free)} free on {card.name}, minus "
               f"{format_bytes(CUDA_CONTEXT)} for the CUDA context")
    else:
        budget = int(free * CPU_MARGIN)
        why = f"{int(CPU_MARGIN * 100)}% of the {format_bytes(free)} of memory available on {card.name}"
    return max(budget, 0), why


@dataclass
class Plan:
    """The configuration chosen for a model, a task and a memory budget, and why."""

    model: str
    task: Task
    budget_bytes: int
    budget_reason: str
    device: str
    estimate: Estimate
    fits: bool
    tried: list[tuple[str, int, bool]] = field(default_factory=list)  # (configuration, bytes, fits)
    notes: list[str] = field(default_factory=list)

    dtype = property(lambda self: self.estimate.dtype)
    quant = property(lambda self: self.estimate.quant)
    gradient_checkpointing = property(lambda self: self.estimate.gradient_checkpointing)
    batch = property(lambda self: self.estimate.batch)
    seq_len = property(lambda self: self.estimate.seq_len)
    total_bytes = property(lambda self: self.estimate.total_bytes)
    breakdown = property(lambda self: self.estimate.breakdown)

    @property
    def explanation(self) -> str:
        e = self.estimate
        lines = [f"Budget: {format_bytes(self.budget_bytes)} ({self.budget_reason})."]
        lines += self.notes
        for label, n, ok in self.tried:
            lines.append(f"  {label}: {format_bytes(n)}, {'fits' if ok else 'does not fit'}.")
        biggest = max(e.rows(), key=lambda r: r[1])
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"Plan: {e.config_label} {verdict}: {format_bytes(e.total_bytes)} of "
                     f"{format_bytes(self.budget_bytes)} ({100 * e.total_bytes / max(self.budget_bytes, 1):.0f}%). "
                     f"The largest part is {biggest[0]} ({format_bytes(biggest[1])}).")
        return "\n".join(lines)

    def load_kwargs(self) -> dict[str, Any]:
        """Arguments for `llmcourse.load_model` that apply this plan."""
        return {"dtype": self.dtype, "quant": self.quant}

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {"model": self.model, "task": self.task, "device": self.device, "budget_bytes": self.budget_bytes,
                "total_bytes": e.total_bytes, "breakdown": dict(e.breakdown), "dtype": e.dtype, "quant": e.quant,
                "gradient_checkpointing": e.gradient_checkpointing, "batch": e.batch, "seq_len": e.seq_len,
                "lora_r": e.lora_r, "params": e.params, "trainable_params": e.trainable_params, "fits": self.fits,
                "tried": [{"configuration": c, "total_bytes": n, "fits": ok} for c, n, ok in self.tried],
                "explanation": self.explanation}

    def __str__(self) -> str:
        return f"{self.model} ({self.task})\n{self.explanation}\n\n{self.estimate}"

    def _repr_html_(self) -> str:
        tried = "".join(f"<tr><td>{c}</td><td style='text-align:right'>{format_bytes(n)}</td>"
                        f"<td>{'yes' if ok else 'no'}</td></tr>" for c, n, ok in self.tried)
        notes = "".join(f"<li>{n}</li>" for n in self.notes)
        return (f"<p><b>{self.model}</b>, task <b>{self.task}</b>, budget {format_bytes(self.budget_bytes)} "
                f"({self.budget_reason})</p>{'<ul>' + notes + '</ul>' if notes else ''}"
                f"<table><tr><th>configuration tried</th><th>estimated peak</th><th>fits</th></tr>{tried}</table>"
                + self.estimate._repr_html_())

    def plot(self, ax=None):
        """A horizontal stacked bar of the breakdown with the budget as a red line; returns the matplotlib axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 1.8))
        left = 0.0
        for key in BREAKDOWN_KEYS:
            n = self.estimate.breakdown.get(key, 0) / 2**30
            if n > 0:
                ax.barh([0], [n], left=left, label=f"{BREAKDOWN_LABELS[key]} ({n:.2f} GiB)")
                left += n
        ax.axvline(self.budget_bytes / 2**30, color="red", linestyle="--", label="budget")
        ax.set_yticks([])
        ax.set_xlabel("GiB")
        ax.set_title(f"{self.model}: {self.task}, {self.estimate.config_label}", fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        return ax


def compute_dtypes(card: HardwareCard) -> tuple[Dtype, Dtype]:
    """(half precision, compute dtype of 8/4-bit layers) on this hardware card.

    Half precision is bf16, or fp16 on a GPU without bf16. Quantized layers dequantize to their compute dtype on every
    call; a CPU without AVX512-BF16/AMX emulates bf16 maths (about 15x slower than fp32 for SmolLM2's layers on an
    AVX2 CPU), so there they compute in fp32.
    """
    cpu = card.kind != "cuda"
    half = "bf16" if card.bf16 or cpu else "fp16"
    return half, ("fp32" if cpu and not card.bf16 else half)


def _candidates(task: Task, half: Dtype, quant_ok: bool, dtype: Dtype | None, quant: Quant | None,
                qdt: Dtype | None = None) -> list[tuple[Dtype, Quant | None]]:
    """(dtype, quant) in the order a careful engineer tries them; qdt: the compute dtype of quantized layers."""
    qdt = qdt or half
    if dtype or quant:
        if task == "qlora" and not quant:
            quant = "nf4"
        return [(dtype or (qdt if quant else "fp32"), quant)]
    if task == "full":
        return [("fp32", None), (half, None)]
    if task == "qlora":
        return [(qdt, "nf4")]
    out = [("fp32", None), (half, None)]
    if quant_ok:
        out += [(qdt, "int8"), (qdt, "nf4")]
    return out


def _cpu_blind_spots(kind: str, est, model) -> list[str]:
    """On a CPU (docs/memory.md): kernels that hold memory no operator returns, which the estimate measurably misses,
    and what the plan assumes to avoid one."""
    if kind != "cpu":
        return []
    notes = []
    if est.task == "eval":
        notes.append("on a CPU, an eval loop keeps memory beyond its tensors that the allocator term does not follow: "
                     "at a learner's scale (five shapes, fp32, docs/memory.md) the highest resident peak was up to 9% "
                     "above the plan's total. Keep about 10% more room, or call the model with use_cache=False (a "
                     "perplexity loop needs no cache).")
    if est.dtype == "fp32":
        return notes
    if est.quant:
        notes.append(f"on a CPU, {est.quant} layers computing in {est.dtype} hold memory inside bitsandbytes' kernels "
                     "that the estimate cannot see: measured up to 2.4x the plan's total with glibc's defaults. "
                     "Budget more, or compute in fp32.")
    from .experts import cpu_experts_in_float32

    if cpu_experts_in_float32(load_config(model), est.dtype, kind):
        notes.append(f"a mixture of experts in {est.dtype} on a CPU: planned with its experts multiplied one by one in "
                     "fp32 (llmcourse.experts), as load_model runs them. transformers' own grouped matmul in "
                     f"{est.dtype} runs through oneDNN there, which keeps memory for every new split of the tokens "
                     "among the experts, and the process grows from step to step (+226 MiB over 200 random splits "
                     "of 1,024 tokens among 8 experts, still growing). Loading the model yourself: call "
                     "llmcourse.experts.limit_expert_memory(model), or use fp32.")
    return notes


def plan(model: Any, budget: Any = None, task: Task = "inference", batch: int = 1, seq_len: int = 512, *,
         dtype: Dtype | None = None, quant: Quant | None = None, lora_r: int = 16,
         gradient_checkpointing: bool | None = None, new_tokens: int = 32,
         device: HardwareCard | str | None = None) -> Plan:
    """Choose how to run `task` for `model` within `budget` bytes (default: the device's free memory, with a margin).

    model: a hub id or alias, a local folder, a config or a model (see `llmcourse.estimate`).
    budget: bytes, or a string like "4GiB", "4GB", "4096MiB".
    task: "inference" (generation), "eval" (a forward pass with logits at every position: perplexity, scoring),
        "full", "lora" or "qlora".
    dtype, quant, gradient_checkpointing: fix these instead of choosing them (the plan then only reports whether
        that configuration fits, and lowers nothing).
    device: the hardware to plan for: None (this machine, `llmcourse.detect()`), a card from `detect()`, or a
        simulated one by name ("t4", "a100", "4090", "cpu").
    Raises MemoryBudgetError when nothing fits, with the smallest configuration's numbers and what to change.
    """
    task, dtype, quant = parse_task(task), parse_dtype(dtype), parse_quant(quant)
    if task == "full" and quant:
        raise ConfigError("full fine-tuning trains every weight, so the weights cannot be quantized. Fix: "
                          "task 'qlora' for adapters on a quantized model.")
    card = _card(device)
    kind = "cuda" if card.kind == "cuda" else "cpu"
    notes = []
    if budget is None:
        budget_bytes, reason = _default_budget(card)
    else:
        budget_bytes, reason = parse_size(budget), "given"
    half, qdt = compute_dtypes(card)
    if kind == "cuda" and not card.bf16:
        cc = card.compute_capability
        notes.append(f"{card.name} has no bf16 (compute capability {cc[0]}.{cc[1]} < 8.0): half precision is fp16."
                     if cc else f"{card.name} has no bf16: half precision is fp16.")
    if qdt != half:
        notes.append("this CPU has no fast bf16 (AVX512-BF16 or AMX): 8-bit and 4-bit layers compute in fp32.")
    quant_ok = bool(getattr(card, "bnb_4bit", True))
    if not quant_ok:
        notes.append("bitsandbytes cannot quantize on this device, so int8 and nf4 are not tried.")
        if quant or task == "qlora":
            raise HardwareError(f"{quant or 'nf4'} needs bitsandbytes, which does not work on {card.name}. "
                                "Fix: pip install bitsandbytes, or use task='lora' without quantization.")
    fixed = dtype is not None or quant is not None or gradient_checkpointing is not None
    if dtype == "bf16" and kind == "cuda" and not card.bf16:
        raise HardwareError(f"{card.name} cannot compute in bf16 (compute capability "
                            f"{'.'.join(map(str, card.compute_capability or ()))} < 8.0). Fix: dtype='fp16'.")
    common = dict(lora_r=lora_r, new_tokens=new_tokens, device=kind)
    tried: list[tuple[str, int, bool]] = []

    def attempt(dt, q, gc, b):
        est = estimate(model, task, dtype=dt, quant=q, batch=b, seq_len=seq_len, gradient_checkpointing=gc, **common)
        ok = est.total_bytes <= budget_bytes
        tried.append((est.config_label, est.total_bytes, ok))
        return est, ok

    chosen = None
    training = task not in FORWARD_ONLY
    gc_options = [bool(gradient_checkpointing)] if gradient_checkpointing is not None else [False]
    for dt, q in _candidates(task, half, quant_ok, dtype, quant, qdt):
        for gc in gc_options:
            est, ok = attempt(dt, q, gc, batch)
            if ok:
                chosen = est
                break
        if chosen:
            break
    if chosen is None and not fixed:
        dt, q = _candidates(task, half, quant_ok, dtype, quant, qdt)[-1]
        gc = training
        b = batch
        if training:
            est, ok = attempt(dt, q, True, b)
            chosen = est if ok else None
        while chosen is None and b > 1:
            b //= 2
            est, ok = attempt(dt, q, gc, b)
            chosen = est if ok else None
    name = est.model if chosen is None else chosen.model
    notes += _cpu_blind_spots(kind, chosen or est, model)
    if chosen is None and fixed:
        return Plan(model=name, task=task, budget_bytes=budget_bytes, budget_reason=reason, device=card.name,
                    estimate=est, fits=False, tried=tried, notes=notes)
    if chosen is None:
        smallest = min(tried, key=lambda t: t[1])
        raise MemoryBudgetError(
            f"{name} cannot run task '{task}' in {format_bytes(budget_bytes)}: the smallest configuration "
            f"({smallest[0]}) needs {format_bytes(smallest[1])}, {format_bytes(smallest[1] - budget_bytes)} more "
            f"than the budget ({reason}). Fix: a smaller model, a shorter seq_len than {seq_len}, "
            + ("task='qlora' (4-bit base with adapters), " if task in ("full", "lora") else "")
            + "or a machine with more memory.", needed_bytes=smallest[1], budget_bytes=budget_bytes)
    return Plan(model=name, task=task, budget_bytes=budget_bytes, budget_reason=reason, device=card.name,
                estimate=chosen, fits=True, tried=tried, notes=notes)
