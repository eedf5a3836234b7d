"""Week 3 exercises: every check accepts the reference solution, rejects plausible wrong answers, and reports a
stub as not attempted. Tiny inputs only (no training, no full model loads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from exercise_harness import ROOT, STUB, judge_tests, judged, run_exercise
from tiny_configs import tiny_bert_config, tiny_llama_config

NB1 = "week03/01_small_models_on_a_laptop.ipynb"
NB2 = "week03/02_finetune_classifier.ipynb"
NB3 = "week03/03_quantization.ipynb"
NB4 = "week03/04_pruning_and_distillation.ipynb"


def _outcomes(notebook, exercise, context_factory, wrong):
    right = run_exercise(notebook, exercise, context_factory())
    assert right.status == "passed", right.message
    for solution in wrong:
        result = run_exercise(notebook, exercise, context_factory(), solution=solution)
        assert result.status == "failed", f"accepted a wrong answer:\n{solution}"
    stub = run_exercise(notebook, exercise, context_factory(), solution=STUB)
    assert stub.status == "not attempted", stub.message


# ------------------------------------------------------------------------------------------------ notebook 01
def _nb1_context():
    from types import SimpleNamespace

    from transformers import AutoModel, BertConfig

    from llmcourse.memory import load_config

    smol = SimpleNamespace(config=load_config("HuggingFaceTB/SmolLM2-135M"))
    return {"torch": torch, "AutoModel": AutoModel, "BertConfig": BertConfig,
            "models": {"SmolLM2-135M (decoder)": smol}}


WRONG_1_1 = {
    "no pooler": """
        embeddings = (vocab + max_positions + type_vocab) * hidden + 2 * hidden
        per_layer = 4 * (hidden * hidden + hidden) + 2 * hidden + 2 * hidden * intermediate + intermediate + 3 * hidden
        return embeddings + layers * per_layer
    """,
    "no biases": """
        embeddings = (vocab + max_positions + type_vocab) * hidden
        return embeddings + layers * (4 * hidden * hidden + 2 * hidden * intermediate) + hidden * hidden
    """,
    "no token-type embeddings": """
        embeddings = (vocab + max_positions) * hidden + 2 * hidden
        attention = 4 * (hidden * hidden + hidden) + 2 * hidden
        ffn = hidden * intermediate + intermediate + intermediate * hidden + hidden + 2 * hidden
        return embeddings + layers * (attention + ffn) + hidden * hidden + hidden
    """,
}


def test_exercise_1_1_bert_params():
    _outcomes(NB1, "1.1", _nb1_context, WRONG_1_1.values())


WRONG_1_2 = {
    "query heads": """
        head_dim = config.hidden_size // config.num_attention_heads
        return 2 * config.num_hidden_layers * config.num_attention_heads * head_dim * tokens * batch * bytes_per_value
    """,
    "keys only": """
        head_dim = config.hidden_size // config.num_attention_heads
        return config.num_hidden_layers * config.num_key_value_heads * head_dim * tokens * batch * bytes_per_value
    """,
    "head size from the key/value heads": """
        head_dim = config.hidden_size // config.num_key_value_heads
        return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * tokens * batch * bytes_per_value
    """,
}


def test_exercise_1_2_kv_cache():
    _outcomes(NB1, "1.2", _nb1_context, WRONG_1_2.values())


# ------------------------------------------------------------------------------------------------ notebook 02
def _nb2_f1_context():
    from sklearn.metrics import f1_score

    return {"np": np, "f1_score": f1_score}


WRONG_2_1 = {
    "macro F1": "return float(f1_score(labels, preds, average='macro'))",
    "accuracy": "return float(np.mean(labels == preds))",
    "F1 of the negative class": "return float(f1_score(1 - labels, 1 - preds))",
}


def test_exercise_2_1_f1():
    _outcomes(NB2, "2.1", _nb2_f1_context, WRONG_2_1.values())


_MINILM = []  # the tokenizer, loaded once


def _nb2_unk_context():
    if not _MINILM:
        from transformers import AutoTokenizer

        import llmcourse

        _MINILM.append(AutoTokenizer.from_pretrained(llmcourse.resolve("sentence-transformers/all-MiniLM-L6-v2")))
    return {"tokenizer": _MINILM[0], "reviews": {"text": ["质量很好 𠀀", "差"]}, "train": {"text": ["good day"]}}


WRONG_2_2 = {
    "[CLS] and [SEP] counted": """
        ids = tokenizer(list(texts))["input_ids"]
        return sum(s.count(tokenizer.unk_token_id) for s in ids) / sum(len(s) for s in ids)
    """,
    "mean of per-text fractions": """
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return sum(s.count(tokenizer.unk_token_id) / len(s) for s in ids) / len(ids)
    """,
}


def test_exercise_2_2_unk_fraction():
    _outcomes(NB2, "2.2", _nb2_unk_context, WRONG_2_2.values())


def _nb2_records_context():
    return {"records": [{"lr": 1e-4, "epoch": 1, "val_accuracy": 0.8}]}


WRONG_2_3 = {
    "chosen by test accuracy": 'return max(records, key=lambda r: r.get("test_accuracy", 0))',
    "first of the ties": 'return max(records, key=lambda r: r["val_accuracy"])',
    "learning rate before epochs": 'return min(records, key=lambda r: (-r["val_accuracy"], r["lr"], r["epoch"]))',
    "sorts the records in place": """
    records.sort(key=lambda r: (-r["val_accuracy"], r["epoch"], r["lr"]))
    return records[0]
    """,
}


def test_exercise_2_3_selection_rule():
    _outcomes(NB2, "2.3", _nb2_records_context, WRONG_2_3.values())


# ------------------------------------------------------------------------------------------------ notebook 03
def _nb3_context():
    def absmax_int8(w):
        scale = w.abs().max() / 127
        return torch.round(w / scale).clamp(-127, 127) * scale

    def rel_error(w, w_hat):
        return ((w - w_hat).norm() / w.norm()).item()

    return {"torch": torch, "absmax_int8": absmax_int8, "rel_error": rel_error}


WRONG_3_1 = {
    "absmax int8": """
        scale = x.abs().max() / 127
        return torch.round(x / scale).clamp(-127, 127) * scale
    """,
    "no zero point": """
        scale = (x.max() - x.min()) / 255
        return torch.clamp(torch.round(x / scale), 0, 255) * scale
    """,
    "scale from the maximum alone": """
        scale = x.abs().max() / 255
        return torch.clamp(torch.round(x / scale), 0, 255) * scale
    """,
}


def test_exercise_3_1_asymmetric():
    _outcomes(NB3, "3.1", _nb3_context, WRONG_3_1.values())


WRONG_3_2 = {
    "block scales forgotten": "return 4.0",
    "second-level scales forgotten": "return 4 + (8 if double_quant else 32) / block",
}


def test_exercise_3_2_bits_per_weight():
    _outcomes(NB3, "3.2", dict, WRONG_3_2.values())


# ------------------------------------------------------------------------------------------------ notebook 04
def _nb4_context():
    from torch.nn.utils import prune
    from transformers import BertForSequenceClassification

    def make_student():
        torch.manual_seed(0)
        return BertForSequenceClassification(tiny_bert_config(vocab_size=50, intermediate_size=128))

    half = make_student()
    layers = [(m, "weight") for m in half.bert.encoder.modules() if isinstance(m, torch.nn.Linear)]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.5)
    for m, name in layers:
        prune.remove(m, name)
    return {"torch": torch, "make_student": make_student, "half": half,
            "teacher_logits": torch.tensor([[2.0, -1.0]])}


WRONG_4_1 = {
    "mean of the layers' sparsities": """
        layers = [m.weight for m in model.bert.encoder.modules() if isinstance(m, torch.nn.Linear)]
        return sum(float((w == 0).float().mean()) for w in layers) / len(layers)
    """,
    "all parameters": """
        params = list(model.parameters())
        return sum(int((p == 0).sum()) for p in params) / sum(p.numel() for p in params)
    """,
    "every nn.Linear, pooler and classifier too": """
        weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
        return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    """,
}


def test_exercise_4_1_global_sparsity():
    _outcomes(NB4, "4.1", _nb4_context, WRONG_4_1.values())


WRONG_4_2 = {
    "divided after the softmax": "return torch.softmax(logits, dim=-1) / T",
    "multiplied by T": "return torch.softmax(logits * T, dim=-1)",
    "softmax over the batch": "return torch.softmax(logits / T, dim=0)",
}


def test_exercise_4_2_soft_targets():
    _outcomes(NB4, "4.2", _nb4_context, WRONG_4_2.values())


@pytest.mark.parametrize("notebook", [NB1, NB2, NB3, NB4])
def test_notebook_has_at_least_two_exercises(notebook):
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / notebook).read_text(encoding="utf-8"))
    checks = [c for c in nb["cells"] if "check" in c.get("metadata", {}).get("tags", [])]
    assert len(checks) >= 2


def _math_context():
    import math

    return {"math": math}


WRONG_1_3 = {
    "load ignored": """
        return cores
    """,
    "busy cores truncated": """
        if busy < 0.5:
            return cores
        return max(1, cores - int(busy))
    """,
    "no floor of one thread": """
        if busy < 0.5:
            return cores
        return cores - math.floor(busy + 0.5)
    """,
    "quiet below one core": """
        if busy < 1:
            return cores
        return max(1, cores - math.floor(busy + 0.5))
    """,
    "fractional threads": """
        return cores if busy < 0.5 else max(1, cores - busy)
    """,
    "round half to even": """
        if busy < 0.5:
            return cores
        return max(1, cores - round(busy))
    """,
}


def test_exercise_1_3_thread_policy():
    _outcomes(NB1, "1.3", _math_context, WRONG_1_3.values())


def _nb4_heads_context():
    """The exercise's namespace: `slim_linear` as section 2 of the notebook defines it, and a tiny 6-head teacher."""
    import copy

    from transformers import BertConfig, BertForSequenceClassification

    from llmcourse.teaching.notebooks import cell_source, read_notebook

    helper = next(cell_source(c) for c in read_notebook(ROOT / NB4).cells if "def slim_linear" in cell_source(c))
    namespace = {"torch": torch, "copy": copy, "BertConfig": BertConfig}
    exec(helper[:helper.index("def neuron_scores")], namespace)
    torch.manual_seed(0)
    namespace["teacher"] = BertForSequenceClassification(
        tiny_bert_config(vocab_size=50, hidden_size=96, num_attention_heads=6))
    return namespace


WRONG_4_3 = {
    "keeps the listed heads": """
        sa = attention.self
        size = sa.attention_head_size
        idx = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads])
        sa.query, sa.key, sa.value = (slim_linear(l, rows=idx) for l in (sa.query, sa.key, sa.value))
        attention.output.dense = slim_linear(attention.output.dense, cols=idx)
        sa.num_attention_heads, sa.all_head_size = len(heads), len(heads) * size
        return attention
    """,
    "interleaved head rows": """
        sa = attention.self
        n, size = sa.num_attention_heads, sa.attention_head_size
        kept = [h for h in range(n) if h not in set(heads)]
        idx = torch.cat([torch.arange(h, n * size, n) for h in kept])
        sa.query, sa.key, sa.value = (slim_linear(l, rows=idx) for l in (sa.query, sa.key, sa.value))
        attention.output.dense = slim_linear(attention.output.dense, cols=idx)
        sa.num_attention_heads, sa.all_head_size = len(kept), len(kept) * size
        return attention
    """,
    "output projection not sliced": """
        sa = attention.self
        size = sa.attention_head_size
        kept = [h for h in range(sa.num_attention_heads) if h not in set(heads)]
        idx = torch.cat([torch.arange(h * size, (h + 1) * size) for h in kept])
        sa.query, sa.key, sa.value = (slim_linear(l, rows=idx) for l in (sa.query, sa.key, sa.value))
        sa.num_attention_heads, sa.all_head_size = len(kept), len(kept) * size
        return attention
    """,
    "values left whole": """
        sa = attention.self
        size = sa.attention_head_size
        kept = [h for h in range(sa.num_attention_heads) if h not in set(heads)]
        idx = torch.cat([torch.arange(h * size, (h + 1) * size) for h in kept])
        sa.query, sa.key = (slim_linear(l, rows=idx) for l in (sa.query, sa.key))
        sa.num_attention_heads, sa.all_head_size = len(kept), len(kept) * size
        return attention
    """,
}


def test_exercise_4_3_prune_heads():
    _outcomes(NB4, "4.3", _nb4_heads_context, WRONG_4_3.values())


# ------------------------------------------------------------------------------------------------ notebook 05
NB5 = "week03/05_local_inference.ipynb"


class _ChatTokenizer:
    """What exercise 5.1's check asks of a tokenizer: a chat template (fixed ids here), decode and the end token."""

    def __init__(self, sums_ids, eos):
        self.sums_ids, self.eos_token_id = sums_ids, eos

    def apply_chat_template(self, messages, **kwargs):
        return list(self.sums_ids)

    def decode(self, ids):
        return " ".join(map(str, ids))


def _nb5_greedy_context():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=61, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=2)).eval()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 61, (30,), generator=gen).tolist(), torch.randint(3, 61, (26,), generator=gen).tolist()]
    sums = torch.randint(3, 61, (9,), generator=gen).tolist()
    seq = list(sums)
    with torch.no_grad():  # its second greedy token plays the end-of-text token: answers that stop there fail
        for _ in range(2):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return {"torch": torch, "model": model, "prompts": prompts, "tokenizer": _ChatTokenizer(sums, seq[-1])}


WRONG_5_1 = {
    "no cache": """
        seq, new = list(prompt_ids), []
        for _ in range(n):
            new.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
            seq.append(new[-1])
        return new
    """,
    "the whole sequence fed with the cache": """
        seq = list(prompt_ids)
        out = model(torch.tensor([seq]), use_cache=True)
        new = []
        for _ in range(n):
            new.append(int(out.logits[0, -1].argmax()))
            seq.append(new[-1])
            out = model(torch.tensor([seq]), past_key_values=out.past_key_values, use_cache=True)
        return new
    """,
    "stale cache": """
        first = model(torch.tensor([prompt_ids]), use_cache=True)
        cache, logits, new = first.past_key_values, first.logits, []
        import copy
        for _ in range(n):
            token = int(logits[0, -1].argmax())
            new.append(token)
            logits = model(torch.tensor([[token]]), past_key_values=copy.deepcopy(first.past_key_values),
                           use_cache=True).logits
        return new
    """,
    "first position": """
        out = model(torch.tensor([prompt_ids]), use_cache=True)
        new = []
        for _ in range(n):
            token = int(out.logits[0, 0].argmax())
            new.append(token)
            out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
        return new
    """,
    "stops at the end token": """
        out = model(torch.tensor([prompt_ids]), use_cache=True)
        new = []
        for _ in range(n):
            token = int(out.logits[0, -1].argmax())
            new.append(token)
            if token == tokenizer.eos_token_id:
                break
            out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
        return new
    """,
    "one token short": """
        out = model(torch.tensor([prompt_ids]), use_cache=True)
        new = []
        for _ in range(n - 1):
            out = model(out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)
            new.append(int(out.logits[0, -1].argmax()))
        return new
    """,
}


def test_exercise_5_1_greedy_with_cache():
    _outcomes(NB5, "5.1", _nb5_greedy_context, WRONG_5_1.values())


_STREAM_SERVER = []  # the server the fixture below starts, for the context of exercise 5.2


@pytest.fixture(scope="module")
def stream_server():
    from llmcourse.serve import serve

    words = ["Red", ",", " green", " and", " blue", "."]

    def chat(messages, max_tokens, temperature):
        return 5, iter(words[:max_tokens])

    with serve(chat=chat) as server:
        _STREAM_SERVER.append(server)
        yield server
        _STREAM_SERVER.remove(server)


def _nb5_stream_context():
    import json
    import urllib.request

    assert _STREAM_SERVER, "exercise 5.2 needs the stream_server fixture"
    return {"json": json, "urllib": urllib, "server": _STREAM_SERVER[-1]}


def _handled(indent):  # what every reader below does with one event (each is wrong elsewhere)
    import textwrap

    return textwrap.indent(textwrap.dedent("""
        if "error" in event:
            raise RuntimeError(event["error"]["message"])
        {empty}
        choice = event["choices"][0]
        text.append(choice["delta"].get("content") or "")
        finish = choice.get("finish_reason") or finish
    """).strip(), " " * indent)


_WHOLE_STREAM = f"""
    text, finish = [], None
    for line in b"".join(chunks).decode().splitlines():
        {{done}}
        if line.startswith("data: {{{{"):
            event = json.loads(line[6:])
{_handled(12)}
    return "".join(text), finish
"""

WRONG_5_2 = {
    "lines split within each chunk": f"""
        text, finish = [], None
        for chunk in chunks:
            for line in chunk.decode("utf-8", errors="replace").split("\\n"):
                line = line.strip()
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                event = json.loads(line[5:])
{_handled(16)}
        return "".join(text), finish
    """.replace("{empty}", "if not event['choices']: continue"),
    "each piece decoded on its own": f"""
        text, finish, buffer = [], None, ""
        for chunk in chunks:
            buffer += chunk.decode("utf-8", errors="ignore")
            while "\\n" in buffer:
                line, buffer = buffer.split("\\n", 1)
                line = line.rstrip("\\r")
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return "".join(text), finish
                event = json.loads(payload)
{_handled(16)}
        return "".join(text), finish
    """.replace("{empty}", "if not event['choices']: continue"),
    "reads on after [DONE]": _WHOLE_STREAM.format(done="pass", empty="if not event['choices']: continue"),
    "no event without choices expected": _WHOLE_STREAM.format(done="if line.startswith('data: [DONE]'): break",
                                                              empty="pass"),
    "error events ignored": """
        data = b"".join(chunks).decode()
        text, finish = [], None
        for line in data.splitlines():
            if line.startswith("data: [DONE]"):
                break
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                for choice in event.get("choices", []):
                    text.append(choice["delta"].get("content") or "")
                    finish = choice.get("finish_reason") or finish
        return "".join(text), finish
    """,
}


def test_exercise_5_2_read_stream(stream_server):
    _outcomes(NB5, "5.2", _nb5_stream_context, WRONG_5_2.values())


def _nb5_config_context():
    from types import SimpleNamespace

    smol = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576)
    return {"np": np, "config": smol}


WRONG_5_3 = {
    "query heads": """
        head_dim = config.hidden_size // config.num_attention_heads
        return budget_bytes // (2 * config.num_hidden_layers * config.num_attention_heads * head_dim * bytes_per_value
                                * batch)
    """,
    "keys only": """
        head_dim = config.hidden_size // config.num_attention_heads
        return budget_bytes // (config.num_hidden_layers * config.num_key_value_heads * head_dim * bytes_per_value
                                * batch)
    """,
    "fractional tokens": """
        head_dim = config.hidden_size // config.num_attention_heads
        return budget_bytes / (2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * bytes_per_value
                               * batch)
    """,
    "batch ignored": """
        head_dim = config.hidden_size // config.num_attention_heads
        return budget_bytes // (2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * bytes_per_value)
    """,
}


def test_exercise_5_3_max_cached_tokens():
    _outcomes(NB5, "5.3", _nb5_config_context, WRONG_5_3.values())


# ------------------------------------------------------------------------------------------------ the judge
# Graded, these exercises are judged outside the kernel (issue 21): the check cell's answer spec computes the answer
# on inputs drawn from the batch's seed, and the grader compares it with the reference's. The judge must reject every
# wrong answer the checks above reject, pass the reference, and see a stub as not attempted.
SEED = 20261204  # the batch seed the judged answers are drawn from (a real batch draws a fresh one)

JUDGED = [(NB1, "1.1", _nb1_context, WRONG_1_1), (NB1, "1.2", _nb1_context, WRONG_1_2),
          (NB1, "1.3", _math_context, WRONG_1_3),
          (NB2, "2.1", _nb2_f1_context, WRONG_2_1), (NB2, "2.2", _nb2_unk_context, WRONG_2_2),
          (NB2, "2.3", _nb2_records_context, WRONG_2_3),
          (NB3, "3.1", _nb3_context, WRONG_3_1), (NB3, "3.2", dict, WRONG_3_2),
          (NB4, "4.1", _nb4_context, WRONG_4_1), (NB4, "4.2", _nb4_context, WRONG_4_2),
          (NB4, "4.3", _nb4_heads_context, WRONG_4_3),
          (NB5, "5.1", _nb5_greedy_context, WRONG_5_1), (NB5, "5.2", _nb5_stream_context, WRONG_5_2),
          (NB5, "5.3", _nb5_config_context, WRONG_5_3)]

# Right answers written otherwise than the reference: the checks accept them, so the judge must too (the answer
# specs compare what the checks compare, with their tolerances, not the reference's exact arithmetic).
OTHER_RIGHT = [
    (NB1, "1.3", _math_context, "return cores if busy < 0.5 else max(1, cores - int(busy + 0.5))"),
    (NB2, "2.1", _nb2_f1_context, "return float(f1_score(labels, preds, zero_division=0))"),
    (NB2, "2.3", _nb2_records_context,
     'return sorted(records, key=lambda r: (-r["val_accuracy"], r["epoch"], r["lr"]))[0]'),
    (NB3, "3.1", _nb3_context, """
        scale = (x.max() - x.min()) / 255  # zero point not rounded: codes on a grid that starts at min
        return torch.clamp(torch.round((x - x.min()) / scale), 0, 255) * scale + x.min()
    """),
    (NB3, "3.2", dict, "return 4 + (8 + 32 / 256) / block if double_quant else 4 + 32 / block"),
    (NB4, "4.2", _nb4_context, "return torch.nn.functional.softmax(logits / T, dim=1)"),
    (NB5, "5.3", _nb5_config_context, """
        per_token = 2 * config.num_hidden_layers * config.hidden_size * bytes_per_value * batch
        return int(budget_bytes * config.num_attention_heads // (per_token * config.num_key_value_heads))
    """),
]


test_the_judge_rejects_the_wrong_answers, test_the_judge_passes_the_reference_and_sees_a_stub_as_not_attempted = (
    judge_tests(JUDGED, SEED, fixtures=("stream_server",)))


@pytest.mark.parametrize("notebook,exercise,ctx,right", OTHER_RIGHT, ids=[row[1] for row in OTHER_RIGHT])
def test_the_judge_passes_other_right_answers(notebook, exercise, ctx, right):
    assert run_exercise(notebook, exercise, ctx(), solution=right).status == "passed"
    assert judged(notebook, exercise, ctx(), right, seed=SEED) == ("passed", "")
