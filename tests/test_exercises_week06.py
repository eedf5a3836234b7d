"""Week 6 exercise checks pass the reference, reject plausible wrong answers and count stubs as not attempted."""

import pytest
import torch
import torch.nn.functional as F
from exercise_harness import STUB, run_exercise

from llmcourse import vision

NB1 = "week06/01_clip_from_scratch.ipynb"
NB2 = "week06/02_text_to_image.ipynb"


def _ctx():
    return {"torch": torch, "F": F, "vision": vision, "SAMPLE_STEPS": 20, "SEED": 0, "IMAGE_SIZE": 16}


@pytest.mark.parametrize("nb, ex", [(NB1, "1.1"), (NB1, "1.2"), (NB2, "2.1"), (NB2, "2.2")])
def test_reference_passes_and_stub_is_not_attempted(nb, ex):
    assert run_exercise(nb, ex, _ctx()).status == "passed"
    assert run_exercise(nb, ex, _ctx(), solution=STUB).status == "not attempted"


@pytest.mark.parametrize("wrong", [
    "return F.cross_entropy(logits, torch.arange(len(logits)))",  # one direction only
    "t = torch.arange(len(logits))\nreturn F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)",  # no average
    "t = torch.arange(len(logits))\nreturn (F.cross_entropy(logits, t) + F.cross_entropy(logits, t)) / 2",
    "return -logits.diag().mean()",
])
def test_info_nce_rejects(wrong):
    assert run_exercise(NB1, "1.1", _ctx(), solution=wrong).status == "failed"


@pytest.mark.parametrize("wrong", [
    "top = sim.topk(k, dim=1, largest=False).indices\n"
    "return (item_labels[top] == query_labels[:, None]).float().mean().item()",  # least similar
    "top = sim.topk(k, dim=1).indices\nreturn (item_labels[top] == query_labels[:, None]).float().sum().item()",
    "top = sim.argmax(1)\nreturn (item_labels[top] == query_labels).float().mean().item()",  # k ignored
])
def test_precision_at_k_rejects(wrong):
    assert run_exercise(NB1, "1.2", _ctx(), solution=wrong).status == "failed"


@pytest.mark.parametrize("wrong", [
    "return torch.where(drop.view(-1, 1, 1), cond, null)",  # inverted
    "return cond",
    "return torch.where(~drop.view(-1, 1, 1), null, cond)",
])
def test_drop_prompts_rejects(wrong):
    assert run_exercise(NB2, "2.1", _ctx(), solution=wrong).status == "failed"


# Exercise 2.2: the whole guided sampling loop. The reference, with the wrong line marked by each variant below.
_LOOP = """g = torch.Generator().manual_seed(seed)
x = torch.randn(len(cond), 1, size, size, generator=g)
scheduler.set_timesteps(steps)
uncond = null.expand(len(cond), -1, -1)
for t in scheduler.timesteps:
    eps_uncond = eps_model(x, t, uncond)
    eps_cond = eps_model(x, t, cond)
    eps = eps_uncond + scale * (eps_cond - eps_uncond)
    x = scheduler.step(eps, t, x).prev_sample
return x"""


def _loop(old, new):
    assert old in _LOOP
    return _LOOP.replace(old, new)


def test_guided_sample_reference_in_the_tests_passes():  # the variants below differ from it by one line only
    assert run_exercise(NB2, "2.2", _ctx(), solution=_LOOP).status == "passed"


@pytest.mark.parametrize("wrong", [
    _loop("eps_uncond + scale * (eps_cond - eps_uncond)", "eps_uncond - scale * (eps_cond - eps_uncond)"),  # sign
    _loop("eps_uncond + scale * (eps_cond - eps_uncond)", "eps_cond + scale * (eps_cond - eps_uncond)"),  # (1+w) form
    _loop("eps_uncond = eps_model(x, t, uncond)", "eps_uncond = eps_model(x, t, cond)"),  # prompt in both branches
    _loop("x = torch.randn(len(cond), 1, size, size, generator=g)", "x = torch.randn(len(cond), 1, size, size)"),
    _loop("x = torch.randn(len(cond), 1, size, size, generator=g)",
          "x = x0 = torch.randn(len(cond), 1, size, size, generator=g)").replace(
        "scheduler.step(eps, t, x)", "scheduler.step(eps, t, x0)"),  # every step applied to the starting noise
    _loop("x = scheduler.step(eps, t, x).prev_sample", "x = scheduler.step(eps_cond, t, x).prev_sample"),  # unguided
])
def test_guided_sample_rejects(wrong):
    assert run_exercise(NB2, "2.2", _ctx(), solution=wrong).status == "failed"
