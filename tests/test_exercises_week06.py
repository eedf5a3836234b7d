"""Week 6 exercise checks pass the reference, reject plausible wrong answers and count stubs as not attempted."""

import pytest
import torch
import torch.nn.functional as F
from exercise_harness import STUB, run_exercise

NB1 = "week06/01_clip_from_scratch.ipynb"
NB2 = "week06/02_text_to_image.ipynb"


def _ctx():
    return {"torch": torch, "F": F}


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


@pytest.mark.parametrize("wrong", [
    "return eps_cond + scale * (eps_cond - eps_uncond)",  # off by one in the scale
    "return eps_uncond + scale * (eps_uncond - eps_cond)",  # wrong direction
    "return scale * eps_cond",
    "return (1 - scale) * eps_cond + scale * eps_uncond",
])
def test_guided_noise_rejects(wrong):
    assert run_exercise(NB2, "2.2", _ctx(), solution=wrong).status == "failed"
