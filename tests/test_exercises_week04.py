"""Week 4 exercise checks: each accepts the reference solution, rejects plausible wrong answers, and counts a stub as
not attempted (tests/exercise_harness.py runs one exercise cell and its check cell outside the notebook)."""

import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from exercise_harness import STUB, judge_tests, run_exercise
from peft import LoraConfig, get_peft_model
from tiny_configs import tiny_llama_config
from torch import nn
from transformers import AutoConfig

from llmcourse.tasks import final_number

DATA_NB = "week04/00_data_preparation.ipynb"
LORA_NB = "week04/01_lora_and_qlora.ipynb"
TUNE_NB = "week04/02_instruction_tuning_and_prompting.ipynb"
# SmolLM2-135M's shapes: 30 blocks, hidden 576, MLP 1536, 9 query heads and 3 key/value heads of 64
SMOL = dict(vocab_size=64, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, head_dim=64)
SMOL_R16 = 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))  # 4,884,480


@pytest.fixture(scope="module")
def smol_config_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smol-config")
    tiny_llama_config(**SMOL).save_pretrained(folder)
    return str(folder)


def lora_context(smol_config_dir):
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    lora = SimpleNamespace(A=torch.randn(4, 12), B=torch.randn(7, 4))
    return {"torch": torch, "nn": nn, "math": math, "base": base, "lora": lora, "x": torch.randn(3, 12), "ALPHA": 8,
            "RANK": 16, "path": smol_config_dir, "AutoConfig": AutoConfig, "get_peft_model": get_peft_model,
            "LoraConfig": LoraConfig, "smol_lora_trainable": SMOL_R16,
            "deltas": {"low-rank": torch.randn(9, 2) @ torch.randn(2, 7), "noise": torch.randn(9, 7)}}


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


def run(notebook, exercise, solution=None, smol_config_dir=None, tok=None):
    if notebook == DATA_NB:
        context = {"np": np, "torch": torch}
    elif notebook == LORA_NB:
        context = lora_context(smol_config_dir)
    else:
        context = {"final_number": final_number, "Counter": Counter, "tok": tok,
                   "SYSTEM": "You label the sentiment of tweets."}
    return run_exercise(notebook, exercise, context=context, solution=solution)


def test_smollm2_count_matches_peft():
    """The SmolLM2 number the 1.2 check compares with is what peft really trains (on a 2-block copy, scaled)."""
    two_blocks = tiny_llama_config(**dict(SMOL, num_hidden_layers=2))
    from transformers import LlamaForCausalLM

    m = get_peft_model(LlamaForCausalLM(two_blocks), LoraConfig(r=16, target_modules="all-linear"))
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) * 15 == SMOL_R16 == 4_884_480


@pytest.mark.parametrize("notebook, exercise", [(DATA_NB, "0.1"), (DATA_NB, "0.2"), (LORA_NB, "1.1"),
                                                (LORA_NB, "1.2"), (LORA_NB, "1.3"), (LORA_NB, "1.4"), (TUNE_NB, "2.1"),
                                                (TUNE_NB, "2.2")])
def test_reference_solution_passes_and_stub_is_not_attempted(notebook, exercise, smol_config_dir, request):
    tokenizer = request.getfixturevalue("tok") if exercise == "2.2" else None
    result = run(notebook, exercise, smol_config_dir=smol_config_dir, tok=tokenizer)
    assert result.status == "passed", result.message
    stub = run(notebook, exercise, STUB, smol_config_dir=smol_config_dir, tok=tokenizer)
    assert stub.status == "not attempted", stub.message


_PACK_HEAD = "stream = [t for seq in sequences for t in list(seq) + [eos_id]]\n"
_PACK_BLOCKS = ("n = len(stream) // block_size\n"
                "input_ids = torch.tensor(stream[:n * block_size], dtype=torch.long).view(n, block_size)\n")
_PACK_POSITIONS = ("position_ids = torch.zeros_like(input_ids)\n"
                   "for row in range(input_ids.shape[0]):\n"
                   "    for col in range(1, block_size):\n"
                   "        position_ids[row, col] = 0 if input_ids[row, col - 1] == eos_id "
                   "else position_ids[row, col - 1] + 1\n")
_PACK_RETURN = "return {'input_ids': input_ids, 'position_ids': position_ids, 'labels': labels}"

WRONG = {
    "0.1": {
        "max instead of min": "return ((a[:, None] * hashes[None, :] + b[:, None]) % PRIME).max(axis=1)",
        "no modulo": "return (a[:, None] * hashes[None, :] + b[:, None]).min(axis=1)",
        "a and b swapped": "return ((b[:, None] * hashes[None, :] + a[:, None]) % PRIME).min(axis=1)",
        "float arithmetic": "return ((a[:, None].astype(float) * hashes[None, :] + b[:, None]) % float(PRIME))"
                            ".min(axis=1)",
        "int64 overflow": "a64, h64, b64 = a.astype(np.int64), hashes.astype(np.int64), b.astype(np.int64)\n"
                          "return ((a64[:, None] * h64[None, :] + b64[:, None]) % int(PRIME)).min(axis=1)",
        "first shingle only": "return (a * hashes[0] + b) % PRIME",
        "smallest shingle hashed": "return (a * hashes.min() + b) % PRIME",
    },
    "0.2": {
        "no EOS": "stream = [t for seq in sequences for t in seq]\n" + _PACK_BLOCKS + _PACK_POSITIONS
                  + "labels = input_ids.masked_fill(position_ids == 0, -100)\n" + _PACK_RETURN,
        "EOS before each sequence": "stream = [t for seq in sequences for t in [eos_id] + list(seq)]\n"
                                    + _PACK_BLOCKS + _PACK_POSITIONS
                                    + "labels = input_ids.masked_fill(position_ids == 0, -100)\n" + _PACK_RETURN,
        "last block padded": _PACK_HEAD + "n = -(-len(stream) // block_size)\n"
                             "stream = stream + [eos_id] * (n * block_size - len(stream))\n"
                             "input_ids = torch.tensor(stream, dtype=torch.long).view(n, block_size)\n"
                             + _PACK_POSITIONS + "labels = input_ids.masked_fill(position_ids == 0, -100)\n"
                             + _PACK_RETURN,
        "no label mask": _PACK_HEAD + _PACK_BLOCKS + _PACK_POSITIONS + "labels = input_ids.clone()\n" + _PACK_RETURN,
        "mask on the EOS instead": _PACK_HEAD + _PACK_BLOCKS + _PACK_POSITIONS
                                   + "labels = input_ids.masked_fill(input_ids == eos_id, -100)\n" + _PACK_RETURN,
        "positions never restart": _PACK_HEAD + _PACK_BLOCKS
                                   + "position_ids = torch.arange(block_size).repeat(input_ids.shape[0], 1)\n"
                                   "labels = input_ids.masked_fill(position_ids == 0, -100)\n" + _PACK_RETURN,
        "positions run on across blocks": _PACK_HEAD + _PACK_BLOCKS
                                          + "flat, pos = input_ids.flatten(), []\n"
                                          "for i in range(len(flat)):\n"
                                          "    pos.append(0 if i == 0 or flat[i - 1] == eos_id else pos[-1] + 1)\n"
                                          "position_ids = torch.tensor(pos).view_as(input_ids)\n"
                                          "labels = input_ids.masked_fill(position_ids == 0, -100)\n"
                                          + _PACK_RETURN,
        "int32 tensors": _PACK_HEAD + _PACK_BLOCKS + _PACK_POSITIONS
                         + "labels = input_ids.masked_fill(position_ids == 0, -100)\n"
                         "return {'input_ids': input_ids.int(), 'position_ids': position_ids.int(), "
                         "'labels': labels.int()}",
    },
    "1.1": {
        "scaled by alpha, not alpha / r": "return x @ W.T + b + alpha * (x @ A.T) @ B.T",
        "scaled by r / alpha": "r = A.shape[0]\nreturn x @ W.T + b + (r / alpha) * (x @ A.T) @ B.T",
        "no bias": "r = A.shape[0]\nreturn x @ W.T + (alpha / r) * (x @ A.T) @ B.T",
        "the base layer only": "return x @ W.T + b",
        "r read from the wrong axis": "r = B.shape[0]\nreturn x @ W.T + b + (alpha / r) * (x @ A.T) @ B.T",
    },
    "1.2": {
        "no grouped-query attention": "h, f = config.hidden_size, config.intermediate_size\n"
                                      "shapes = {'q_proj': (h, h), 'k_proj': (h, h), 'v_proj': (h, h), "
                                      "'o_proj': (h, h), 'gate_proj': (h, f), 'up_proj': (h, f), 'down_proj': (f, h)}\n"
                                      "return config.num_hidden_layers * sum(r * sum(shapes[t]) for t in targets)",
        "r * d_in * d_out": "h, f = config.hidden_size, config.intermediate_size\n"
                            "kv = config.num_key_value_heads * (h // config.num_attention_heads)\n"
                            "shapes = {'q_proj': (h, h), 'k_proj': (h, kv), 'v_proj': (h, kv), 'o_proj': (h, h), "
                            "'gate_proj': (h, f), 'up_proj': (h, f), 'down_proj': (f, h)}\n"
                            "return config.num_hidden_layers * sum(r * shapes[t][0] * shapes[t][1] for t in targets)",
        "one block only": "h, f = config.hidden_size, config.intermediate_size\n"
                          "kv = config.num_key_value_heads * (h // config.num_attention_heads)\n"
                          "shapes = {'q_proj': (h, h), 'k_proj': (h, kv), 'v_proj': (h, kv), 'o_proj': (h, h), "
                          "'gate_proj': (h, f), 'up_proj': (h, f), 'down_proj': (f, h)}\n"
                          "return sum(r * sum(shapes[t]) for t in targets)",
        "targets ignored": "h, f = config.hidden_size, config.intermediate_size\n"
                           "kv = config.num_key_value_heads * (h // config.num_attention_heads)\n"
                           "shapes = {'q_proj': (h, h), 'k_proj': (h, kv), 'v_proj': (h, kv), 'o_proj': (h, h), "
                           "'gate_proj': (h, f), 'up_proj': (h, f), 'down_proj': (f, h)}\n"
                           "return config.num_hidden_layers * sum(r * sum(s) for s in shapes.values())",
    },
    "1.3": {
        "no scale": "return W + B @ A",
        "scaled by alpha": "return W + alpha * B @ A",
        "the update alone": "return (alpha / A.shape[0]) * B @ A",
    },
    "1.4": {
        "singular values, not their squares": "s = torch.linalg.svdvals(delta)\n"
                                              "c = torch.cumsum(s, 0) / s.sum()\n"
                                              "return int((c < share).sum()) + 1",
        "one direction short": "e = torch.linalg.svdvals(delta) ** 2\n"
                               "c = torch.cumsum(e, 0) / e.sum()\n"
                               "return int((c < share).sum())",
        "smallest values first": "e = torch.linalg.eigvalsh(delta.T @ delta)\n"
                                 "c = torch.cumsum(e, 0) / e.sum()\n"
                                 "return int((c < share).sum()) + 1",
        "a tensor, not an int": "e = torch.linalg.svdvals(delta) ** 2\n"
                                "c = torch.cumsum(e, 0) / e.sum()\n"
                                "return (c < share).sum() + 1",
        "share of the rank": "return max(1, round(share * torch.linalg.matrix_rank(delta).item()))",
    },
    "2.1": {
        "first reply's answer": "return final_number(replies[0])",
        "None counted as an answer": "answers = [final_number(r) for r in replies]\n"
                                     "return Counter(answers).most_common(1)[0][0]",
        "tie goes to the largest": "answers = [a for a in (final_number(r) for r in replies) if a is not None]\n"
                                   "if not answers:\n    return None\n"
                                   "c = Counter(answers)\nreturn max(c, key=lambda a: (c[a], a))",
        "first number of each reply": "import re\n"
                                      "answers = [int(m.group()) for r in replies if (m := re.search(r'\\d+', r))]\n"
                                      "return Counter(answers).most_common(1)[0][0] if answers else None",
    },
    "2.2": {
        "no masking": "input_ids = []\nfor msg in messages:\n"
                      "    input_ids += tok(f\"<|im_start|>{msg['role']}\\n{msg['content']}<|im_end|>\\n\", "
                      "add_special_tokens=False).input_ids\n"
                      "return input_ids, list(input_ids)",
        "only the last reply trained": "input_ids, labels = [], []\nlast = max(i for i, m in enumerate(messages) "
                                       "if m['role'] == 'assistant')\n"
                                       "for i, msg in enumerate(messages):\n"
                                       "    header = tok(f\"<|im_start|>{msg['role']}\\n\", add_special_tokens=False)"
                                       ".input_ids\n"
                                       "    body = tok(f\"{msg['content']}<|im_end|>\", add_special_tokens=False)"
                                       ".input_ids\n"
                                       "    nl = tok('\\n', add_special_tokens=False).input_ids\n"
                                       "    input_ids += header + body + nl\n"
                                       "    labels += [-100] * len(header)"
                                       " + (body if i == last else [-100] * len(body)) + [-100] * len(nl)\n"
                                       "return input_ids, labels",
        "header trained too": "input_ids, labels = [], []\nfor msg in messages:\n"
                              "    header = tok(f\"<|im_start|>{msg['role']}\\n\", "
                              "add_special_tokens=False).input_ids\n"
                              "    body = tok(f\"{msg['content']}<|im_end|>\", add_special_tokens=False).input_ids\n"
                              "    nl = tok('\\n', add_special_tokens=False).input_ids\n"
                              "    input_ids += header + body + nl\n"
                              "    labels += (header + body if msg['role'] == 'assistant' else "
                              "[-100] * (len(header) + len(body))) + [-100] * len(nl)\n"
                              "return input_ids, labels",
        "no <|im_end|>": "input_ids, labels = [], []\nfor msg in messages:\n"
                         "    ids = tok(f\"<|im_start|>{msg['role']}\\n{msg['content']}\\n\", "
                         "add_special_tokens=False).input_ids\n"
                         "    input_ids += ids\n    labels += [-100] * len(ids)\n"
                         "return input_ids, labels",
    },
}
CASES = [(ex, name) for ex, wrongs in WRONG.items() for name in wrongs]


@pytest.mark.parametrize("exercise, name", CASES, ids=[f"{e}-{n}" for e, n in CASES])
def test_wrong_answer_fails(exercise, name, smol_config_dir, request):
    notebook = {"0": DATA_NB, "1": LORA_NB, "2": TUNE_NB}[exercise.split(".")[0]]
    tokenizer = request.getfixturevalue("tok") if exercise == "2.2" else None
    result = run(notebook, exercise, WRONG[exercise][name], smol_config_dir=smol_config_dir, tok=tokenizer)
    assert result.status == "failed", f"{exercise} accepted the wrong answer '{name}': {result.message}"


# ------------------------------------------------------------------------------------------------ notebook 03
RAG_NB = "week04/03_retrieval_and_tools.ipynb"


def _outcomes(exercise, context, wrong, notebook=RAG_NB):
    right = run_exercise(notebook, exercise, context())
    assert right.status == "passed", right.message
    for solution in wrong:
        result = run_exercise(notebook, exercise, context(), solution=solution)
        assert result.status == "failed", f"accepted a wrong answer:\n{solution}"
    assert run_exercise(notebook, exercise, context(), solution=STUB).status == "not attempted"


WRONG_3_1 = {
    "ranks counted from 0": """
        fused = {}
        for results in rankings:
            for rank, (chunk_id, _) in enumerate(results):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
        return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:top]
    """,
    "scores summed, not ranks": """
        fused = {}
        for results in rankings:
            for chunk_id, score in results:
                fused[chunk_id] = fused.get(chunk_id, 0.0) + score
        return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:top]
    """,
    "best rank only": """
        fused = {}
        for results in rankings:
            for rank, (chunk_id, _) in enumerate(results, start=1):
                fused[chunk_id] = max(fused.get(chunk_id, 0.0), 1.0 / (k + rank))
        return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:top]
    """,
    "ties broken by the larger id": """
        fused = {}
        for results in rankings:
            for rank, (chunk_id, _) in enumerate(results, start=1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
        return sorted(fused.items(), key=lambda item: (item[1], item[0]), reverse=True)[:top]
    """,
    "only the first list's chunks": """
        fused = {chunk_id: 0.0 for chunk_id, _ in rankings[0]} if rankings else {}
        for results in rankings:
            for rank, (chunk_id, _) in enumerate(results, start=1):
                if chunk_id in fused:
                    fused[chunk_id] += 1.0 / (k + rank)
        return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:top]
    """,
}


def test_exercise_3_1_reciprocal_rank_fusion():
    _outcomes("3.1", lambda: {}, WRONG_3_1.values())


def _tools_context():
    import json

    from llmcourse import tools

    return {"json": json, "tools": tools}


_EXTRA_KEYS_ALLOWED = """
    start, end = text.find("{"), text.rfind("}")
    if start < 0:
        return None
    if end < start:
        raise tools.ToolCallError("not closed")
    try:
        call = json.loads(text[start:end + 1])
    except json.JSONDecodeError as exc:
        raise tools.ToolCallError(str(exc)) from None
    if not isinstance(call, dict) or call.get("tool") not in tools.TOOLS:
        raise tools.ToolCallError("unknown tool")
    argument = tools.TOOLS[call["tool"]]
    value = call.get(argument)
    if not isinstance(value, str) or not value.strip() or len(value) > tools.MAX_ARGUMENT:
        raise tools.ToolCallError("bad argument")
    return {"tool": call["tool"], argument: value}
"""

WRONG_3_2 = {
    "trusts the tool": """
        start, end = text.find("{"), text.rfind("}")
        if start < 0:
            return None
        try:
            call = json.loads(text[start:end + 1])
        except json.JSONDecodeError as exc:
            raise tools.ToolCallError(str(exc)) from None
        argument = "expression" if call.get("tool") == "calculator" else "code"
        return {"tool": call.get("tool"), argument: call.get(argument)}
    """,
    "JSON errors escape": """
        start, end = text.find("{"), text.rfind("}")
        if start < 0:
            return None
        call = json.loads(text[start:end + 1])
        if not isinstance(call, dict) or call.get("tool") not in tools.TOOLS:
            raise tools.ToolCallError("unknown tool")
        argument = tools.TOOLS[call["tool"]]
        if set(call) != {"tool", argument} or not isinstance(call[argument], str) or not call[argument].strip():
            raise tools.ToolCallError("bad argument")
        return {"tool": call["tool"], argument: call[argument]}
    """,
    "extra keys allowed": _EXTRA_KEYS_ALLOWED,
    "no length limit": _EXTRA_KEYS_ALLOWED.replace(" or len(value) > tools.MAX_ARGUMENT", "").replace(
        'if not isinstance(call, dict) or call.get("tool") not in tools.TOOLS:',
        'if not isinstance(call, dict) or call.get("tool") not in tools.TOOLS or len(call) != 2:'),
    "plain text is an error": """
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end < start:
            raise tools.ToolCallError("no tool call")
        return tools.parse_tool_call(text)
    """,
    "a plain ValueError, not ToolCallError": """
        try:
            return tools.parse_tool_call(text)
        except tools.ToolCallError as exc:
            raise ValueError(str(exc)) from None
    """,
    "refusals without a reason": """
        try:
            return tools.parse_tool_call(text)
        except tools.ToolCallError:
            raise tools.ToolCallError("no") from None
    """,
}


def test_exercise_3_2_tool_call_parser():
    _outcomes("3.2", _tools_context, WRONG_3_2.values())


DPO_NB = "week04/04_preference_tuning.ipynb"


def _dpo_context():
    import torch.nn.functional as F

    def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1):  # as in the notebook's section 2
        chosen_rewards = beta * (policy_chosen - ref_chosen)
        rejected_rewards = beta * (policy_rejected - ref_rejected)
        return -F.logsigmoid(chosen_rewards - rejected_rewards).mean(), chosen_rewards, rejected_rewards

    return {"torch": torch, "F": F, "math": math, "BETA": 0.1, "dpo_loss": dpo_loss}


def _simpo(body):
    return "import torch.nn.functional as F\n" + body


WRONG_4_1 = {
    "sums, not averages": _simpo("return -F.logsigmoid(beta * chosen_logps - beta * rejected_logps - gamma).mean()"),
    "margin added": _simpo("return -F.logsigmoid(beta * chosen_logps / chosen_lengths - beta * rejected_logps / "
                           "rejected_lengths + gamma).mean()"),
    "no minus": _simpo("return F.logsigmoid(beta * chosen_logps / chosen_lengths - beta * rejected_logps / "
                       "rejected_lengths - gamma).mean()"),
    "summed over pairs": _simpo("return -F.logsigmoid(beta * chosen_logps / chosen_lengths - beta * rejected_logps / "
                                "rejected_lengths - gamma).sum()"),
    "margin outside": _simpo("return -F.logsigmoid(beta * chosen_logps / chosen_lengths - beta * rejected_logps / "
                             "rejected_lengths).mean() + gamma"),
    "lengths swapped": _simpo("return -F.logsigmoid(beta * chosen_logps / rejected_lengths - beta * rejected_logps / "
                              "chosen_lengths - gamma).mean()"),
    "a 1-element tensor, not 0-d": _simpo("return -F.logsigmoid(beta * chosen_logps / chosen_lengths - beta * "
                                          "rejected_logps / rejected_lengths - gamma).mean().reshape(1)"),
}


def test_exercise_4_1_simpo_loss():
    _outcomes("4.1", _dpo_context, WRONG_4_1.values(), notebook=DPO_NB)


_MARGIN = "h = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))\n"
_GUARD = ("if not 0 <= epsilon < 0.5:\n"
          "    raise ValueError(f'epsilon must be in [0, 0.5), got {epsilon}')\n")
_NO_GUARD = _MARGIN + ("return (((1 - epsilon) * -F.logsigmoid(h) - epsilon * -F.logsigmoid(-h))"
                       " / (1 - 2 * epsilon)).mean()")
WRONG_4_2 = {
    "conservative (plus, not minus)": _GUARD + _MARGIN + (
        "return ((1 - epsilon) * -F.logsigmoid(h) + epsilon * -F.logsigmoid(-h)).mean()"),
    "not normalised": _GUARD + _MARGIN + (
        "return ((1 - epsilon) * -F.logsigmoid(h) - epsilon * -F.logsigmoid(-h)).mean()"),
    "no guard": _NO_GUARD,
    "0.5 allowed": _NO_GUARD.replace(_MARGIN, "if not 0 <= epsilon <= 0.5:\n"
                                     "    raise ValueError('epsilon must be in [0, 0.5)')\n" + _MARGIN),
    "the range not stated": _NO_GUARD.replace(_MARGIN, "if not 0 <= epsilon < 0.5:\n"
                                              "    raise ValueError('bad epsilon')\n" + _MARGIN),
    "ratios swapped": _GUARD + ("h = beta * ((policy_chosen - policy_rejected) - (ref_rejected - ref_chosen))\n"
                                "return (((1 - epsilon) * -F.logsigmoid(h) - epsilon * -F.logsigmoid(-h))"
                                " / (1 - 2 * epsilon)).mean()"),
}


def test_exercise_4_2_robust_dpo_loss():
    _outcomes("4.2", _dpo_context, WRONG_4_2.values(), notebook=DPO_NB)


# ------------------------------------------------------------------------------------------------ the judge
# Graded, these exercises are judged outside the kernel (issue 21): the check cell's answer spec computes the answer
# on inputs drawn from the batch's seed, and the grader compares it with the reference's. The judge must reject every
# wrong answer the checks above reject, pass the reference, and see a stub as not attempted. A context factory takes
# pytest's `request` (some contexts need the tokenizer or the SmolLM2 config fixtures).
SEED = 20261204  # the batch seed the judged answers are drawn from (a real batch draws a fresh one)


def _data_ctx(request):
    return {"np": np, "torch": torch}


def _lora_ctx(request):
    return lora_context(request.getfixturevalue("smol_config_dir"))


def _tune_ctx(request):
    return {"final_number": final_number, "Counter": Counter, "tok": request.getfixturevalue("tok"),
            "SYSTEM": "You label the sentiment of tweets."}


def _rag_ctx(request):
    return {"np": np, **_tools_context()}


def _dpo_ctx(request):
    return _dpo_context()


JUDGED = ([(DATA_NB, ex, _data_ctx, WRONG[ex]) for ex in ("0.1", "0.2")]
          + [(LORA_NB, ex, _lora_ctx, WRONG[ex]) for ex in ("1.1", "1.2", "1.3", "1.4")]
          + [(TUNE_NB, ex, _tune_ctx, WRONG[ex]) for ex in ("2.1", "2.2")]
          + [(RAG_NB, "3.1", _rag_ctx, WRONG_3_1), (RAG_NB, "3.2", _rag_ctx, WRONG_3_2),
             (DPO_NB, "4.1", _dpo_ctx, WRONG_4_1), (DPO_NB, "4.2", _dpo_ctx, WRONG_4_2)])


test_the_judge_rejects_the_wrong_answers, test_the_judge_passes_the_reference_and_sees_a_stub_as_not_attempted = (
    judge_tests(JUDGED, SEED, with_request=True))
