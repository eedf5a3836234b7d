"""Week 5 exercise checks pass the reference, reject plausible wrong answers and count stubs as not attempted."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from exercise_harness import STUB, run_exercise

NB1 = "week05/01_diffusion_from_scratch.ipynb"
NB2 = "week05/02_latent_diffusion.ipynb"


def _ctx1():
    sched = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    return {"torch": torch, "F": F, "DDPMScheduler": DDPMScheduler, "scheduler": sched, "TIMESTEPS": 100,
            "alphas_cumprod": sched.alphas_cumprod, "IMAGE_SIZE": 16,
            "x_train": torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1}


def _ctx2():
    return {"torch": torch, "F": F}


@pytest.mark.parametrize("nb, ex, ctx", [(NB1, "1.1", _ctx1), (NB1, "1.2", _ctx1), (NB2, "2.1", _ctx2),
                                         (NB2, "2.2", _ctx2)])
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
    assert run_exercise(NB1, "1.1", _ctx1(), solution=wrong).status == "failed"


@pytest.mark.parametrize("wrong", [
    "ab = alphas_cumprod[t].view(-1, 1, 1, 1)\nreturn (x_t - (1 - ab) * eps) / ab",  # no sqrt
    "ab = alphas_cumprod[t].view(-1, 1, 1, 1)\nreturn (x_t + (1 - ab).sqrt() * eps) / ab.sqrt()",  # sign
    "return x_t - eps",
])
def test_predict_x0_rejects(wrong):
    assert run_exercise(NB1, "1.2", _ctx1(), solution=wrong).status == "failed"


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
