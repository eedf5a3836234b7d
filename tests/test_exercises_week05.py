"""Week 5 exercise checks pass the reference, reject plausible wrong answers and count stubs as not attempted."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from exercise_harness import ROOT, STUB, run_exercise

from llmcourse.teaching.notebooks import cell_source, read_notebook

NB1 = "week05/01_diffusion_from_scratch.ipynb"
NB2 = "week05/02_latent_diffusion.ipynb"
T = 20  # a short noise schedule keeps the sampler tests to milliseconds


class TinyEps(torch.nn.Module):
    """A stand-in for the UNet: a fixed function of x and t, returned the way diffusers models return it."""

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float32)
        return SimpleNamespace(sample=0.4 * x + 0.05 * t * torch.sin(3 * x) - 0.02 * t)


def _cell(nb, cell_id):
    return next(cell_source(c) for c in read_notebook(ROOT / nb).cells if c.get("id") == cell_id)


REF_SAMPLER = _cell(NB1, "ref-sampler")  # the notebook's reference loop with diffusers' schedulers


def _ctx1(with_steps=False):
    sched = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    ctx = {"torch": torch, "F": F, "DDPMScheduler": DDPMScheduler, "DDIMScheduler": DDIMScheduler,
           "scheduler": sched, "TIMESTEPS": T, "alphas_cumprod": sched.alphas_cumprod, "IMAGE_SIZE": 4, "SEED": 0,
           "unet": TinyEps(),
           "print": lambda *a, **k: None}
    exec(REF_SAMPLER, ctx)  # defines sample, ddpm, ddim, betas
    if with_steps:  # exercise 1.4 calls the learner's ddpm_step: give it the reference one
        ex_src = _cell(NB1, "ex13")
        exec(ex_src.replace("    ### BEGIN SOLUTION\n", "").replace("    ### END SOLUTION\n", ""), ctx)
    return ctx


def _ctx_formulas():  # exercises 1.1 and 1.2 check fixed timesteps of the notebook's 100-step schedule
    sched = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    return {"torch": torch, "F": F, "DDPMScheduler": DDPMScheduler, "scheduler": sched, "TIMESTEPS": 100,
            "alphas_cumprod": sched.alphas_cumprod, "IMAGE_SIZE": 16,
            "x_train": torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1}


def _ctx2():
    return {"torch": torch, "F": F}


class TinyUNet(torch.nn.Module):
    """A stand-in for the latent UNet: one 1x1 convolution plus a term in t, returned the way diffusers returns it."""

    def __init__(self, channels=4):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, z, t):
        return SimpleNamespace(sample=self.conv(z) + 0.01 * torch.as_tensor(t, dtype=torch.float32).view(-1, 1, 1, 1))


def _ctx_vae():
    """Week 5.2's VAE class (from the notebook, randomly initialised), a few random images and their latents."""
    ctx = {"torch": torch, "nn": torch.nn, "F": F, "LATENT_CHANNELS": 4, "IMAGE_SIZE": 32, "SEED": 0, "TIMESTEPS": T,
           "llmcourse": SimpleNamespace(seed_everything=torch.manual_seed), "print": lambda *a, **k: None,
           "scheduler": DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=False),
           "make_unet": lambda size, channels: TinyUNet(channels)}
    exec(_cell(NB2, "b0b7c8a2"), ctx)  # class VAE
    torch.manual_seed(0)
    ctx["vae"] = ctx["VAE"]().eval()
    ctx["x_train"] = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        mu = ctx["vae"].encode(ctx["x_train"])[0]
    ctx["scaling_factor"] = (1 / mu.std()).item()  # as the notebook computes it: far from 1 for a random VAE
    ctx["latents"] = mu * ctx["scaling_factor"]
    return ctx


@pytest.mark.parametrize("nb, ex, ctx", [
    (NB1, "1.1", _ctx_formulas), (NB1, "1.2", _ctx_formulas), (NB1, "1.3", _ctx1),
    (NB1, "1.4", lambda: _ctx1(with_steps=True)), (NB1, "1.5", _ctx1), (NB2, "2.1", _ctx2), (NB2, "2.2", _ctx2),
    (NB2, "2.3", _ctx_vae), (NB2, "2.4", _ctx_vae)])
def test_reference_passes_and_stub_is_not_attempted(nb, ex, ctx):
    assert run_exercise(nb, ex, ctx()).status == "passed"
    assert run_exercise(nb, ex, ctx(), solution=STUB).status == "not attempted"


@pytest.mark.parametrize("wrong", [
    "return alphas_cumprod[t].view(-1, 1, 1, 1) * x0 + (1 - alphas_cumprod[t].view(-1, 1, 1, 1)) * noise",  # no sqrt
    "ab = alphas_cumprod[t].view(-1, 1, 1, 1)\nreturn ab.sqrt() * x0 + ab.sqrt() * noise",
    # alpha, not alpha-bar:
    "ab = scheduler.alphas[t].view(-1, 1, 1, 1)\nreturn ab.sqrt() * x0 + (1 - ab).sqrt() * noise",
    "ab = alphas_cumprod[t[0]]\nreturn ab.sqrt() * x0 + (1 - ab).sqrt() * noise",  # one step for the whole batch
])
def test_q_sample_rejects(wrong):
    assert run_exercise(NB1, "1.1", _ctx_formulas(), solution=wrong).status == "failed"


@pytest.mark.parametrize("wrong", [
    "ab = alphas_cumprod[t].view(-1, 1, 1, 1)\nreturn (x_t - (1 - ab) * eps) / ab",  # no sqrt
    "ab = alphas_cumprod[t].view(-1, 1, 1, 1)\nreturn (x_t + (1 - ab).sqrt() * eps) / ab.sqrt()",  # sign
    "return x_t - eps",
])
def test_predict_x0_rejects(wrong):
    assert run_exercise(NB1, "1.2", _ctx_formulas(), solution=wrong).status == "failed"


_DDPM_HEAD = """
ab_t = alphas_cumprod[t]
ab_prev = alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
beta_t = betas[t]
x0 = ((x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()).clamp(-1, 1)
mean = ab_prev.sqrt() * beta_t / (1 - ab_t) * x0 + (1 - beta_t).sqrt() * (1 - ab_prev) / (1 - ab_t) * x_t
"""
_TILDE = "((1 - ab_prev) / (1 - ab_t) * beta_t).sqrt()"


@pytest.mark.parametrize("wrong", [
    _DDPM_HEAD + "if t == 0:\n    return mean\nreturn mean + beta_t.sqrt() * noise",  # beta_t, not beta-tilde
    _DDPM_HEAD + "return mean",  # no noise at t > 0
    _DDPM_HEAD + f"return mean + {_TILDE} * torch.randn_like(x_t)",  # fresh noise instead of the given noise
    # alpha_t where alpha-bar belongs in the x0 estimate:
    _DDPM_HEAD.replace("ab_t = alphas_cumprod[t]", "ab_t = 1 - betas[t]")
    + f"if t == 0:\n    return mean\nreturn mean + {_TILDE} * noise",
    _DDPM_HEAD.replace(".clamp(-1, 1)", "") + f"if t == 0:\n    return mean\nreturn mean + {_TILDE} * noise",  # no clip
    # the previous alpha-bar taken at t (off by one):
    _DDPM_HEAD.replace("alphas_cumprod[t - 1] if t > 0", "alphas_cumprod[t] if t > 0")
    + f"if t == 0:\n    return mean\nreturn mean + {_TILDE} * noise",
])
def test_ddpm_step_rejects(wrong):
    assert run_exercise(NB1, "1.3", _ctx1(), solution=wrong).status == "failed"


_LOOP = """
g = torch.Generator().manual_seed(seed)
x = torch.randn(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)
for t in {order}:
    eps = model(x, {model_t}).sample
    noise = {noise} if t > 0 else None
    x = ddpm_step(x, eps, t, noise)
return x
"""
_RIGHT = {"order": "range(TIMESTEPS - 1, -1, -1)", "model_t": "t", "noise": "torch.randn(x.shape, generator=g)"}


@pytest.mark.parametrize("change", [
    {"order": "range(TIMESTEPS)"},  # cleanest timestep first
    {"order": "range(TIMESTEPS - 1, 0, -1)"},  # off by one: never takes the t = 0 step
    {"order": "range(TIMESTEPS - 2, -1, -1)"},  # off by one: starts below the noisiest step
    {"noise": "torch.randn_like(x)"},  # step noise not from the seeded generator
    {"model_t": "t + 1"},  # the model is told the wrong noise level
])
def test_ddpm_loop_rejects(change):
    wrong = _LOOP.format(**{**_RIGHT, **change})
    assert run_exercise(NB1, "1.4", _ctx1(with_steps=True), solution=wrong).status == "failed"


_DDIM = """
ab_t = alphas_cumprod[t]
ab_prev = alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
x0 = ((x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()).clamp(-1, 1)
return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
"""


@pytest.mark.parametrize("wrong", [
    _DDIM.replace("alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)", "alphas_cumprod[t_prev]"),  # wraps
    _DDIM.replace("(1 - ab_prev).sqrt() * eps", "(1 - ab_t).sqrt() * eps"),  # noise part at the current level
    _DDIM.replace("return ab_prev.sqrt() * x0", "return ab_t.sqrt() * x0"),  # signal part at the current level
    _DDIM.replace("alphas_cumprod[t_prev] if", "scheduler.alphas[t_prev] if"),  # alpha, not alpha-bar
    _DDIM.replace(".clamp(-1, 1)", ""),  # no clip, unlike the scheduler
])
def test_ddim_step_rejects(wrong):
    assert run_exercise(NB1, "1.5", _ctx1(), solution=wrong).status == "failed"


@pytest.mark.parametrize("wrong", [
    "return mu + torch.exp(logvar) * eps",  # variance instead of standard deviation
    "return mu + logvar * eps",
    "return mu * torch.exp(0.5 * logvar) + eps",
])
def test_reparameterize_rejects(wrong):
    assert run_exercise(NB2, "2.1", _ctx2(), solution=wrong).status == "failed"


@pytest.mark.parametrize("wrong", [
    "return (-(1 + logvar - mu.pow(2) - logvar.exp())).mean()",  # missing 1/2
    "return (0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()",  # sign
    "return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum()",  # sum, not mean
    "return (-0.5 * (1 + logvar - mu - logvar.exp())).mean()",
])
def test_kl_rejects(wrong):
    assert run_exercise(NB2, "2.2", _ctx2(), solution=wrong).status == "failed"


_VAE_FWD = """
mu, logvar = vae.encoder(x).chunk(2, dim=1)
logvar = logvar.clamp(-10, 10)
z = mu + torch.exp(0.5 * logvar) * eps
return vae.decoder(z), mu, logvar
"""


@pytest.mark.parametrize("wrong", [
    _VAE_FWD.replace("mu, logvar = vae.encoder", "logvar, mu = vae.encoder"),  # halves swapped
    _VAE_FWD.replace("torch.exp(0.5 * logvar)", "torch.exp(logvar)"),  # variance, not standard deviation
    _VAE_FWD.replace("return vae.decoder(z)", "return vae.decoder(mu)"),  # decodes the mean: eps ignored
    _VAE_FWD.replace("chunk(2, dim=1)", "chunk(2, dim=-1)"),  # split along the width
])
def test_vae_forward_rejects(wrong):
    assert run_exercise(NB2, "2.3", _ctx_vae(), solution=wrong).status == "failed"


_LATENT_LOSS = """
with torch.no_grad():
    mu, logvar = vae.encode(x0)
z_t = scheduler.add_noise(mu * scaling_factor, noise, t)
return F.mse_loss(unet(z_t, t).sample, noise)
"""


@pytest.mark.parametrize("wrong", [
    _LATENT_LOSS.replace("mu * scaling_factor", "mu"),  # the latent scale factor forgotten
    _LATENT_LOSS.replace("mu * scaling_factor", "(mu + (0.5 * logvar).exp() * torch.randn_like(mu)) * scaling_factor"),
    _LATENT_LOSS.replace("with torch.no_grad():\n    ", ""),  # gradients flow into the frozen VAE
    _LATENT_LOSS.replace("scheduler.add_noise(mu * scaling_factor, noise, t)",
                         "vae.encode(scheduler.add_noise(x0, torch.randn_like(x0), t))[0] * scaling_factor"),  # pixels
    _LATENT_LOSS.replace("sample, noise)", "sample, mu * scaling_factor)"),  # predicts the clean latent
])
def test_latent_loss_rejects(wrong):
    assert run_exercise(NB2, "2.4", _ctx_vae(), solution=wrong).status == "failed"
