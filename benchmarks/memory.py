"""Check the memory estimator against measurements: `python -m benchmarks.memory` (from the repository root).

Every row runs in a fresh Python process, so that nothing from another row stays in memory:

1. import torch/transformers/peft, build a tiny model of the same architecture and run the same task once (this
   loads the libraries' code and thread pools), free it and record the resident memory: the *baseline*;
2. build (or load, for 4-bit) the row's model and reset the kernel's peak counter;
3. run the task (generate, or two training steps) and read the peak resident memory (Linux VmHWM).

measured = peak - baseline is compared with `llmcourse.estimate(...)` for the same configuration. On a CPU the
worker runs with a fixed glibc mmap threshold, so that freed tensors go back to the system at once and the peak is
the memory the tensors held (the same from run to run); the estimate is then taken without its "CPU allocator
slack" term, which stands for what glibc's default settings keep back (`--resident-repeats N` measures that too, and
`--add-resident FILE --threads T` adds runs at another thread count to rows measured earlier).
On a GPU the measurement is `torch.cuda.max_memory_allocated()`. A second table compares `prepare_qlora` with the plain
peft recipe (prepare_model_for_kbit_training + get_peft_model) on the same 4-bit model: peak memory, step time and
loss after N steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmcourse.experts import limit_expert_memory
from llmcourse.surgery import keep_in_float, meta_model
from llmcourse.types import FORWARD_ONLY, torch_dtype

ROOT = Path(__file__).resolve().parents[1]  # the worker runs `-m benchmarks.memory` from here
RESULTS = Path(__file__).resolve().parent / "results"  # measured rows (--jsonl), compared again with --report

ARCHS = {
    "llama": {"S": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2),
              "M": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8,
                        num_key_value_heads=4)},
    "gpt2": {"S": dict(n_embd=256, n_layer=4, n_head=4), "M": dict(n_embd=512, n_layer=6, n_head=8)},
    "bert": {"S": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4),
             "M": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=8)},
    # Qwen2's 151,936-token vocabulary on a small body: the output layer and the loss dominate
    "qwen2": {"S": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2),
              "M": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2)},
    # a mixture of experts: 4 experts, 2 per token
    "mixtral": {"S": dict(hidden_size=256, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
                "M": dict(hidden_size=512, intermediate_size=688, num_hidden_layers=6, num_attention_heads=8,
                          num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2)},
    "bart": {"S": dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
                       decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024),
             "M": dict(d_model=512, encoder_layers=6, decoder_layers=4, encoder_attention_heads=8,
                       decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048)},
    # --- set aside, never measured while the estimator is tuned (HELD_OUT): untied GQA with one key/value head,
    # GPT-NeoX (untied, parallel residual), T5 (relative positions), a Qwen2 MoE (shared expert, 152k vocabulary),
    # DeBERTa-v2 (disentangled attention) and Phi-3 (fused projections)
    "t5": {"S": dict(d_model=256, d_ff=1024, d_kv=64, num_layers=4, num_decoder_layers=4, num_heads=4),
           "M": dict(d_model=512, d_ff=2048, d_kv=64, num_layers=6, num_decoder_layers=4, num_heads=8)},
    "qwen2_moe": {"S": dict(hidden_size=128, intermediate_size=352, moe_intermediate_size=96,
                            shared_expert_intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, num_experts=8, num_experts_per_tok=2),
                  "M": dict(hidden_size=256, intermediate_size=704, moe_intermediate_size=192,
                            shared_expert_intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                            num_key_value_heads=2, num_experts=8, num_experts_per_tok=2)},
}
# the held-out decoders and encoder take the tuning half's sizes, with their own attention
ARCHS["mistral"] = {s: dict(kw, num_key_value_heads=kw["num_attention_heads"] // 4) for s, kw in ARCHS["llama"].items()}
ARCHS["phi3"] = {s: dict(kw, num_key_value_heads=kw["num_attention_heads"]) for s, kw in ARCHS["llama"].items()}
ARCHS["gpt_neox"] = {s: dict(kw) for s, kw in ARCHS["bert"].items()}
ARCHS["deberta_v2"] = {s: dict(kw) for s, kw in ARCHS["bert"].items()}
TUNING = ("llama", "gpt2", "bert", "qwen2", "mixtral", "bart")
HELD_OUT = ("mistral", "gpt_neox", "t5", "qwen2_moe", "deberta_v2", "phi3")
VOCAB = 16000
# the worker's intra-op threads. Rows record the thread count of each glibc-default run (`resident_threads`, runs
# without one had BENCH_THREADS): the course's thread policy gives a kernel one thread on a busy machine
BENCH_THREADS = 2
THREADS_ENV = "LLMCOURSE_BENCH_THREADS"
VOCABS = {"qwen2": 151_936, "qwen2_moe": 151_936}  # the rest use VOCAB
TASK_ROWS = [  # (task, dtype, quant, gradient_checkpointing); "compute": the 4-bit compute dtype `plan` picks here
    *((task, dtype, None, False) for dtype in ("fp32", "bf16") for task in ("inference", "eval", "full", "lora")),
    ("qlora", "compute", "nf4", True),
]


def compute_dtype() -> str:
    """The compute dtype `plan` gives 4-bit layers on this machine."""
    from llmcourse.device import detect
    from llmcourse.planner import compute_dtypes

    return compute_dtypes(detect(probe_bnb=False))[1]


FAMILIES = {  # arch: (transformers config class, model class, settings shared by both sizes)
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(max_position_embeddings=1024, tie_word_embeddings=True)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_positions=1024, bos_token_id=0, eos_token_id=0)),
    "bert": ("BertConfig", "BertForSequenceClassification", dict(max_position_embeddings=1024, num_labels=3)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(max_position_embeddings=1024, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(max_position_embeddings=1024, tie_word_embeddings=False)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(max_position_embeddings=1024)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(max_position_embeddings=1024, tie_word_embeddings=False)),
    "bart": ("BartConfig", "BartForConditionalGeneration", dict(max_position_embeddings=1024, pad_token_id=1,
                                                                 decoder_start_token_id=2)),
    "t5": ("T5Config", "T5ForConditionalGeneration", dict(decoder_start_token_id=0, pad_token_id=0)),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", dict(max_position_embeddings=1024,
                                                               tie_word_embeddings=True)),
    "deberta_v2": ("DebertaV2Config", "DebertaV2ForSequenceClassification", dict(max_position_embeddings=1024,
                                                                                 num_labels=3)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(max_position_embeddings=1024, tie_word_embeddings=False,
                                                   pad_token_id=0, bos_token_id=0, eos_token_id=0)),
}
DEPTH_KEYS = {"gpt2": ("n_layer",), "t5": ("num_layers", "num_decoder_layers"),
              "bart": ("encoder_layers", "decoder_layers")}  # else num_hidden_layers


def make_config(arch: str, size: str):
    """The benchmark's model configs (`FAMILIES`), two sizes each (`ARCHS`), or `size` as JSON settings."""
    import transformers

    config_class, model_class, fixed = FAMILIES[arch]
    kw = dict(ARCHS[arch][size]) if size in ARCHS[arch] else json.loads(size)
    kw.setdefault("vocab_size", VOCABS.get(arch, VOCAB))
    cfg = getattr(transformers, config_class)(**fixed, **kw)
    cfg.architectures = [model_class]
    cfg._name_or_path = f"{arch}-{size}"
    return cfg


# ------------------------------------------------------------------------------------------------- in the worker
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _settle() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak resident size) to the current resident size


def _memory_now() -> int:
    import torch

    return torch.cuda.memory_allocated() if torch.cuda.is_available() else _status("VmRSS")


def _memory_peak() -> int:
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else _status("VmHWM")


def _build(spec: dict, cfg, ckpt: str | None):
    import torch
    import transformers

    tdtype = torch_dtype(spec["dtype"])
    cls = getattr(transformers, cfg.architectures[0])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec["quant"]:
        from transformers import BitsAndBytesConfig

        keep = keep_in_float(meta_model(cfg, spec["dtype"]))
        q = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=tdtype, llm_int8_skip_modules=keep) if spec["quant"] == "nf4"
             else BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep))
        model = cls.from_pretrained(ckpt, quantization_config=q, dtype=tdtype, device_map=device)
    else:
        with torch.device(device):
            model = cls._from_config(cfg, dtype=tdtype)
    limit_expert_memory(model)  # as load_model does for a mixture of experts in 16-bit on a CPU
    return model


def _run_task(spec: dict, model, steps: int) -> dict:
    import torch

    from llmcourse.qlora import prepare_lora, prepare_qlora

    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (spec["batch"], spec["seq_len"]), generator=g).to(device)
    seq_cls = type(model).__name__.endswith("ForSequenceClassification")
    labels = torch.randint(0, 3, (spec["batch"],), generator=g).to(device) if seq_cls else ids
    task = spec["task"]
    passes = spec.get("passes", 1)  # forward-only tasks: how many times the loop runs (a notebook's loop over batches)
    if task == "inference":
        model.eval()
        with torch.no_grad():
            for _ in range(passes):
                if seq_cls:
                    model(input_ids=ids)
                else:
                    model.generate(ids, max_new_tokens=spec["new_tokens"], min_new_tokens=spec["new_tokens"],
                                   do_sample=False, pad_token_id=0)
        return {}
    if task == "eval":  # what a perplexity or scoring loop does: logits at every position and the loss
        model.eval()
        losses = []
        with torch.no_grad():
            for _ in range(passes):
                out = model(input_ids=ids, labels=labels)
                losses.append(float(out.loss))
                del out
        return {"losses": losses}
    recipe = spec.get("recipe", "llmcourse")
    if task == "lora":
        model = prepare_lora(model, r=spec["lora_r"], gradient_checkpointing=spec["gc"], verbose=False)
    elif task == "qlora" and recipe == "peft":
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec["gc"])
        model = get_peft_model(model, LoraConfig(r=spec["lora_r"], lora_alpha=2 * spec["lora_r"], lora_dropout=0.05,
                                                 target_modules="all-linear"))
    elif task == "qlora":
        model = prepare_qlora(model, r=spec["lora_r"], gradient_checkpointing=spec["gc"], verbose=False)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.get("lr", 1e-4))
    losses, times = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=labels)
        loss = out.loss
        if not spec.get("keep_outputs"):  # as Trainer and `loss = model(...).loss` do: the logits go before backward
            del out
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
        del loss
        out = None  # a kept output lives until the step is done
        times.append(time.perf_counter() - t0)
    return {"losses": losses, "step_s": sorted(times)[len(times) // 2]}


def worker(spec: dict) -> dict:
    """Measure one row (run in a fresh process: `python -m benchmarks.memory _worker '<json>'`)."""
    import torch

    torch.set_num_threads(int(os.environ.get(THREADS_ENV, BENCH_THREADS)))
    torch.manual_seed(0)
    cfg = make_config(spec["arch"], spec["size"])
    tiny = make_config(spec["arch"], json.dumps(_warmup_kwargs(spec)))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = tiny_ckpt = None
        if spec["quant"]:
            import transformers

            cls = getattr(transformers, cfg.architectures[0])
            for c, sub in ((cfg, "model"), (tiny, "tiny")):
                m = cls._from_config(c, dtype=torch.bfloat16)
                m.save_pretrained(os.path.join(tmp, sub))
                del m
            ckpt, tiny_ckpt = os.path.join(tmp, "model"), os.path.join(tmp, "tiny")
        # warm-up: a 1-layer model of the same shapes runs the same task once (this loads the kernels for these
        # shapes, thread pools and allocator arenas: the framework's baseline), then it is freed
        _run_task(dict(spec, new_tokens=2, passes=1), _build(spec, tiny, tiny_ckpt), 1)
        _settle()
        baseline = _memory_now()
        model = _build(spec, cfg, ckpt)
        _settle()
        loaded = _memory_now() - baseline
        _reset_peak()
        result = _run_task(spec, model, spec["steps"])
        peak = _memory_peak() - baseline
    where = {"device": "cuda", "gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {"device": "cpu"}
    return dict(result, measured=peak, loaded=loaded, **where)


def _warmup_kwargs(spec: dict) -> dict:
    kw = dict(ARCHS[spec["arch"]][spec["size"]]) if spec["size"] in ARCHS[spec["arch"]] else json.loads(spec["size"])
    for key in DEPTH_KEYS.get(spec["arch"], ("num_hidden_layers",)):
        kw[key] = 1
    return kw


# ------------------------------------------------------------------------------------------------- in the parent
def _run_worker(spec: dict, fixed_mmap: bool = False, threads: int = BENCH_THREADS) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore",
               **{THREADS_ENV: str(threads)})
    if fixed_mmap:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "_worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"benchmark worker failed for {spec}:\n{proc.stderr[-3000:]}")


def measure(arch: str, size: str, task: str, dtype: str = "fp32", quant: str | None = None, gc: bool = False,
            batch: int = 4, seq_len: int = 128, new_tokens: int = 16, lora_r: int = 16, steps: int = 2,
            recipe: str = "llmcourse", repeats: int = 1, fixed_mmap: bool = False, keep_outputs: bool = False,
            blind: bool = False) -> dict:
    """Estimate and measure one configuration; the measurement is the median of `repeats` fresh processes.

    keep_outputs: training keeps the model's output (and so its logits) alive through backward, as a loop written
        `out = model(...); out.loss.backward()` does; by default it is dropped first, as `Trainer` does.
    fixed_mmap: on CPU, run the worker with a fixed glibc mmap threshold (128 KiB), so that every large tensor is
    returned to the system when freed: the peak is then the memory the tensors really held, the same from run to
    run (to compare two recipes); by default glibc raises the threshold as it goes and keeps freed blocks, so one
    row's peak varies by tens of MiB between runs, as it does in a notebook.
    blind: measure only (no estimate), for a held-out half measured before it is compared (`with_estimate` later).
    """
    dtype = compute_dtype() if dtype == "compute" else dtype
    spec = dict(arch=arch, size=size, task=task, dtype=dtype, quant=quant, gc=gc, batch=batch, seq_len=seq_len,
                new_tokens=new_tokens, lora_r=lora_r, steps=steps, recipe=recipe, keep_outputs=keep_outputs)
    runs = [_run_worker(spec, fixed_mmap) for _ in range(repeats)]
    runs.sort(key=lambda r: r["measured"])
    row = dict(spec, fixed_mmap=fixed_mmap, runs=[r["measured"] for r in runs], **runs[len(runs) // 2])
    if blind:
        return row
    try:
        return with_estimate(row)
    except Exception as exc:  # the measurement stands (--report compares it again later): keep it, say why
        return dict(row, estimate_failed=f"{type(exc).__name__}: {str(exc).strip()[-300:]}")


def with_estimate(row: dict) -> dict:
    """The row with today's estimate: `estimate` (less the allocator slack where the row was measured with a fixed
    mmap threshold, which keeps nothing back), `estimate_total`, `breakdown`, `params` and `error`."""
    import torch

    from llmcourse.memory import estimate

    # a row says where it was measured (rows from before that field: where the comparison runs)
    device = row.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    est = estimate(make_config(row["arch"], row["size"]), row["task"], dtype=row["dtype"], quant=row["quant"],
                   batch=row["batch"], seq_len=row["seq_len"], lora_r=row["lora_r"], gradient_checkpointing=row["gc"],
                   new_tokens=row["new_tokens"], device=device)
    compared = est.total_bytes - (est.breakdown.get("overhead", 0) if row.get("fixed_mmap") else 0)
    return dict(row, estimate=compared, estimate_total=est.total_bytes, params=est.params, breakdown=est.breakdown,
                error=compared / row["measured"] - 1)


def _say(line: str) -> None:
    print(line, flush=True)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def _pct(r: dict) -> str:
    return f"{100 * r['error']:+.1f}%"


def _row_line(r: dict) -> str:
    """One table row; a row measured blind shows its measurements only."""
    conf = (f"{r['quant']} + {r['dtype']} compute" if r["quant"] else r["dtype"]) + (", checkpointing" if r["gc"]
                                                                                    else "")
    est = "error" in r
    line = (f"| {r['arch']}-{r['size']} | {r['params'] / 1e6:.1f}M |" if est else f"| {r['arch']}-{r['size']} | |")
    line += (f" {r['task']} | {conf}, batch {r['batch']}x{r['seq_len']} | {_mib(r['estimate']) if est else ''} | "
             f"{_mib(r['measured'])} | {_pct(r) if est else ''} |")
    if r.get("resident"):
        g = r["resident"]
        line += f" {_mib(max(g))} [{_mib(min(g))}-{_mib(max(g))}] | {_mib(r['estimate_total']) if est else ''} |"
        if est:
            line += f" {r['estimate_total'] / max(g):.2f} |"
    return line


def _header(resident: bool, out) -> None:
    extra = (" resident, glibc defaults: highest [range] | plan total | plan / highest |" if resident else "")
    out(f"| model | params | task | configuration | estimate MiB | measured MiB | error |{extra}")
    out("|---|---:|---|---|---:|---:|---:|" + ("---:|---:|---:|" if extra else ""))


def memory_table(archs=("llama", "gpt2", "bert"), sizes=("S", "M"), resident_repeats: int = 0, tasks=None,
                 dtypes=None, out=None, record=None, blind: bool = False) -> list[dict]:
    """Estimate vs measured peak for every row; on CPU measured with a fixed mmap threshold (see `measure`).

    resident_repeats > 0 also measures each row that many times with glibc's defaults (what a notebook sees) and
    shows the highest and the range next to the plan's total (allocator slack included). tasks / dtypes: keep only
    those rows of TASK_ROWS. record(row) is called as each row is measured (to keep what was measured if a later row
    fails). blind: measurements only, compared later with `report`.
    """
    import torch

    out = out or _say
    cpu = not torch.cuda.is_available()
    rows = []
    _header(bool(cpu and resident_repeats), out)
    selected = [row for row in TASK_ROWS if (not tasks or row[0] in tasks) and (not dtypes or row[1] in dtypes)]
    for arch in archs:
        for size in sizes:
            for task, dtype, quant, gc in selected:
                r = measure(arch, size, task, dtype, quant, gc, fixed_mmap=cpu, blind=blind)
                if cpu and resident_repeats:
                    r["resident"] = measure(arch, size, task, dtype, quant, gc, repeats=resident_repeats,
                                            blind=True)["runs"]
                rows.append(r)
                if record:
                    record(r)
                out(_row_line(r))
    if not blind:
        _summary(rows, out)
    return rows


def _summary(rows: list[dict], out) -> None:
    failed = [r for r in rows if "error" not in r]
    if failed:
        out(f"estimate failed for {len(failed)} of {len(rows)} rows (kept, measured): "
            + "; ".join(f"{r['arch']}-{r['size']} {r['task']} {r['dtype']}: {r['estimate_failed']}" for r in failed))
    rows = [r for r in rows if "error" in r]
    if not rows:
        return
    worst = max(rows, key=lambda r: abs(r["error"]))
    out(f"\nworst error: {100 * worst['error']:+.1f}% ({worst['arch']}-{worst['size']} {worst['task']} "
        f"{worst['dtype']}) over {len(rows)} rows")
    resident = [r for r in rows if r.get("resident")]
    for task in dict.fromkeys(r["task"] for r in resident):
        ratios = [r["estimate_total"] / max(r["resident"]) for r in resident if r["task"] == task]
        out(f"{task}: plan total / highest resident peak under glibc defaults {min(ratios):.2f} to {max(ratios):.2f} "
            f"over {len(ratios)} rows; below 1: {sum(x < 1 for x in ratios)}, above 1.25: "
            f"{sum(x > 1.25 for x in ratios)}")


def _read_rows(path: str | Path) -> list[dict]:
    """Rows a --jsonl run recorded. memory_table measures each with a fixed mmap threshold on a CPU (and on CUDA the
    allocator term is 0 anyway)."""
    lines = Path(path).read_text().splitlines()
    return [{"fixed_mmap": True, **json.loads(line)} for line in lines if line.strip()]


SPEC_KEYS = ("arch", "size", "task", "dtype", "quant", "gc", "batch", "seq_len", "new_tokens", "lora_r", "steps",
             "recipe", "keep_outputs")  # what a worker is told: a recorded row's configuration


def _loops(row: dict) -> int:
    """How many passes (forward-only tasks) or optimizer steps (training) a row's first runs made."""
    return 1 if row["task"] in FORWARD_ONLY else row["steps"]


def add_resident(path: str | Path, threads: int, repeats: int, archs=None, tasks=None, dtypes=None,
                 loops: int | None = None, out=None) -> int:
    """Measure rows recorded in `path` (a --jsonl file) `repeats` more times each with glibc's defaults and `threads`
    intra-op threads, and append the peaks to their `resident` runs (`resident_threads` says each run's thread
    count). `loops`: each run makes that many passes (eval, inference) or optimizer steps (training) instead of the
    row's own, as a notebook's loop over batches does (`resident_loops` says each run's count). Only rows with
    resident runs already (CPU rows) are measured again, those of `archs` / `tasks` / `dtypes` when given. The file
    is written again after each row, so a failure keeps what was measured; every other field of every line stays as
    it was. Returns the number of rows measured."""
    if repeats < 1:
        raise ValueError(f"repeats is {repeats}: add at least one run to each row")
    if loops is not None and loops < 1:
        raise ValueError(f"loops is {loops}: each run makes at least one pass or step")
    out = out or _say
    path = Path(path)
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    done = 0
    for row in lines:
        if (not row.get("resident") or (archs and row["arch"] not in archs) or (tasks and row["task"] not in tasks)
                or (dtypes and row["dtype"] not in dtypes)):
            continue
        spec = {key: row[key] for key in SPEC_KEYS}
        n_loops = loops or _loops(row)
        spec.update({"passes": n_loops} if row["task"] in FORWARD_ONLY else {"steps": n_loops})
        runs = [_run_worker(spec, threads=threads)["measured"] for _ in range(repeats)]
        before = row.get("resident_threads", [BENCH_THREADS] * len(row["resident"]))
        row["resident_threads"] = before + [threads] * repeats
        row["resident_loops"] = row.get("resident_loops", [_loops(row)] * len(row["resident"])) + [n_loops] * repeats
        row["resident"] = row["resident"] + runs
        partial = path.with_name(path.name + ".partial")  # written whole, then put in place
        partial.write_text("".join(json.dumps(r) + "\n" for r in lines))
        os.replace(partial, path)
        done += 1
        out(f"{row['arch']}-{row['size']} {row['task']} {row['dtype']}, {threads} thread(s), {n_loops} loop(s): "
            + ", ".join(_mib(n) for n in runs) + f" MiB (before: highest {_mib(max(row['resident'][:-repeats]))})")
    return done


def report(path: str | Path, out=None) -> list[dict]:
    """Compare rows measured earlier (a --jsonl file) with today's estimator, without measuring again."""
    out = out or _say
    measured = _read_rows(path)
    _header(any(r.get("resident") for r in measured), out)
    rows = []
    for row in measured:
        try:
            rows.append(with_estimate(row))
        except Exception as exc:  # a failure to estimate is a result too: say it in the table
            reason = str(exc).strip().splitlines()[-1][:80] if str(exc).strip() else type(exc).__name__
            out(_row_line(row)[:-1] + f" estimate failed: {type(exc).__name__}: {reason} |")
            continue
        out(_row_line(rows[-1]))
    if rows:
        _summary(rows, out)
    if len(rows) < len(measured):
        out(f"estimate failed for {len(measured) - len(rows)} of {len(measured)} rows")
    return rows


FIT_TENSOR_ERROR = 0.10


RETENTION_TERMS = ("small blocks' peak", "remade blocks", "largest small block", "MiB")  # CPU_RETENTION's order
RETENTION_STEP = 0.05  # the shares are rounded up to this step (the floor to whole MiB): a plan only grows


def _retention_basis(row: dict) -> tuple[dict, list[int]]:
    """(the row with its estimate, the bytes of each of RETENTION_TERMS): the estimate's allocator term is linear in
    `CPU_RETENTION[task]`, so unit settings give the terms it weighs."""
    from llmcourse import memory

    task, saved = row["task"], memory.CPU_RETENTION[row["task"]]
    terms = []
    try:
        for i in range(len(RETENTION_TERMS)):
            memory.CPU_RETENTION[task] = tuple(float(j == i) for j in range(len(RETENTION_TERMS)))
            terms.append(with_estimate(row)["breakdown"]["overhead"])
    finally:
        memory.CPU_RETENTION[task] = saved
    return with_estimate(row), terms


def _fit_task(cases: list[tuple[int, int, list[int]]]) -> tuple[float, ...] | None:
    """The allocator term for one task's rows [(highest resident peak, tensor estimate, terms)]: a linear program
    finds the lowest worst total / resident ratio with every total at least its resident peak; then, keeping that
    worst, a second one the setting whose lowest ratio is highest (the most room on the rows nearest to not fitting;
    where several settings tie, the solver's pick, so scipy is pinned in constraints.txt). The shares are rounded up
    to RETENTION_STEP and the floor to whole MiB, so totals only grow. None if no setting covers every row."""
    import numpy as np
    from scipy.optimize import linprog

    res = np.array([c[0] for c in cases], float)
    tensor = np.array([c[1] for c in cases], float)
    terms = np.array([c[2] for c in cases], float)
    k, n = terms.shape[1], len(cases)
    bounds = [(0, 0) if not terms[:, j].any() else (0, None) for j in range(k)]  # a term no row has stays 0
    # variables: the k weights, then a ratio r; rows: tensor + terms.w >= r_low res, tensor + terms.w <= r_high res
    below = np.hstack([-terms, res[:, None]])  # r res - terms.w <= tensor
    above = np.hstack([terms, -res[:, None]])  # terms.w - r res <= -tensor
    covers = np.hstack([-terms, np.zeros((n, 1))])  # -terms.w <= tensor - res
    first = linprog(np.r_[np.zeros(k), 1], A_ub=np.vstack([covers, above]), b_ub=np.r_[tensor - res, -tensor],
                    bounds=[*bounds, (0, None)], method="highs")
    if not first.success:
        return None
    worst = first.x[-1] * (1 + 1e-9)
    second = linprog(np.r_[np.zeros(k), -1], A_ub=np.vstack([below, -covers]), b_ub=np.r_[tensor, worst * res - tensor],
                     bounds=[*bounds, (1, None)], method="highs")
    w = (second if second.success else first).x[:k]
    shares = [max(0.0, round(float(np.ceil(x / RETENTION_STEP - 1e-6)) * RETENTION_STEP, 2)) for x in w[:-1]]
    return (*shares, max(0, int(np.ceil(w[-1] - 1e-6))))  # the floor's term is 1 MiB


def fit_retention(path: str | Path, out=None) -> dict[str, tuple[float, ...]]:
    """Per task, the allocator term (a x small blocks' peak + b x remade blocks + l x largest small block + c MiB)
    under which the plan's total covers the highest resident peak of every row measured with glibc's defaults in
    `path`, chosen to keep the worst total / resident ratio lowest: the settings for
    `llmcourse.memory.CPU_RETENTION`."""
    out = out or _say
    cases = []  # (task, highest resident peak, tensor estimate, terms)
    for row in _read_rows(path):
        if not row.get("resident"):
            continue
        r, terms = _retention_basis(row)
        # the term stands for the allocator, not for what the tensor estimate misses: rows it misses by more than
        # FIT_TENSOR_ERROR are left out of the fit (and said)
        if abs(r["error"]) > FIT_TENSOR_ERROR:
            out(f"left out of the fit: {r['arch']}-{r['size']} {r['task']} {r['dtype']} (tensor estimate off by more "
                f"than {FIT_TENSOR_ERROR:.0%})")
            continue
        cases.append((r["task"], max(r["resident"]), r["estimate"], terms))
    fitted = {}
    for task in dict.fromkeys(case[0] for case in cases):
        cases_of_task = [case[1:] for case in cases if case[0] == task]
        setting = _fit_task(cases_of_task)
        if setting is None:
            out(f"{task}: no setting covers every row")
            continue
        fitted[task] = setting
        totals = [(tensor + sum(w * t for w, t in zip(setting, terms))) / res for res, tensor, terms in cases_of_task]
        out(f"{task}: {setting} covers {len(cases_of_task)} rows; worst total / highest resident {max(totals):.2f}")
    return fitted


def qlora_table(arch: str = "llama", size: str = "S", steps: int = 10, out=None) -> list[dict]:
    """`prepare_qlora` against the plain peft recipe on the same 4-bit model, with a fixed mmap threshold on CPU.

    Rows for bf16 (where the recipes differ: peft converts the 16-bit embeddings, norms and head to fp32) and for
    the compute dtype `plan` picks on this machine, when that is not bf16.
    """
    out = out or _say
    rows = []
    out(f"| {arch}-{size}, nf4 | recipe | peak MiB | step time s | loss first -> last |")
    out("|---|---|---:|---:|---|")
    for dtype in dict.fromkeys(("bf16", compute_dtype())):
        for recipe in ("llmcourse", "peft"):
            r = measure(arch, size, "qlora", dtype, "nf4", True, steps=steps, recipe=recipe, fixed_mmap=True)
            rows.append(r)
            name = "llmcourse.prepare_qlora" if recipe == "llmcourse" else "peft prepare_model_for_kbit_training"
            out(f"| {dtype} model and compute | {name} | {_mib(r['measured'])} | {r['step_s']:.2f} | "
                f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        print(json.dumps(worker(json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--archs", help="comma-separated names from ARCHS, or 'tuning' / 'held-out' for a half of "
                                        "the protocol (default: llama,gpt2,bert; with --add-resident, every row)")
    parser.add_argument("--sizes", default="S,M")
    parser.add_argument("--resident-repeats", type=int, default=0,
                        help="also measure each row this many times with glibc's default allocator settings (CPU)")
    parser.add_argument("--tasks", help="comma-separated tasks to keep (default: every row of TASK_ROWS)")
    parser.add_argument("--dtypes", help="comma-separated dtypes to keep, e.g. fp32,bf16")
    parser.add_argument("--qlora-steps", type=int, default=10, help="steps of the QLoRA recipe table (0: skip it)")
    parser.add_argument("--json", help="also write all rows to this file")
    parser.add_argument("--jsonl", help="append each row to this file as it is measured")
    parser.add_argument("--blind", action="store_true",
                        help="measure only, no estimate (a held-out half, compared later with --report)")
    parser.add_argument("--report", metavar="JSONL", help="compare rows measured earlier with today's estimator")
    parser.add_argument("--fit", metavar="JSONL", help="fit the allocator term per task on rows measured earlier")
    parser.add_argument("--add-resident", metavar="JSONL",
                        help="measure the rows of a --jsonl file again with glibc's defaults (--resident-repeats "
                             "times, --threads threads; --archs, --tasks and --dtypes select rows) and add the runs")
    parser.add_argument("--threads", type=int, default=BENCH_THREADS,
                        help=f"intra-op threads of the workers for --add-resident (default {BENCH_THREADS})")
    parser.add_argument("--loops", type=int,
                        help="with --add-resident: passes (eval, inference) or optimizer steps (training) of each "
                             "run, as a notebook's loop makes (default: the row's own)")
    args = parser.parse_args(argv)
    if args.report:
        report(args.report)
        return 0
    if args.fit:
        fit_retention(args.fit)
        return 0
    t0 = time.time()
    named = args.archs and ({"tuning": TUNING, "held-out": HELD_OUT}.get(args.archs) or args.archs.split(","))
    archs = named or ("llama", "gpt2", "bert")
    if args.add_resident:
        if args.resident_repeats < 1:
            parser.error("--add-resident needs --resident-repeats N (N >= 1): how many runs to add to each row")
        n = add_resident(args.add_resident, args.threads, args.resident_repeats, named,
                         args.tasks and args.tasks.split(","), args.dtypes and args.dtypes.split(","), args.loops)
        print(f"\n{n} rows measured again ({time.time() - t0:.0f} s)")
        return 0

    def record(row):
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")

    def split(value):
        return value.split(",") if value else None

    rows = memory_table(archs, args.sizes.split(","), args.resident_repeats, split(args.tasks), split(args.dtypes),
                        record=record, blind=args.blind)
    print()
    side = qlora_table(steps=args.qlora_steps) if args.qlora_steps else []
    print(f"\n({time.time() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"memory": rows, "qlora": side}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
