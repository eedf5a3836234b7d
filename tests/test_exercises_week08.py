"""Week 8 exercise checks accept the reference solutions and reject plausible wrong answers (tiny inputs, fast)."""

import types

import pytest
import torch
import torch.nn.functional as F
from exercise_harness import STUB, run_exercise

NB1 = "week08/01_distributed_training.ipynb"
NB2 = "week08/02_capstone.ipynb"


# ---- 1.1 gradient accumulation, 1.2 ZeRO arithmetic ---------------------------------------------------------------
@pytest.fixture()
def ddp_context():
    def make_model(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))

    def global_batches(n, batch, steps, seed):
        g = torch.Generator().manual_seed(seed)
        return [torch.randint(n, (batch,), generator=g) for _ in range(steps)]

    torch.manual_seed(0)
    return {"torch": torch, "F": F, "train_ddp": types.SimpleNamespace(make_model=make_model,
                                                                       global_batches=global_batches),
            "X": torch.rand(256, 64), "y": torch.randint(0, 10, (256,)), "SEED": 0, "GLOBAL_BATCH": 64, "LR": 0.5}


def test_accumulation_reference_passes(ddp_context):
    assert run_exercise(NB1, "1.1", ddp_context).status == "passed"


@pytest.mark.parametrize("wrong", [
    "for xb, yb in zip(X.chunk(micro_batches), y.chunk(micro_batches)):\n"
    "    F.cross_entropy(model(xb), yb).backward()",  # forgot to divide by the number of micro-batches
    "F.cross_entropy(model(X), y).backward()",  # the whole batch at once: no accumulation
    "for xb, yb in zip(X.chunk(micro_batches), y.chunk(micro_batches)):\n"
    "    (F.cross_entropy(model(xb), yb) / micro_batches).backward()\n"
    "    opt.step()",  # stepping after every micro-batch
])
def test_accumulation_wrong_answers_fail(ddp_context, wrong):
    assert run_exercise(NB1, "1.1", ddp_context, solution=wrong).status == "failed"


def test_accumulation_stub_is_not_attempted(ddp_context):
    assert run_exercise(NB1, "1.1", ddp_context, solution=STUB).status == "not attempted"


def test_zero_reference_passes():
    assert run_exercise(NB1, "1.2").status == "passed"


@pytest.mark.parametrize("wrong", [
    "return 16 * n_params / (n_gpus if stage else 1)",  # every stage shards everything
    "w, g, o = 2 * n_params, 2 * n_params, 12 * n_params\n"
    "return w + g + (o / n_gpus if stage >= 1 else o)",  # stage 2 and 3 forget to shard grads and weights
    "w, g, o = 4 * n_params, 4 * n_params, 8 * n_params\n"
    "return (w if stage < 3 else w / n_gpus) + (g if stage < 2 else g / n_gpus) + (o if stage < 1 else o / n_gpus)",
])
def test_zero_wrong_answers_fail(wrong):
    assert run_exercise(NB1, "1.2", solution=wrong).status == "failed"


def test_zero_stub_is_not_attempted():
    assert run_exercise(NB1, "1.2", solution=STUB).status == "not attempted"


# ---- 2.1 answer-only labels, 2.2 the served function --------------------------------------------------------------
@pytest.fixture(scope="module")
def capstone_context():
    from transformers import AutoTokenizer

    import llmcourse

    tokenizer = AutoTokenizer.from_pretrained(llmcourse.resolve("HuggingFaceTB/SmolLM2-135M-Instruct"))

    def prompt(text):
        messages = [{"role": "system", "content": "You label the sentiment of short texts."},
                    {"role": "user", "content": f"Is this positive or negative?\n\n{text[:280]}"}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    return {"torch": torch, "tokenizer": tokenizer, "prompt": prompt, "LABELS": ["negative", "positive"],
            "SEQ_LEN": 48}


def test_make_example_reference_passes(capstone_context):
    assert run_exercise(NB2, "2.1", capstone_context).status == "passed"


@pytest.mark.parametrize("wrong", [
    # labels not masked: the model would also learn to write the prompt
    "answer = tokenizer.encode(LABELS[label]) + [tokenizer.convert_tokens_to_ids('<|im_end|>')]\n"
    "ids = (tokenizer.encode(prompt(text)) + answer)[-SEQ_LEN:]\n"
    "return {'input_ids': ids, 'labels': list(ids)}",
    # cut from the right: long examples lose their answer
    "answer = tokenizer.encode(LABELS[label]) + [tokenizer.convert_tokens_to_ids('<|im_end|>')]\n"
    "p = tokenizer.encode(prompt(text))\n"
    "ids, labs = (p + answer)[:SEQ_LEN], ([-100] * len(p) + answer)[:SEQ_LEN]\n"
    "return {'input_ids': ids, 'labels': labs}",
    # no end-of-turn token: the model never learns to stop
    "answer = tokenizer.encode(LABELS[label])\n"
    "p = tokenizer.encode(prompt(text))[-(SEQ_LEN - 1):]\n"
    "return {'input_ids': p + answer, 'labels': [-100] * len(p) + answer}",
])
def test_make_example_wrong_answers_fail(capstone_context, wrong):
    assert run_exercise(NB2, "2.1", capstone_context, solution=wrong).status == "failed"


def test_make_example_stub_is_not_attempted(capstone_context):
    assert run_exercise(NB2, "2.1", capstone_context, solution=STUB).status == "not attempted"


class FakeModel:
    """Stands in for the merged model: `generate` appends the label word its rule picks, then <|im_end|>."""

    device = torch.device("cpu")

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def generate(self, input_ids, max_new_tokens, do_sample, **kwargs):
        assert not do_sample and max_new_tokens <= 5
        text = self.tok.decode(input_ids[0])
        word = "positive" if "love" in text else "negative"
        new = self.tok.encode(" " + word) + [self.tok.convert_tokens_to_ids("<|im_end|>")]
        return torch.cat([input_ids, torch.tensor([new])], dim=1)


@pytest.fixture()
def served_context(capstone_context):
    texts = ["I love this", "this is awful", "love it", "meh, broken again"]
    return capstone_context | {"merged": FakeModel(capstone_context["tokenizer"]), "held_out": {"text": texts},
                               "pred_after": torch.tensor([1, 0, 1, 0])}


def test_endpoint_reference_passes(served_context):
    assert run_exercise(NB2, "2.2", served_context).status == "passed"


@pytest.mark.parametrize("wrong", [
    # decodes the prompt too
    "enc = tokenizer(prompt(text), return_tensors='pt')\n"
    "out = merged.generate(**enc, max_new_tokens=3, do_sample=False)\n"
    "return tokenizer.decode(out[0], skip_special_tokens=True).strip().lower()",
    # keeps <|im_end|> and the leading space
    "enc = tokenizer(prompt(text), return_tensors='pt')\n"
    "out = merged.generate(**enc, max_new_tokens=3, do_sample=False)\n"
    "return tokenizer.decode(out[0, enc['input_ids'].shape[1]:])",
    "return 'positive'",  # a constant answer disagrees with the model's scores
])
def test_endpoint_wrong_answers_fail(served_context, wrong):
    assert run_exercise(NB2, "2.2", served_context, solution=wrong).status == "failed"


def test_endpoint_stub_is_not_attempted(served_context):
    assert run_exercise(NB2, "2.2", served_context, solution=STUB).status == "not attempted"
