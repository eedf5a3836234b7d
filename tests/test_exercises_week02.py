"""Week 2 exercise checks: each accepts the reference solution, rejects plausible wrong answers, and counts a stub as
not attempted (tests/exercise_harness.py runs one exercise cell and its check cell outside the notebook)."""

import math

import pytest
import torch
from exercise_harness import STUB, judge_tests, run_exercise

SEED = 20261204  # the batch seed the judged answers are drawn from (a real batch draws a fresh one)

GPT_NB = "week02/01_tiny_gpt_from_scratch.ipynb"
HF_NB = "week02/02_hf_transformers_basics.ipynb"

GPT_CONTEXT = {"math": math, "torch": torch, "F": torch.nn.functional, "V": 65, "BLOCK_SIZE": 64, "N_LAYER": 4,
               "N_EMBD": 128, "SWEEP_FLOPS": 3e10, "n_opt": 8e3, "d_opt": 6e5}
HF_CONTEXT = {"math": math, "torch": torch}


def run(notebook, exercise, solution=None):
    context = GPT_CONTEXT if notebook == GPT_NB else HF_CONTEXT
    return run_exercise(notebook, exercise, context=dict(context), solution=solution)


@pytest.mark.parametrize("notebook, exercise", [(GPT_NB, "1.1"), (GPT_NB, "1.2"), (GPT_NB, "1.3"),
                                                (GPT_NB, "1.4"), (HF_NB, "2.1"), (HF_NB, "2.2"),
                                                (HF_NB, "2.3"), (HF_NB, "2.4")])
def test_reference_solution_passes_and_stub_is_not_attempted(notebook, exercise):
    result = run(notebook, exercise)
    assert result.status == "passed", result.message
    assert run(notebook, exercise, STUB).status == "not attempted"


# Exercise 1.1: causal self-attention written out (the lines before the scores are the same in every answer).
_QKV = ("B, T, C = x.shape\n"
        "q, k, v = attn.c_attn(x).split(C, dim=2)\n"
        "q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k, v))\n")
_MASK = "att = att.masked_fill(~attn.mask[:, :, :T, :T], float('-inf'))\n"
_OUT = "y = (F.softmax(att, dim=-1) @ v).transpose(1, 2).contiguous().view(B, T, C)\nreturn attn.c_proj(y)"
_SCALED = "att = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))\n"

WRONG = {
    "1.1": {
        "no causal mask": _QKV + _SCALED + _OUT,
        "scaled by sqrt(C), not the head size": _QKV + "att = q @ k.transpose(-2, -1) / math.sqrt(C)\n" + _MASK + _OUT,
        "no scaling": _QKV + "att = q @ k.transpose(-2, -1)\n" + _MASK + _OUT,
        "heads split without the transpose": "B, T, C = x.shape\n"
                                             "q, k, v = attn.c_attn(x).split(C, dim=2)\n"
                                             "q, k, v = (t.reshape(B, attn.n_head, T, C // attn.n_head) "
                                             "for t in (q, k, v))\n" + _SCALED + _MASK
                                             + "y = (F.softmax(att, dim=-1) @ v).reshape(B, T, C)\n"
                                               "return attn.c_proj(y)",
        "mask applied after the softmax": _QKV + _SCALED + "att = F.softmax(att, dim=-1)\n"
                                          "att = att.masked_fill(~attn.mask[:, :, :T, :T], 0.0)\n"
                                          "y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)\n"
                                          "return attn.c_proj(y)",
        "no output projection": _QKV + _SCALED + _MASK
                                + "return (F.softmax(att, dim=-1) @ v).transpose(1, 2).contiguous().view(B, T, C)",
    },
    "1.2": {
        "post-norm": "x = block.ln_1(x + block.attn(x))\nreturn block.ln_2(x + block.mlp(x))",
        "no residual around attention": "x = block.attn(block.ln_1(x))\nreturn x + block.mlp(block.ln_2(x))",
        "no residual around the MLP": "x = x + block.attn(block.ln_1(x))\nreturn block.mlp(block.ln_2(x))",
        "normalises the stream itself": "x = block.ln_1(x)\nx = x + block.attn(x)\nx = block.ln_2(x)\n"
                                        "return x + block.mlp(x)",
        "one LayerNorm for both": "x = x + block.attn(block.ln_1(x))\nreturn x + block.mlp(block.ln_1(x))",
        "MLP before attention": "x = x + block.mlp(block.ln_2(x))\nreturn x + block.attn(block.ln_1(x))",
    },
    "1.3": {
        "only 12LC^2": "return 12 * n_layer * n_embd ** 2",
        "head counted twice": "C = n_embd\n"
                              "return 2 * vocab_size * C + block_size * C + n_layer * (12 * C * C + 13 * C) + 2 * C",
        "no final LayerNorm": "C = n_embd\nreturn vocab_size * C + block_size * C + n_layer * (12 * C * C + 13 * C)",
        "no biases": "C = n_embd\nreturn vocab_size * C + block_size * C + n_layer * 12 * C * C + 2 * C",
    },
    "1.4": {
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
    "2.4": {
        "appends along the head axis": "cache_k = torch.cat([cache_k, k_new], dim=1)\n"
                                       "cache_v = torch.cat([cache_v, v_new], dim=1)\n"
                                       "scores = q @ cache_k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
                                       "return scores.softmax(-1) @ cache_v, cache_k, cache_v",
        "attends before appending": "T, P = q.shape[2], cache_k.shape[2]\n"
                                    "scores = q @ cache_k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
                                    "out = scores.softmax(-1) @ cache_v\n"
                                    "return out, torch.cat([cache_k, k_new], 2), torch.cat([cache_v, v_new], 2)",
        "mask not shifted by the cache": "cache_k = torch.cat([cache_k, k_new], dim=2)\n"
                                         "cache_v = torch.cat([cache_v, v_new], dim=2)\n"
                                         "T, S = q.shape[2], cache_k.shape[2]\n"
                                         "scores = q @ cache_k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
                                         "scores = scores.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(), "
                                         "float('-inf'))\n"
                                         "return scores.softmax(-1) @ cache_v, cache_k, cache_v",
        "overwrites the cache": "T = q.shape[2]\n"
                                "scores = q @ k_new.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
                                "allowed = torch.ones(T, T, dtype=torch.bool).tril()\n"
                                "scores = scores.masked_fill(~allowed, float('-inf'))\n"
                                "return scores.softmax(-1) @ v_new, k_new, v_new",
        "no mask": "cache_k = torch.cat([cache_k, k_new], dim=2)\n"
                   "cache_v = torch.cat([cache_v, v_new], dim=2)\n"
                   "scores = q @ cache_k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
                   "return scores.softmax(-1) @ cache_v, cache_k, cache_v",
        "sdpa's is_causal after a cache": "cache_k = torch.cat([cache_k, k_new], dim=2)\n"
                                          "cache_v = torch.cat([cache_v, v_new], dim=2)\n"
                                          "out = torch.nn.functional.scaled_dot_product_attention(q, cache_k, cache_v, "
                                          "is_causal=True)\n"
                                          "return out, cache_k, cache_v",
    },
}


@pytest.mark.parametrize("exercise, name", [(e, n) for e, wrongs in WRONG.items() for n in wrongs])
def test_plausible_wrong_answer_fails_with_hint(exercise, name):
    notebook = GPT_NB if exercise.startswith("1.") else HF_NB
    result = run(notebook, exercise, WRONG[exercise][name])
    assert result.status == "failed", f"{exercise} accepted the wrong answer '{name}'"
    assert "Hint:" in result.message


# ------------------------------------------------------------------------------------------------ the judge
# Graded, these exercises are judged outside the kernel (issue 21): the check cell's answer spec computes the answer
# on inputs drawn from the batch's seed, and the grader compares it with the reference's. The judge must reject every
# wrong answer the checks above reject, pass the reference, and see a stub as not attempted.
def _gpt_ctx() -> dict:
    from llmcourse import gpt as course_gpt  # imported by the notebook's first cells; the specs build modules with it

    return {**GPT_CONTEXT, "course_gpt": course_gpt}


def _hf_ctx() -> dict:
    return dict(HF_CONTEXT)


JUDGED = [(GPT_NB, ex, _gpt_ctx, WRONG[ex]) for ex in ("1.1", "1.2", "1.3", "1.4")] + \
         [(HF_NB, ex, _hf_ctx, WRONG[ex]) for ex in ("2.1", "2.2", "2.3", "2.4")]


test_the_judge_rejects_the_wrong_answers, test_the_judge_passes_the_reference_and_sees_a_stub_as_not_attempted = (
    judge_tests(JUDGED, SEED))
