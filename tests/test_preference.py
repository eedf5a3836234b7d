"""llmcourse.preference on a tiny random Llama with SmolLM2's tokenizer (its chat template), and the sums of tasks."""

import copy
import json

import pytest
import torch
from tiny_configs import tiny_llama_config

from llmcourse import preference
from llmcourse.errors import ConfigError
from llmcourse.tasks import arithmetic_questions


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="module")
def model(tok):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    m = LlamaForCausalLM(tiny_llama_config(vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                                           pad_token_id=tok.pad_token_id))
    return m.eval()


def conversation(q):
    return [{"role": "user", "content": q["question"]}]


QUESTIONS = arithmetic_questions(5, seed=3)


def test_arithmetic_questions_are_seeded_and_right():
    qs = arithmetic_questions(60, seed=1)
    assert qs == arithmetic_questions(60, seed=1) and qs != arithmetic_questions(60, seed=2)
    assert all(eval(q["expression"]) == q["answer"] for q in qs)  # the expressions are plain integer arithmetic
    assert {q["kind"] for q in qs} == {"add", "sub", "mul"}
    assert all(q["question"] == f"What is {q['expression']}?" for q in qs)


def test_shared_prompt_greedy_equals_plain_generate(model, tok):
    """Encoding the prompt once and copying its cache k times must not change what the model generates."""
    convs = [conversation(q) for q in QUESTIONS]
    rows = preference.sample_completions(model, tok, convs, k=3, max_new_tokens=6, temperature=0, progress=False)
    tok.padding_side = "left"
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    plain = [t.strip() for t in tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)]
    assert [[r["text"] for r in row] for row in rows] == [[p] * 3 for p in plain]
    assert all(r["finished"] is False for row in rows for r in row)  # a random model does not stop within 6 tokens


def test_sampling_is_seeded_and_cached(model, tok, tmp_path):
    convs = [conversation(q) for q in QUESTIONS[:2]]
    a = preference.sample_completions(model, tok, convs, k=4, max_new_tokens=5, temperature=1.0, seed=1,
                                      progress=False)
    b = preference.sample_completions(model, tok, convs, k=4, max_new_tokens=5, temperature=1.0, seed=1,
                                      progress=False)
    c = preference.sample_completions(model, tok, convs, k=4, max_new_tokens=5, temperature=1.0, seed=2,
                                      progress=False)
    assert a == b and a != c
    assert len({r["text"] for r in a[0]}) > 1  # the k samples of one prompt differ
    path = tmp_path / "samples.json"
    written = preference.sample_completions(model, tok, convs, k=4, max_new_tokens=5, temperature=1.0, seed=1,
                                            cache=path, progress=False)
    assert json.loads(path.read_text()) == written == a
    assert preference.sample_completions(None, tok, convs, k=4, cache=path, progress=False) == a  # read, not run


def test_bad_settings_are_refused(model, tok):
    with pytest.raises(ConfigError, match="at least 1"):
        preference.sample_completions(model, tok, [conversation(QUESTIONS[0])], k=0)


def test_preference_pairs_pair_right_with_wrong():
    q = [{"question": "What is 2 + 3?", "answer": 5}, {"question": "What is 4 * 2?", "answer": 8},
         {"question": "What is 9 - 1?", "answer": 8}]
    samples = [
        [{"text": "2 + 3 = 5", "finished": True}, {"text": "2 + 3 = 6", "finished": True},
         {"text": "2 + 3 = 5", "finished": True}, {"text": "It is 7.", "finished": True},
         {"text": "Let me think about 2 + 3 = 5", "finished": False}, {"text": "Two", "finished": True}],
        [{"text": "8", "finished": True}, {"text": "8", "finished": True}],  # always right: no pair
        [{"text": "9 - 1 = 7", "finished": True}, {"text": "9 - 1 is 8", "finished": False}],  # right reply cut off
    ]
    pairs = preference.preference_pairs(q, samples, lambda x: [{"role": "user", "content": x["question"]}],
                                        per_question=10)
    got = {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs}
    assert got == {("2 + 3 = 5", "2 + 3 = 6"), ("2 + 3 = 5", "It is 7."), ("2 + 3 = 5", "Two")}
    assert all(p["question"] == 0 and p["prompt"] == [{"role": "user", "content": "What is 2 + 3?"}] for p in pairs)
    capped = preference.preference_pairs(q, samples, conversation, per_question=2, seed=0)
    assert len(capped) == 2 and capped == preference.preference_pairs(q, samples, conversation, per_question=2, seed=0)
    with_cut = preference.preference_pairs(q, samples, conversation, per_question=10, finished_only=False)
    assert ("9 - 1 is 8", "9 - 1 = 7") in {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in with_cut}
    with pytest.raises(ConfigError, match="3 questions but 2"):
        preference.preference_pairs(q, samples[:2], conversation)


def _pair(prompt, chosen, rejected):
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


PAIRS = [_pair("What is 2 + 3?", "5", "2 + 3 = 6"), _pair("What is 12 - 4?", "12 - 4 = 8", "7")]


def test_completion_logps_sum_the_reply_tokens(model, tok):
    got = preference.completion_logps(model, tok, PAIRS, "chosen")
    got_rejected = preference.completion_logps(model, tok, PAIRS, "rejected")
    for i, p in enumerate(PAIRS):
        for key, value in (("chosen", got[i]), ("rejected", got_rejected[i])):
            prompt = tok.apply_chat_template(p["prompt"], tokenize=False, add_generation_prompt=True)
            prompt_ids = tok(prompt, add_special_tokens=False).input_ids
            reply_ids = tok(p[key][0]["content"] + "<|im_end|>", add_special_tokens=False).input_ids
            ids = torch.tensor([prompt_ids + reply_ids])
            with torch.no_grad():
                logp = model(input_ids=ids).logits[0].log_softmax(-1)
            want = sum(float(logp[len(prompt_ids) + j - 1, t]) for j, t in enumerate(reply_ids))
            assert float(value) == pytest.approx(want, abs=1e-4), (i, key)


def test_mean_token_kl_is_zero_for_a_copy_and_grows_with_change(model, tok):
    twin = copy.deepcopy(model)
    assert preference.mean_token_kl(twin, model, tok, PAIRS) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        twin.lm_head.weight.add_(torch.randn_like(twin.lm_head.weight) * 0.05)
    small = preference.mean_token_kl(twin, model, tok, PAIRS)
    with torch.no_grad():
        twin.lm_head.weight.add_(torch.randn_like(twin.lm_head.weight) * 0.5)
    assert 0 < small < preference.mean_token_kl(twin, model, tok, PAIRS)
