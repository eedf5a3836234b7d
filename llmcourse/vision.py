"""Small vision models that weeks 5 and 6 reuse, rebuilt with the recipes the lessons teach and cached.

- `mnist_tensors` turns the course's MNIST-5000 (`llmcourse.data.load("mnist")`) into float tensors in [-1, 1] at a
  CPU-friendly resolution (16x16 by default), as `week05/01_diffusion_from_scratch.ipynb` teaches.
- `digit_classifier` is the judge of weeks 5 and 6: a small CNN trained on the MNIST train split (introduced in
  week05/01 to score generated digits). The first call trains it (about 10 s on a 2-core CPU) and caches it.
- `DigitCLIP`, `train_clip` and `clip_model` are the CLIP-style model of `week06/01_clip_from_scratch.ipynb`
  (a small CNN image encoder and the frozen all-MiniLM-L6-v2 text encoder with a projection, trained with the
  symmetric InfoNCE loss), trained on all ten digits. `week06/02_text_to_image.ipynb` calls `clip_model()`;
  `week06/01_clip_from_scratch.ipynb` trains the same architecture in the open with digits 8 and 9 held out.
- `guided_sample` is the classifier-free-guided sampling loop of `week06/02_text_to_image.ipynb` (its exercise 2.2).
- `show_grid` draws a batch of images as one picture; `frechet_distance` compares two sets of features.

    >>> clf = digit_classifier()                 # trained once, then read from the cache
    >>> x, y = mnist_tensors("test")
    >>> (clf(x).argmax(1) == y).float().mean()   # about 0.95
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .assets import cache_dir
from .files import cache_key, cache_path

__all__ = [
    "CAPTIONS_TRAIN",
    "CAPTIONS_UNSEEN",
    "CLIP_RECIPE",
    "CLASSIFIER_RECIPE",
    "DigitCLIP",
    "DigitClassifier",
    "NUMBER_WORDS",
    "caption",
    "clip_model",
    "digit_classifier",
    "frechet_distance",
    "guided_sample",
    "info_nce",
    "mnist_tensors",
    "precision_at_k",
    "show_grid",
    "text_embeddings",
    "train_clip",
    "train_classifier",
]

FORMAT_VERSION = 1  # bump when a recipe's code changes: models cached by the old code are then ignored
TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Captions of week06/01: {n} is the numeral ("7"), {w} the word ("seven"). Training uses CAPTIONS_TRAIN only;
# CAPTIONS_UNSEEN are phrasings the model never saw, used to test zero-shot classification and text-to-image.
CAPTIONS_TRAIN = (
    "a photo of the digit {n}",
    "the number {w}",
    "a handwritten {w}",
    "{n}",
    "{w}",
    "an image of a {n}",
    "digit {w}",
    "a picture of the number {n}",
    "this is a {w}",
    "a black and white {n}",
    "the numeral {w}",
    "someone wrote a {n}",
)
CAPTIONS_UNSEEN = (
    "a scan of a handwritten {w}",
    "a drawing of the number {n}",
    "the figure {w}, written by hand",
    "an mnist image of a {w}",
)


def caption(template: str, digit: int) -> str:
    """`template` filled with `digit` as numeral ({n}) and word ({w})."""
    return template.format(n=digit, w=NUMBER_WORDS[digit])


# ----------------------------------------------------------------------------------------------------- data
def mnist_tensors(split: str = "train", size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images of `split` as (N, 1, size, size) floats in [-1, 1] and their labels (N,) as int64."""
    from .data import load

    ds = load("mnist")[split].with_format("numpy")[:]
    x = torch.from_numpy(np.asarray(ds["image"], dtype=np.float32) / 255.0).unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x * 2 - 1).clamp(-1, 1), torch.from_numpy(np.asarray(ds["label"], dtype=np.int64))


# ------------------------------------------------------------------------------------------------ caching
def _key(recipe: dict) -> str:
    return cache_key({**recipe, "v": FORMAT_VERSION})


def _cached(name: str, recipe: dict) -> Path:
    return cache_dir() / "vision" / f"{name}-{_key(recipe)}.pt"


def _save_atomic(obj: Any, path: Path) -> None:
    with cache_path(path) as tmp:  # readers see the old file or the whole new one, never half of it
        torch.save(obj, tmp)


# --------------------------------------------------------------------------------------- digit classifier
class DigitClassifier(nn.Module):
    """A small CNN for (N, 1, 16, 16) digits in [-1, 1]; `features` gives the 64-d layer used for Frechet distance."""

    def __init__(self, size: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 64), nn.ReLU(),
        )
        self.head = nn.Linear(64, 10)
        self.size = size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:  # judge larger samples (e.g. 32x32 from latent diffusion) at the trained size
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


CLASSIFIER_RECIPE: dict[str, Any] = {"size": 16, "epochs": 6, "batch_size": 64, "lr": 2e-3, "seed": 0,
                                     "augment_shift": 1}


def train_classifier(**overrides: Any) -> DigitClassifier:
    """Train the digit classifier on MNIST train with CLASSIFIER_RECIPE (+ overrides); return it in eval mode."""
    r = {**CLASSIFIER_RECIPE, **overrides}
    gen = torch.Generator().manual_seed(r["seed"])
    torch.manual_seed(r["seed"])
    x, y = mnist_tensors("train", r["size"])
    model = DigitClassifier(r["size"])
    opt = torch.optim.Adam(model.parameters(), lr=r["lr"])
    steps = r["epochs"] * (len(x) // r["batch_size"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=steps)
    model.train()
    for _ in range(r["epochs"]):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(len(x) // r["batch_size"]):
            idx = perm[i * r["batch_size"]:(i + 1) * r["batch_size"]]
            xb = x[idx]
            s = r["augment_shift"]
            if s:  # random shifts of up to `s` pixels make the judge robust to off-centre samples
                dx, dy = torch.randint(-s, s + 1, (2,), generator=gen).tolist()
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def digit_classifier(**overrides: Any) -> DigitClassifier:
    """The classifier of CLASSIFIER_RECIPE: trained on the first call (about 10 s), then read from the cache."""
    r = {**CLASSIFIER_RECIPE, **overrides}
    path = _cached("digit-classifier", r)
    if path.exists():
        model = DigitClassifier(r["size"])
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    model = train_classifier(**overrides)
    _save_atomic(model.state_dict(), path)
    return model


# ------------------------------------------------------------------------------------------------ CLIP
_TEXT: dict[str, Any] = {}


def text_embeddings(texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled all-MiniLM-L6-v2 embeddings (len(texts), 384) of `texts`; the frozen text encoder of week 6."""
    from transformers import AutoModel, AutoTokenizer

    from .assets import resolve

    if "model" not in _TEXT:
        path = resolve(TEXT_MODEL)
        _TEXT["tok"], _TEXT["model"] = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    tok, model = _TEXT["tok"], _TEXT["model"]
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i:i + batch_size]), padding=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(out)


class DigitCLIP(nn.Module):
    """Week 6's CLIP: a CNN image tower and a projection of frozen MiniLM sentence embeddings, both to `dim`."""

    def __init__(self, dim: int = 64, text_dim: int = 384, size: int = 16):
        super().__init__()
        self.image_encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, dim),
        )
        self.text_projection = nn.Sequential(nn.Linear(text_dim, 128), nn.ReLU(), nn.Linear(128, dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_encoder(x), dim=-1)

    def encode_text(self, text_emb: torch.Tensor) -> torch.Tensor:
        """Unit vectors for MiniLM sentence embeddings (from `text_embeddings`)."""
        return F.normalize(self.text_projection(text_emb), dim=-1)

    def forward(self, x: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Logits (N_images, N_texts): scaled cosine similarities."""
        return self.logit_scale.exp().clamp(max=100) * self.encode_image(x) @ self.encode_text(text_emb).T


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: image i's caption is text i; average of the image->text and text->image cross-entropies."""
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


CLIP_RECIPE: dict[str, Any] = {"size": 16, "dim": 64, "steps": 400, "batch_size": 128, "lr": 2e-3, "seed": 0}


def train_clip(**overrides: Any) -> DigitCLIP:
    """Train DigitCLIP as week06/01 does: each train image paired with a random CAPTIONS_TRAIN caption of its digit."""
    r = {**CLIP_RECIPE, **overrides}
    torch.manual_seed(r["seed"])
    gen = torch.Generator().manual_seed(r["seed"])
    x, y = mnist_tensors("train", r["size"])
    emb = text_embeddings([caption(t, d) for d in range(10) for t in CAPTIONS_TRAIN]).view(10, len(CAPTIONS_TRAIN), -1)
    model = DigitCLIP(r["dim"], emb.shape[-1], r["size"])
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=r["steps"])
    model.train()
    for _ in range(r["steps"]):
        idx = torch.randint(0, len(x), (r["batch_size"],), generator=gen)
        pick = torch.randint(0, len(CAPTIONS_TRAIN), (r["batch_size"],), generator=gen)
        loss = info_nce(model(x[idx], emb[y[idx], pick]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def clip_model(**overrides: Any) -> DigitCLIP:
    """Week 6's CLIP built with CLIP_RECIPE, trained on the first call (about 30 s) and read from the cache after."""
    r = {**CLIP_RECIPE, **overrides}
    path = _cached("digit-clip", r)
    if path.exists():
        model = DigitCLIP(r["dim"], 384, r["size"])
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    model = train_clip(**overrides)
    _save_atomic(model.state_dict(), path)
    return model


# ------------------------------------------------------------------------------------------------ sampling
@torch.no_grad()
def guided_sample(eps_model: Any, scheduler: Any, cond: torch.Tensor, null: torch.Tensor, scale: float,
                  steps: int = 20, seed: int = 0, size: int = 16) -> torch.Tensor:
    """Classifier-free-guided sampling of week06/02 (the reference of its exercise 2.2), unclamped.

    `eps_model(x, t, tokens)` predicts the noise; `cond` (B, tokens, D) are the prompts and `null` (1, tokens, D) the
    empty prompt; `scheduler` is a diffusers scheduler (DDIM in week 6). Each step runs the unconditional and the
    conditional prediction as one batch and moves `scale` times their difference from the unconditional one.
    """
    gen = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    x = torch.randn(len(cond), 1, size, size, generator=gen)
    both = torch.cat([null.expand(len(cond), *null.shape[1:]), cond])  # empty prompts, then the prompts
    for t in scheduler.timesteps:
        eps_uncond, eps_cond = eps_model(torch.cat([x, x]), t, both).chunk(2)
        x = scheduler.step(eps_uncond + scale * (eps_cond - eps_uncond), t, x).prev_sample
    return x


# ------------------------------------------------------------------------------------------------ measuring
def frechet_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, D) and b (M, D) (the FID formula)."""
    from scipy import linalg

    a, b = (np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float64) for v in (a, b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU features make the covariances singular: sqrtm warns, result is fine
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


# ------------------------------------------------------------------------------------------------ plotting
def show_grid(images: torch.Tensor, nrow: int = 10, titles: Sequence[str] | None = None, title: str | None = None,
              scale: float = 0.9, ax=None):
    """Draw images (N, 1, H, W) in [-1, 1] (or (N, H, W)) as one grid; optional per-image `titles`. Returns the axes."""
    import matplotlib.pyplot as plt

    imgs = images.detach().float().cpu() if hasattr(images, "detach") else torch.as_tensor(np.asarray(images))
    if imgs.ndim == 3:
        imgs = imgs.unsqueeze(1)
    n = len(imgs)
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    if titles is not None:
        fig, axes = plt.subplots(nrows, ncol, figsize=(ncol * scale, nrows * scale * (1.25 if titles else 1)),
                                 squeeze=False)
        for i, a in enumerate(axes.flat):
            a.axis("off")
            if i < n:
                a.imshow(imgs[i, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
                if titles is not None:
                    a.set_title(titles[i], fontsize=8)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        return axes
    if ax is None:
        _, ax = plt.subplots(figsize=(ncol * scale * 0.8, nrows * scale * 0.8))
    h, w = imgs.shape[-2:]
    canvas = -torch.ones(nrows * (h + 1) - 1, ncol * (w + 1) - 1)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = imgs[i, 0]
    ax.imshow(canvas.numpy(), cmap="gray", vmin=-1, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def precision_at_k(sim: torch.Tensor, query_labels: torch.Tensor, item_labels: torch.Tensor, k: int) -> float:
    """Mean fraction of each query's `k` most similar items (rows of `sim`, (Q, N)) that share the query's label."""
    top = sim.topk(k, dim=1).indices
    return (item_labels[top] == query_labels[:, None]).float().mean().item()
