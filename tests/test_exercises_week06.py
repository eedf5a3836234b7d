"""Week 6 exercise checks pass the reference, reject plausible wrong answers and count stubs as not attempted."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from exercise_harness import STUB, judge_tests, run_exercise

from llmcourse import vision

NB1 = "week06/01_clip_from_scratch.ipynb"
NB2 = "week06/02_text_to_image.ipynb"
SEED = 20261204  # the batch seed the judged answers are drawn from (a real batch draws a fresh one)


def _ctx():
    return {"torch": torch, "F": F, "vision": vision, "SAMPLE_STEPS": 20, "SEED": 0, "IMAGE_SIZE": 16}


@pytest.mark.parametrize("nb, ex", [(NB1, "1.1"), (NB1, "1.2"), (NB2, "2.1"), (NB2, "2.2")])
def test_reference_passes_and_stub_is_not_attempted(nb, ex):
    assert run_exercise(nb, ex, _ctx()).status == "passed"
    assert run_exercise(nb, ex, _ctx(), solution=STUB).status == "not attempted"


WRONG_1_1 = {
    "one direction only": "return F.cross_entropy(logits, torch.arange(len(logits)))",
    "no average": "t = torch.arange(len(logits))\nreturn F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)",
    "the same direction twice":
        "t = torch.arange(len(logits))\nreturn (F.cross_entropy(logits, t) + F.cross_entropy(logits, t)) / 2",
    "no softmax": "return -logits.diag().mean()",
}


@pytest.mark.parametrize("wrong", list(WRONG_1_1.values()), ids=list(WRONG_1_1.keys()))
def test_info_nce_rejects(wrong):
    assert run_exercise(NB1, "1.1", _ctx(), solution=wrong).status == "failed"


WRONG_1_2 = {
    "least similar": "top = sim.topk(k, dim=1, largest=False).indices\n"
                     "return (item_labels[top] == query_labels[:, None]).float().mean().item()",
    "a count, not a share":
        "top = sim.topk(k, dim=1).indices\nreturn (item_labels[top] == query_labels[:, None]).float().sum().item()",
    "k ignored": "top = sim.argmax(1)\nreturn (item_labels[top] == query_labels).float().mean().item()",
}


@pytest.mark.parametrize("wrong", list(WRONG_1_2.values()), ids=list(WRONG_1_2.keys()))
def test_precision_at_k_rejects(wrong):
    assert run_exercise(NB1, "1.2", _ctx(), solution=wrong).status == "failed"


WRONG_2_1 = {
    "inverted": "return torch.where(drop.view(-1, 1, 1), cond, null)",
    "never drops": "return cond",
    "mask negated": "return torch.where(~drop.view(-1, 1, 1), null, cond)",
}


@pytest.mark.parametrize("wrong", list(WRONG_2_1.values()), ids=list(WRONG_2_1.keys()))
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


WRONG_2_2 = {
    "sign": _loop("eps_uncond + scale * (eps_cond - eps_uncond)", "eps_uncond - scale * (eps_cond - eps_uncond)"),
    "(1+w) form": _loop("eps_uncond + scale * (eps_cond - eps_uncond)", "eps_cond + scale * (eps_cond - eps_uncond)"),
    "prompt in both branches": _loop("eps_uncond = eps_model(x, t, uncond)", "eps_uncond = eps_model(x, t, cond)"),
    "unseeded start": _loop("x = torch.randn(len(cond), 1, size, size, generator=g)",
                            "x = torch.randn(len(cond), 1, size, size)"),
    "every step applied to the starting noise": _loop(
        "x = torch.randn(len(cond), 1, size, size, generator=g)",
        "x = x0 = torch.randn(len(cond), 1, size, size, generator=g)").replace(
        "scheduler.step(eps, t, x)", "scheduler.step(eps, t, x0)"),
    "unguided": _loop("x = scheduler.step(eps, t, x).prev_sample", "x = scheduler.step(eps_cond, t, x).prev_sample"),
}


@pytest.mark.parametrize("wrong", list(WRONG_2_2.values()), ids=list(WRONG_2_2.keys()))
def test_guided_sample_rejects(wrong):
    assert run_exercise(NB2, "2.2", _ctx(), solution=wrong).status == "failed"


# ------------------------------------------------------------------------------------------------ the judge
# Graded, these exercises are judged outside the kernel (issue 21): the check cell's answer spec computes the answer
# on inputs drawn from the batch's seed, and the grader compares it with the reference's. The judge must reject every
# wrong answer the checks above reject, pass the reference, and see a stub as not attempted.
def _judge_ctx():
    return {**_ctx(), "np": np, "DDIMScheduler": DDIMScheduler}


JUDGED = [(NB1, "1.1", _judge_ctx, WRONG_1_1), (NB1, "1.2", _judge_ctx, WRONG_1_2), (NB2, "2.1", _judge_ctx, WRONG_2_1),
          (NB2, "2.2", _judge_ctx, WRONG_2_2)]


test_the_judge_rejects_the_wrong_answers, test_the_judge_passes_the_reference_and_sees_a_stub_as_not_attempted = (
    judge_tests(JUDGED, SEED))
