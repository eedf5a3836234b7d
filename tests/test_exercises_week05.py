"""Week 5 exercise checks pass the reference, reject plausible wrong answers and count stubs as not attempted."""

import functools
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from exercise_harness import ROOT, STUB, judge_tests, run_exercise
from test_pipelines import LOOP as PIPE_LOOP
from test_pipelines import RIGHT as PIPE_RIGHT
from test_pipelines import RIGHT_START, START

from llmcourse.teaching.notebooks import cell_source, read_notebook

NB1 = "week05/01_diffusion_from_scratch.ipynb"
NB2 = "week05/02_latent_diffusion.ipynb"
SEED = 20261204  # the batch seed the judged answers are drawn from (a real batch draws a fresh one)
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


WRONG_1_1 = {
    "no sqrt": "return alphas_cumprod[t].view(-1, 1, 1, 1) * x0 + (1 - alphas_cumprod[t].view(-1, 1, 1, 1)) * noise",
    "signal factor on the noise": "ab = alphas_cumprod[t].view(-1, 1, 1, 1)\nreturn ab.sqrt() * x0 + ab.sqrt() * noise",
    "alpha, not alpha-bar":
        "ab = scheduler.alphas[t].view(-1, 1, 1, 1)\nreturn ab.sqrt() * x0 + (1 - ab).sqrt() * noise",
    "one step for the whole batch": "ab = alphas_cumprod[t[0]]\nreturn ab.sqrt() * x0 + (1 - ab).sqrt() * noise",
}


@pytest.mark.parametrize("wrong", list(WRONG_1_1.values()), ids=list(WRONG_1_1.keys()))
def test_q_sample_rejects(wrong):
    assert run_exercise(NB1, "1.1", _ctx_formulas(), solution=wrong).status == "failed"


WRONG_1_2 = {
    "no sqrt": "ab = alphas_cumprod[t].view(-1, 1, 1, 1)\nreturn (x_t - (1 - ab) * eps) / ab",
    "sign": "ab = alphas_cumprod[t].view(-1, 1, 1, 1)\nreturn (x_t + (1 - ab).sqrt() * eps) / ab.sqrt()",
    "no factors": "return x_t - eps",
}


@pytest.mark.parametrize("wrong", list(WRONG_1_2.values()), ids=list(WRONG_1_2.keys()))
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


WRONG_1_3 = {
    "beta_t, not beta-tilde": _DDPM_HEAD + "if t == 0:\n    return mean\nreturn mean + beta_t.sqrt() * noise",
    "no noise at t > 0": _DDPM_HEAD + "return mean",
    "fresh noise instead of the given noise": _DDPM_HEAD + f"return mean + {_TILDE} * torch.randn_like(x_t)",
    "alpha_t where alpha-bar belongs in the x0 estimate": _DDPM_HEAD.replace("ab_t = alphas_cumprod[t]",
                                                                             "ab_t = 1 - betas[t]")
    + f"if t == 0:\n    return mean\nreturn mean + {_TILDE} * noise",
    "no clip": _DDPM_HEAD.replace(".clamp(-1, 1)", "") + f"if t == 0:\n    return mean\nreturn mean + {_TILDE} * noise",
    "previous alpha-bar taken at t": _DDPM_HEAD.replace("alphas_cumprod[t - 1] if t > 0", "alphas_cumprod[t] if t > 0")
    + f"if t == 0:\n    return mean\nreturn mean + {_TILDE} * noise",
}


@pytest.mark.parametrize("wrong", list(WRONG_1_3.values()), ids=list(WRONG_1_3.keys()))
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


WRONG_1_4 = {name: _LOOP.format(**{**_RIGHT, **change}) for name, change in {
    "cleanest timestep first": {"order": "range(TIMESTEPS)"},
    "never takes the t = 0 step": {"order": "range(TIMESTEPS - 1, 0, -1)"},
    "starts below the noisiest step": {"order": "range(TIMESTEPS - 2, -1, -1)"},
    "step noise not from the seeded generator": {"noise": "torch.randn_like(x)"},
    "the model is told the wrong noise level": {"model_t": "t + 1"},
}.items()}


@pytest.mark.parametrize("wrong", list(WRONG_1_4.values()), ids=list(WRONG_1_4.keys()))
def test_ddpm_loop_rejects(wrong):
    assert run_exercise(NB1, "1.4", _ctx1(with_steps=True), solution=wrong).status == "failed"


_DDIM = """
ab_t = alphas_cumprod[t]
ab_prev = alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
x0 = ((x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()).clamp(-1, 1)
return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
"""


WRONG_1_5 = {
    "a negative t_prev wraps": _DDIM.replace("alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)",
                                             "alphas_cumprod[t_prev]"),
    "noise part at the current level": _DDIM.replace("(1 - ab_prev).sqrt() * eps", "(1 - ab_t).sqrt() * eps"),
    "signal part at the current level": _DDIM.replace("return ab_prev.sqrt() * x0", "return ab_t.sqrt() * x0"),
    "alpha, not alpha-bar": _DDIM.replace("alphas_cumprod[t_prev] if", "scheduler.alphas[t_prev] if"),
    "no clip, unlike the scheduler": _DDIM.replace(".clamp(-1, 1)", ""),
}


@pytest.mark.parametrize("wrong", list(WRONG_1_5.values()), ids=list(WRONG_1_5.keys()))
def test_ddim_step_rejects(wrong):
    assert run_exercise(NB1, "1.5", _ctx1(), solution=wrong).status == "failed"


WRONG_2_1 = {
    "variance instead of standard deviation": "return mu + torch.exp(logvar) * eps",
    "log-variance as the scale": "return mu + logvar * eps",
    "scales the mean": "return mu * torch.exp(0.5 * logvar) + eps",
}


@pytest.mark.parametrize("wrong", list(WRONG_2_1.values()), ids=list(WRONG_2_1.keys()))
def test_reparameterize_rejects(wrong):
    assert run_exercise(NB2, "2.1", _ctx2(), solution=wrong).status == "failed"


WRONG_2_2 = {
    "missing 1/2": "return (-(1 + logvar - mu.pow(2) - logvar.exp())).mean()",
    "sign": "return (0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()",
    "sum, not mean": "return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum()",
    "mu, not mu squared": "return (-0.5 * (1 + logvar - mu - logvar.exp())).mean()",
}


@pytest.mark.parametrize("wrong", list(WRONG_2_2.values()), ids=list(WRONG_2_2.keys()))
def test_kl_rejects(wrong):
    assert run_exercise(NB2, "2.2", _ctx2(), solution=wrong).status == "failed"


_VAE_FWD = """
mu, logvar = vae.encoder(x).chunk(2, dim=1)
logvar = logvar.clamp(-10, 10)
z = mu + torch.exp(0.5 * logvar) * eps
return vae.decoder(z), mu, logvar
"""


WRONG_2_3 = {
    "halves swapped": _VAE_FWD.replace("mu, logvar = vae.encoder", "logvar, mu = vae.encoder"),
    "variance, not standard deviation": _VAE_FWD.replace("torch.exp(0.5 * logvar)", "torch.exp(logvar)"),
    "decodes the mean: eps ignored": _VAE_FWD.replace("return vae.decoder(z)", "return vae.decoder(mu)"),
    "split along the width": _VAE_FWD.replace("chunk(2, dim=1)", "chunk(2, dim=-1)"),
}


@pytest.mark.parametrize("wrong", list(WRONG_2_3.values()), ids=list(WRONG_2_3.keys()))
def test_vae_forward_rejects(wrong):
    assert run_exercise(NB2, "2.3", _ctx_vae(), solution=wrong).status == "failed"


_LATENT_LOSS = """
with torch.no_grad():
    mu, logvar = vae.encode(x0)
z_t = scheduler.add_noise(mu * scaling_factor, noise, t)
return F.mse_loss(unet(z_t, t).sample, noise)
"""


WRONG_2_4 = {
    "the latent scale factor forgotten": _LATENT_LOSS.replace("mu * scaling_factor", "mu"),
    "a sampled latent, not the mean": _LATENT_LOSS.replace(
        "mu * scaling_factor", "(mu + (0.5 * logvar).exp() * torch.randn_like(mu)) * scaling_factor"),
    "gradients flow into the frozen VAE": _LATENT_LOSS.replace("with torch.no_grad():\n    ", ""),
    "noised in pixel space": _LATENT_LOSS.replace(
        "scheduler.add_noise(mu * scaling_factor, noise, t)",
        "vae.encode(scheduler.add_noise(x0, torch.randn_like(x0), t))[0] * scaling_factor"),
    "predicts the clean latent": _LATENT_LOSS.replace("sample, noise)", "sample, mu * scaling_factor)"),
}


@pytest.mark.parametrize("wrong", list(WRONG_2_4.values()), ids=list(WRONG_2_4.keys()))
def test_latent_loss_rejects(wrong):
    assert run_exercise(NB2, "2.4", _ctx_vae(), solution=wrong).status == "failed"


# ------------------------------------------------------------------------------------------------ the judge
# Graded, these exercises are judged outside the kernel (issue 21): the check cell's answer spec computes the answer
# on inputs drawn from the batch's seed, and the grader compares it with the reference's. The judge must reject every
# wrong answer the checks above (and tests/test_pipelines.py's, for week05/03) reject, pass the reference, and see a
# stub as not attempted.
NB3 = "week05/03_diffusion_pipelines.ipynb"


@functools.cache
def _tiny_pipeline():
    from llmcourse import pipelines

    return pipelines.tiny_pipeline()


def _ctx_pipeline():
    """Week 5.3's namespace with the tiny random pipeline as `pipe` (the specs take only its text encoder, tokenizer
    and scheduler config, and build their own random pipeline from the seed)."""
    from diffusers import EulerDiscreteScheduler

    from llmcourse import pipelines

    return {"torch": torch, "pipe": _tiny_pipeline(), "pipelines": pipelines, "DDIMScheduler": DDIMScheduler,
            "EulerDiscreteScheduler": EulerDiscreteScheduler}


WRONG_3_1 = {name: PIPE_LOOP.format(**{**PIPE_RIGHT, **change}) for name, change in {
    "the start is not in Euler's units of sigma": {"init": "1.0"},
    "no scale_model_input": {"model_input": "latents"},
    "latents decoded without undoing the scaling": {"decode": "latents"},
    "scaled the wrong way": {"decode": "latents * pipe.vae.config.scaling_factor"},
    "left in [-1, 1]": {"out": "image.clamp(-1, 1)"},
}.items()}
WRONG_3_2 = {name: START.format(**{**RIGHT_START, **change}) for name, change in {
    "the noisiest steps instead of the last ones": {"timesteps": "scheduler.timesteps[:kept]"},
    "noised to the last kept step": {"noisy": "scheduler.add_noise(latents, noise, timesteps[-1:])"},
    "rounds 5.5 up": {"kept": "round(num_inference_steps * strength)"},
    "strength used as a noise amount": {"noisy": "latents + strength * noise"},
    "strength x T": {"noisy": "scheduler.add_noise(latents, noise, torch.tensor([int(strength * 1000) - 1]))"},
}.items()}

# The spec of 2.3 also feeds inputs that push the log-variance past the clamp the text asks for: the check's VAE never
# gets there, so only the judge rejects this one.
JUDGED_WRONG_2_3 = {**WRONG_2_3, "logvar not clamped": _VAE_FWD.replace("logvar = logvar.clamp(-10, 10)\n", "")}

JUDGED = [(NB1, "1.1", _ctx_formulas, WRONG_1_1), (NB1, "1.2", _ctx_formulas, WRONG_1_2),
          (NB1, "1.3", _ctx1, WRONG_1_3), (NB1, "1.4", lambda: _ctx1(with_steps=True), WRONG_1_4),
          (NB1, "1.5", _ctx1, WRONG_1_5),
          (NB2, "2.1", _ctx2, WRONG_2_1), (NB2, "2.2", _ctx2, WRONG_2_2), (NB2, "2.3", _ctx_vae, JUDGED_WRONG_2_3),
          (NB2, "2.4", _ctx_vae, WRONG_2_4), (NB3, "3.1", _ctx_pipeline, WRONG_3_1),
          (NB3, "3.2", _ctx_pipeline, WRONG_3_2)]


test_the_judge_rejects_the_wrong_answers, test_the_judge_passes_the_reference_and_sees_a_stub_as_not_attempted = (
    judge_tests(JUDGED, SEED))
