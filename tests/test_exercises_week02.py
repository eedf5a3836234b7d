"""Week 2 exercise checks: each accepts the reference solution, rejects plausible wrong answers, and counts a stub as
not attempted (tests/exercise_harness.py runs one exercise cell and its check cell outside the notebook)."""

import math

import pytest
import torch
from exercise_harness import STUB, run_exercise

GPT_NB = "week02/01_tiny_gpt_from_scratch.ipynb"
HF_NB = "week02/02_hf_transformers_basics.ipynb"

GPT_CONTEXT = {"math": math, "torch": torch, "V": 65, "BLOCK_SIZE": 64, "N_LAYER": 4, "N_EMBD": 128,
               "SWEEP_FLOPS": 3e11}
HF_CONTEXT = {"torch": torch}


def run(notebook, exercise, solution=None):
    context = GPT_CONTEXT if notebook == GPT_NB else HF_CONTEXT
    return run_exercise(notebook, exercise, context=dict(context), solution=solution)


@pytest.mark.parametrize("notebook, exercise", [(GPT_NB, "1.1"), (GPT_NB, "1.2"), (HF_NB, "2.1"), (HF_NB, "2.2"),
                                                (HF_NB, "2.3")])
def test_reference_solution_passes_and_stub_is_not_attempted(notebook, exercise):
    result = run(notebook, exercise)
    assert result.status == "passed", result.message
    assert run(notebook, exercise, STUB).status == "not attempted"


WRONG = {
    "1.1": {
        "only 12LC^2": "return 12 * n_layer * n_embd ** 2",
        "head counted twice": "C = n_embd\n"
                              "return 2 * vocab_size * C + block_size * C + n_layer * (12 * C * C + 13 * C) + 2 * C",
        "no final LayerNorm": "C = n_embd\nreturn vocab_size * C + block_size * C + n_layer * (12 * C * C + 13 * C)",
        "no biases": "C = n_embd\nreturn vocab_size * C + block_size * C + n_layer * 12 * C * C + 2 * C",
    },
    "1.2": {
        "no square root": "n = flops / (6 * tokens_per_param)\nreturn n, tokens_per_param * n",
        "forgot the 6": "n = math.sqrt(flops / tokens_per_param)\nreturn n, tokens_per_param * n",
        "D = N / 20": "n = math.sqrt(flops / (6 * tokens_per_param))\nreturn n, n / tokens_per_param",
        "ratio ignored": "n = math.sqrt(flops / 120)\nreturn n, 20 * n",
    },
    "2.1": {
        "keeps k+1": "kth = torch.topk(logits, min(k + 1, logits.size(-1)), dim=-1).values[..., -1:]\n"
                     "return logits.masked_fill(logits < kth, float('-inf'))",
        "drops the k-th": "kth = torch.topk(logits, k, dim=-1).values[..., -1:]\n"
                          "return logits.masked_fill(logits <= kth, float('-inf'))",
        "global top-k over the batch": "kth = torch.topk(logits.flatten(), k).values[-1]\n"
                                       "return logits.masked_fill(logits < kth, float('-inf'))",
        "returns probabilities": "kth = torch.topk(logits, k, dim=-1).values[..., -1:]\n"
                                 "return torch.softmax(logits.masked_fill(logits < kth, float('-inf')), -1)",
    },
    "2.2": {
        "excludes the token crossing p": "s, order = torch.sort(logits, dim=-1, descending=True)\n"
                                         "remove = torch.softmax(s, -1).cumsum(-1) >= p\n"
                                         "remove = remove.scatter(-1, order, remove)\n"
                                         "return logits.masked_fill(remove, float('-inf'))",
        "forgets to unsort": "s, order = torch.sort(logits, dim=-1, descending=True)\n"
                             "probs = torch.softmax(s, -1)\n"
                             "remove = probs.cumsum(-1) - probs >= p\n"
                             "return logits.masked_fill(remove, float('-inf'))",
        "threshold on probability": "return logits.masked_fill(torch.softmax(logits, -1) < 1 - p, float('-inf'))",
        "returns sorted logits": "s, order = torch.sort(logits, dim=-1, descending=True)\n"
                                 "probs = torch.softmax(s, -1)\n"
                                 "return s.masked_fill(probs.cumsum(-1) - probs >= p, float('-inf'))",
    },
    "2.3": {
        "right padding": "w = max(len(s) for s in sequences)\n"
                         "ids = torch.tensor([list(s) + [pad_id] * (w - len(s)) for s in sequences])\n"
                         "return ids, torch.tensor([[1] * len(s) + [0] * (w - len(s)) for s in sequences])",
        "mask from ids != pad_id": "w = max(len(s) for s in sequences)\n"
                                   "ids = torch.tensor([[pad_id] * (w - len(s)) + list(s) for s in sequences])\n"
                                   "return ids, (ids != pad_id).long()",
        "inverted mask": "w = max(len(s) for s in sequences)\n"
                         "ids = torch.tensor([[pad_id] * (w - len(s)) + list(s) for s in sequences])\n"
                         "return ids, torch.tensor([[1] * (w - len(s)) + [0] * len(s) for s in sequences])",
    },
}


@pytest.mark.parametrize("exercise, name", [(e, n) for e, wrongs in WRONG.items() for n in wrongs])
def test_plausible_wrong_answer_fails_with_hint(exercise, name):
    notebook = GPT_NB if exercise.startswith("1.") else HF_NB
    result = run(notebook, exercise, WRONG[exercise][name])
    assert result.status == "failed", f"{exercise} accepted the wrong answer '{name}'"
    assert "Hint:" in result.message
