"""The course's tiny Stable-Diffusion-shaped pipeline for MNIST digits, built from real diffusers parts and cached.

`week05/03_diffusion_pipelines.ipynb` uses it exactly as Stable Diffusion is used. Its three trained parts are the
ones weeks 5 and 6 teach, rebuilt with diffusers' own classes so that `StableDiffusionPipeline` accepts them:

- an `AutoencoderKL` (a 16x16x1 digit <-> a 4x4x4 latent: 4x fewer numbers, as in `week05/02_latent_diffusion.ipynb`);
- the frozen all-MiniLM-L6-v2 text encoder (week 6), whose token hidden states are the prompt, exactly as the
  pipeline's own `encode_prompt` computes them (prompts are cut to `max_length` tokens, so they are cheap);
- a `UNet2DConditionModel` that reads those hidden states by cross-attention (week 6.2), trained on the VAE's latents
  with prompt dropout so that classifier-free guidance works.

    >>> pipe = course_pipeline()          # trained on the first call (about a minute on 2 cores), then cached
    >>> images = pipe("a handwritten seven", num_inference_steps=20, output_type="pt").images   # (1, 1, 16, 16)

`tiny_pipeline()` builds the same pipeline with small random weights: tests use it to check code against the
pipeline in seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .assets import cache_dir
from .files import cache_key, cache_path, cache_writable
from .vision import CAPTIONS_TRAIN, TEXT_MODEL, caption, mnist_tensors

__all__ = ["PIPELINE_RECIPE", "course_pipeline", "judge_images", "prompt_table", "tiny_pipeline", "train_pipeline"]

FORMAT_VERSION = 1  # bump when the recipe's code changes: pipelines cached by the old code are then ignored

PIPELINE_RECIPE: dict[str, Any] = {
    "image_size": 16, "latent_channels": 4, "max_length": 16, "timesteps": 1000, "beta_schedule": "scaled_linear",
    "vae_steps": 200, "vae_batch_size": 32, "vae_lr": 3e-3, "kl_weight": 1e-3,
    "unet_steps": 400, "batch_size": 128, "lr": 3e-3, "p_uncond": 0.15, "seed": 0,
}


def _quiet_diffusers() -> None:
    # "You have disabled the safety checker" and friends: the course's digits need no safety checker.
    for name in ("diffusers.pipelines.pipeline_utils", "diffusers.pipelines.stable_diffusion"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()


def _parts(r: dict[str, Any], text_encoder: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """The pipeline's parts with fresh (untrained) VAE and UNet weights."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoModel, AutoTokenizer

    from .assets import resolve

    torch.manual_seed(r["seed"])
    if text_encoder is None:
        path = resolve(TEXT_MODEL)
        tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=r["max_length"])
        text_encoder = AutoModel.from_pretrained(path).eval().requires_grad_(False)
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=r["latent_channels"],
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8,
        sample_size=r["image_size"], mid_block_add_attention=False,
    )
    latent = r["image_size"] // 4
    unet = UNet2DConditionModel(
        sample_size=latent, in_channels=r["latent_channels"], out_channels=r["latent_channels"],
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),  # the prompt is read at the 2x2 level
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_encoder.config.hidden_size, attention_head_dim=8,
    )
    # Stable Diffusion v1's kind of schedule (scaled_linear: its last noise level keeps a trace of the latent; with the
    # cosine schedule's pure-noise end, every sampler's first step decided the image), latents not clipped to [-1, 1].
    scheduler = DDPMScheduler(num_train_timesteps=r["timesteps"], beta_schedule=r["beta_schedule"],
                              clip_sample=False, steps_offset=1, timestep_spacing="trailing")
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet, "scheduler": scheduler}


def _assemble(parts: dict[str, Any]):
    from diffusers import StableDiffusionPipeline

    _quiet_diffusers()
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pipeline(seed: int = 0, text_encoder: Any = None, tokenizer: Any = None, **overrides: Any):
    """The course pipeline with small random VAE and UNet weights (for tests and exercise checks): seconds to build."""
    r = {**PIPELINE_RECIPE, **overrides, "seed": seed}
    pipe = _assemble(_parts(r, text_encoder, tokenizer))
    for m in (pipe.vae, pipe.unet):
        m.eval().requires_grad_(False)
    return pipe


def prompt_table(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states (10, len(CAPTIONS_TRAIN), L, D) of every training caption and (1, L, D) of the empty prompt."""
    prompts = [caption(t, d) for d in range(10) for t in CAPTIONS_TRAIN]
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(prompts, "cpu", 1, True, negative_prompt=None)
    return cond.view(10, len(CAPTIONS_TRAIN), *cond.shape[1:]), uncond[:1]


def train_pipeline(progress: Callable | None = None, **overrides: Any):
    """Train the VAE, then the UNet on its latents, with PIPELINE_RECIPE (+ overrides); return the pipeline."""
    r = {**PIPELINE_RECIPE, **overrides}
    bar = progress or (lambda it, **kw: it)
    pipe = _assemble(_parts(r))
    vae, unet, sched = pipe.vae, pipe.unet, pipe.scheduler
    gen = torch.Generator().manual_seed(r["seed"])
    x, y = mnist_tensors("train", r["image_size"])

    opt = torch.optim.AdamW(vae.parameters(), lr=r["vae_lr"])
    lr = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["vae_lr"], total_steps=r["vae_steps"])
    vae.train()
    for _ in bar(range(r["vae_steps"]), desc="training the VAE"):
        xb = x[torch.randint(0, len(x), (r["vae_batch_size"],), generator=gen)]
        dist = vae.encode(xb).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        loss = F.mse_loss(vae.decode(z).sample, xb) + r["kl_weight"] * dist.kl().mean() / dist.mean[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat([vae.encode(x[i:i + 500]).latent_dist.mean for i in range(0, len(x), 500)])
    vae.register_to_config(scaling_factor=float(1 / latents.std()))
    latents = latents * vae.config.scaling_factor

    cond, uncond = prompt_table(pipe)
    opt = torch.optim.AdamW(unet.parameters(), lr=r["lr"])
    lr = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=r["unet_steps"], pct_start=0.1)
    unet.train()
    b = r["batch_size"]
    for _ in bar(range(r["unet_steps"]), desc="training the UNet"):
        idx = torch.randint(0, len(latents), (b,), generator=gen)
        text = cond[y[idx], torch.randint(0, cond.shape[1], (b,), generator=gen)]
        drop = torch.rand(b, generator=gen) < r["p_uncond"]
        text = torch.where(drop.view(-1, 1, 1), uncond, text)  # prompt dropout: the empty prompt, for guidance
        z0 = latents[idx]
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, r["timesteps"], (b,), generator=gen)
        loss = F.mse_loss(unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=text).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
    unet.eval().requires_grad_(False)
    return pipe


def _folder(r: dict[str, Any]) -> Path:
    return cache_dir() / "pipelines" / f"digits-sd-{cache_key({**r, 'v': FORMAT_VERSION})}"


def course_pipeline(progress: Callable | None = None, **overrides: Any):
    """The pipeline of PIPELINE_RECIPE (+ overrides): trained on the first call, then loaded from the cache folder."""
    from diffusers import StableDiffusionPipeline

    r = {**PIPELINE_RECIPE, **overrides}
    folder = _folder(r)
    if not (folder / "model_index.json").exists():
        pipe = train_pipeline(progress, **overrides)
        with cache_path(folder, folder=True) as tmp:  # another process sees no folder or a complete one
            pipe.save_pretrained(tmp)
            if not cache_writable(folder.parent):  # a read-only cache: load this run's copy before it goes
                _quiet_diffusers()
                pipe = StableDiffusionPipeline.from_pretrained(tmp)
                pipe.set_progress_bar_config(disable=True)
                return pipe
    _quiet_diffusers()
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def judge_images(images: torch.Tensor, judge: torch.nn.Module) -> torch.Tensor:
    """The digit judge's predictions (N,) for pipeline images in [0, 1] (output_type="pt"), judged in [-1, 1]."""
    with torch.no_grad():
        return judge(images.mean(1, keepdim=True) * 2 - 1).argmax(1)
