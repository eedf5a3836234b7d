"""The hardware card: what this machine can do for the course, judged by measurement where it matters.

Introduced in week 1 (`week01/00_setup_and_hardware.ipynb`); `llmcourse doctor` prints it in a terminal.
bf16 is judged by compute capability >= 8.0 (Ampere and newer), not by `torch.cuda.is_bf16_supported()`, which says
True on a T4 where bf16 is only emulated. 4-bit support is judged by a real quantize/dequantize round trip.
"""

from __future__ import annotations

import html
import os
import platform as _platform
import random
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ConfigError

__all__ = [
    "REQUIREMENTS",
    "HardwareCard",
    "bf16_from_capability",
    "detect",
    "detect_platform",
    "SIMULATED",
    "seed_everything",
    "simulated_card",
]

# What the course needs: package -> minimum version (the lowest that was tested).
REQUIREMENTS: dict[str, str] = {
    "torch": "2.3",
    "transformers": "5.0",
    "peft": "0.17",
    "bitsandbytes": "0.45",
    "datasets": "4.0",
    "accelerate": "1.0",
    "diffusers": "0.35",
    "tokenizers": "0.21",
    "huggingface-hub": "1.0",
    "ipywidgets": "8.0",
    "matplotlib": "3.8",
    "scikit-learn": "1.4",
}


def _version_tuple(v: str) -> tuple[int, ...]:
    """'2.13.0+cpu' -> (2, 13, 0); '1.0rc1' -> (1, 0): leading digits of each part, up to the first non-numeric."""
    parts = []
    for piece in v.split("+")[0].split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.end() < len(piece):
            break
    return tuple(parts)


@dataclass
class HardwareCard:
    """What this machine offers: device, memory, precision support, platform and package versions."""

    kind: str  # "cuda" | "mps" | "cpu"
    name: str
    total_memory: int  # bytes of VRAM (cuda) or RAM (cpu, mps)
    free_memory: int
    compute_capability: tuple[int, int] | None
    bf16: bool  # fast bfloat16 matrix maths (CUDA capability >= 8.0, or a CPU with AVX512-BF16/AMX)
    fp16: bool
    bnb_4bit: bool  # bitsandbytes 4-bit quantize/dequantize really works here
    bnb_4bit_error: str | None
    platform: str  # "local" | "colab" | "kaggle"
    cpu_count: int
    ram_total: int
    python: str
    versions: dict[str, str | None] = field(default_factory=dict)
    threads: int | None = None  # torch intra-op threads set by setup() (llmcourse.threads' policy)
    threads_reason: str | None = None  # why that many

    @property
    def device(self) -> str:
        """The torch device string for this card."""
        return self.kind

    def requirement_rows(self) -> list[tuple[str, str | None, str, bool]]:
        """(package, installed version, minimum, ok) for every package the course needs."""
        rows = []
        for pkg, minimum in REQUIREMENTS.items():
            have = self.versions.get(pkg)
            ok = have is not None and _version_tuple(have) >= _version_tuple(minimum)
            rows.append((pkg, have, minimum, ok))
        return rows

    @property
    def ok(self) -> bool:
        return all(row[3] for row in self.requirement_rows())

    def summary_rows(self) -> list[tuple[str, str]]:
        cc = ".".join(map(str, self.compute_capability)) if self.compute_capability else "-"
        return [
            ("device", f"{self.kind} ({self.name})"),
            ("memory", f"{self.total_memory / 2**30:.1f} GiB total, {self.free_memory / 2**30:.1f} GiB free"),
            ("compute capability", cc),
            ("bf16", "yes" if self.bf16 else "no"),
            ("fp16", "yes" if self.fp16 else "no"),
            ("bitsandbytes 4-bit", "works" if self.bnb_4bit else f"no ({self.bnb_4bit_error})"),
            ("platform", self.platform),
            ("CPU cores / RAM", f"{self.cpu_count} / {self.ram_total / 2**30:.1f} GiB"),
            ("python", self.python),
            *([("torch threads", f"{self.threads}: {self.threads_reason}")] if self.threads else []),
        ]

    def __str__(self) -> str:
        lines = ["Hardware card"] + [f"  {k:<20} {v}" for k, v in self.summary_rows()]
        lines.append("Packages")
        for pkg, have, minimum, ok in self.requirement_rows():
            lines.append(f"  [{'OK' if ok else 'FAIL'}] {pkg:<16} {have or 'missing':<14} (needs >= {minimum})")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                       f"{html.escape(v)}</td></tr>" for k, v in self.summary_rows())
        pk = "".join(
            f"<tr><td style='text-align:left'>{'✅' if ok else '❌'} {html.escape(p)}</td>"
            f"<td style='text-align:left'>{html.escape(h or 'missing')}</td>"
            f"<td style='text-align:left'>&ge; {m}</td></tr>"
            for p, h, m, ok in self.requirement_rows())
        return (f"<table><caption style='text-align:left'><b>Hardware card</b></caption>{rows}</table>"
                f"<table><caption style='text-align:left'><b>Packages</b></caption>{pk}</table>")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["requirements"] = [{"package": p, "installed": h, "minimum": m, "ok": ok}
                             for p, h, m, ok in self.requirement_rows()]
        return d


def detect_platform(environ: dict | None = None, root: str | os.PathLike = "/") -> str:
    """'colab', 'kaggle' or 'local', from environment variables and filesystem markers."""
    env = os.environ if environ is None else environ
    base = Path(root)
    if "COLAB_RELEASE_TAG" in env or "COLAB_GPU" in env or (base / "opt/colab").is_dir():
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env or (base / "kaggle/working").is_dir():
        return "kaggle"
    return "local"


def _ram() -> tuple[int, int]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
        return info["MemTotal"], info.get("MemAvailable", info["MemFree"])


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _probe_bnb_4bit(device: str, name: str = "", fresh: bool = False) -> tuple[bool, str | None]:
    """Whether 4-bit NF4 works on `device` (named `name`), as (ok, why not); the answer is kept in the course's cache.

    Importing bitsandbytes takes about 5 s on a 2-core laptop, longer than the rest of `setup()` together, and its
    answer depends only on the installed versions and the device. So a probe that passed is stored under
    `cache_dir()/probes/`, keyed by the bitsandbytes and torch versions and the device, and later kernels read it; a
    new version or another device probes again, and so does every call after a failed probe (it may be mended).
    `fresh=True` always probes.
    """
    import importlib.metadata
    import json

    from .assets import cache_dir
    from .files import atomic_write

    try:
        bnb = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        return False, "bitsandbytes unavailable: not installed"
    where = re.sub(r"[^A-Za-z0-9._-]", "_", f"{device}-{name}")
    key = f"bnb4-{bnb}-torch{importlib.metadata.version('torch')}-{where}"
    try:
        path = cache_dir() / "probes" / f"{key}.json"
    except OSError:  # no writable cache folder: probe every time
        return _round_trip_4bit(device)
    if not fresh:
        try:
            if json.loads(path.read_text(encoding="utf-8"))["ok"] is True:
                return True, None
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not probed yet here, or an unreadable file: probe
    ok, error = _round_trip_4bit(device)
    if ok:
        try:
            atomic_write(path, json.dumps({"ok": True, "bitsandbytes": bnb, "device": f"{device} {name}".strip()}))
        except OSError:
            pass  # a read-only cache: probe again next time
    return ok, error


def _round_trip_4bit(device: str) -> tuple[bool, str | None]:
    """Quantize a small tensor to NF4 and back; True when the round trip is close (not merely importable)."""
    try:
        import bitsandbytes.functional as bnbf
        import torch
    except Exception as exc:  # ImportError, or a broken native library raising at import
        return False, f"bitsandbytes unavailable: {type(exc).__name__}"
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 64, generator=g).to(device)
        q, state = bnbf.quantize_4bit(x, quant_type="nf4", blocksize=64)
        y = bnbf.dequantize_4bit(q, state).float()
        err = (y - x).abs().mean().item() / x.abs().mean().item()
        if err < 0.2:
            return True, None
        return False, f"round-trip error {err:.2f} too large"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {str(exc)[:80]}"


def _versions() -> dict[str, str | None]:
    import importlib.metadata  # about 50 ms: only when a card is made, not at `import llmcourse`

    out = {}
    for pkg in REQUIREMENTS:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def detect(probe_bnb: bool = True) -> HardwareCard:
    """Detect the accelerator (cuda, mps or cpu), its memory and precision support, the platform and versions."""
    import torch

    ram_total, ram_free = _ram()
    cc = None
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        free, total = torch.cuda.mem_get_info(idx)
        cc = (props.major, props.minor)
        kind, name, bf16, fp16 = "cuda", props.name, bf16_from_capability(cc), cc >= (6, 0)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        kind, name, total, free, bf16, fp16 = "mps", "Apple GPU", ram_total, ram_free, False, True
    else:
        kind, name, total, free = "cpu", _platform.processor() or _platform.machine(), ram_total, ram_free
        bf16, fp16 = _cpu_has_bf16(), False
    ok4, err4 = _probe_bnb_4bit(kind if kind != "mps" else "cpu", name) if probe_bnb else (False, "not probed")
    return HardwareCard(kind=kind, name=name, total_memory=int(total), free_memory=int(free), compute_capability=cc,
                        bf16=bf16, fp16=fp16, bnb_4bit=ok4, bnb_4bit_error=err4, platform=detect_platform(),
                        cpu_count=os.cpu_count() or 1, ram_total=ram_total,
                        python=sys.version.split()[0], versions=_versions())


def bf16_from_capability(compute_capability: tuple[int, int] | None) -> bool:
    """Fast bf16 needs CUDA compute capability >= 8.0 (Ampere); a T4 (7.5) only emulates it."""
    return compute_capability is not None and tuple(compute_capability) >= (8, 0)


# Hardware to plan for without having it: name -> (description, memory in GiB, CUDA compute capability or None for
# a CPU). bf16, fp16 and 4-bit support follow from the capability, as `detect` judges them.
SIMULATED: dict[str, tuple[str, float, tuple[int, int] | None]] = {
    "t4": ("Tesla T4 (simulated)", 15, (7, 5)),  # Colab's and Kaggle's free GPU: no bf16
    "a100": ("A100 40GB (simulated)", 40, (8, 0)),
    "4090": ("RTX 4090 (simulated)", 24, (8, 9)),
    "cpu": ("CPU with 16 GiB (simulated)", 16, None),  # a laptop with fast bf16 (AVX512-BF16 or AMX)
}


def simulated_card(name: str) -> HardwareCard:
    """A card for hardware this machine does not have, from `SIMULATED`: 't4' (15 GiB, no bf16), 'a100', '4090'
    or 'cpu'. Use `dataclasses.replace(card, bf16=False)` to change one property."""
    try:
        label, gib, cc = SIMULATED[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown simulated device {name!r}. Fix: use one of {', '.join(SIMULATED)}, or "
                          "llmcourse.detect() for this machine.") from None
    total = int(gib * 2**30)
    return HardwareCard(kind="cuda" if cc else "cpu", name=label, total_memory=total, free_memory=total,
                        compute_capability=cc, bf16=bf16_from_capability(cc) if cc else True,
                        fp16=cc is not None and cc >= (6, 0), bnb_4bit=True, bnb_4bit_error=None,
                        platform="colab" if name.lower() == "t4" else "local", cpu_count=2,
                        ram_total=int(12.7 * 2**30) if cc else total, python=sys.version.split()[0],
                        versions=_versions())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run repeats."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
