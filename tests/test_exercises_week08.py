"""Week 8 exercise checks accept the reference solutions and reject plausible wrong answers (tiny inputs, fast)."""

import tempfile
import types
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from exercise_harness import STUB, answer_record, exercise_cells, judge_tests, run_exercise, spec_of

from llmcourse.teaching.grading.judge import KERNEL_SAVE, judge

NB1 = "week08/01_distributed_training.ipynb"
NB2 = "week08/02_capstone.ipynb"


# ---- 1.1 gradient accumulation, 1.2 ZeRO arithmetic ---------------------------------------------------------------
def _ddp_ctx():
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


@pytest.fixture()
def ddp_context():
    return _ddp_ctx()


WRONG_1_1 = {
    "loss not divided by micro_batches": "for xb, yb in zip(X.chunk(micro_batches), y.chunk(micro_batches)):\n"
                                         "    F.cross_entropy(model(xb), yb).backward()",
    "the whole batch at once": "F.cross_entropy(model(X), y).backward()",
    "a step after every micro-batch": "for xb, yb in zip(X.chunk(micro_batches), y.chunk(micro_batches)):\n"
                                      "    (F.cross_entropy(model(xb), yb) / micro_batches).backward()\n"
                                      "    opt.step()",
}


def test_accumulation_reference_passes(ddp_context):
    assert run_exercise(NB1, "1.1", ddp_context).status == "passed"


@pytest.mark.parametrize("wrong", WRONG_1_1.values(), ids=WRONG_1_1.keys())
def test_accumulation_wrong_answers_fail(ddp_context, wrong):
    assert run_exercise(NB1, "1.1", ddp_context, solution=wrong).status == "failed"


def test_accumulation_stub_is_not_attempted(ddp_context):
    assert run_exercise(NB1, "1.1", ddp_context, solution=STUB).status == "not attempted"


def test_zero_reference_passes():
    assert run_exercise(NB1, "1.2").status == "passed"


WRONG_1_2 = {
    "every stage shards everything": "return 16 * n_params / (n_gpus if stage else 1)",
    "stages 2 and 3 shard only the optimizer": "w, g, o = 2 * n_params, 2 * n_params, 12 * n_params\n"
                                               "return w + g + (o / n_gpus if stage >= 1 else o)",
    "fp32 weights and gradients": "w, g, o = 4 * n_params, 4 * n_params, 8 * n_params\n"
                                  "return (w if stage < 3 else w / n_gpus) + (g if stage < 2 else g / n_gpus) "
                                  "+ (o if stage < 1 else o / n_gpus)",
}


@pytest.mark.parametrize("wrong", WRONG_1_2.values(), ids=WRONG_1_2.keys())
def test_zero_wrong_answers_fail(wrong):
    assert run_exercise(NB1, "1.2", solution=wrong).status == "failed"


def test_zero_stub_is_not_attempted():
    assert run_exercise(NB1, "1.2", solution=STUB).status == "not attempted"


# ---- 1.3 ZeRO-1 ownership, 1.4 the GPipe timeline -------------------------------------------------------------
def _zero_ctx():
    single = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    owned = [["0.weight"], ["0.bias", "2.weight", "2.bias"]]  # what the two ranks of the notebook's run reported
    return {"single": single, "par": [{"ZeRO-1": {"owned": names}} for names in owned], "WORLD_SIZE": 2}


@pytest.fixture()
def zero_context():
    return _zero_ctx()


def test_partition_reference_passes(zero_context):
    assert run_exercise(NB1, "1.3", zero_context).status == "passed"


_GREEDY = ("owned, owner = [0] * world_size, [None] * len(sizes)\n"
           "for i in order:\n"
           "    r = owned.index(min(owned))\n"
           "    owner[i] = r\n"
           "    owned[r] += sizes[i]\n"
           "return owner")
WRONG_1_3 = {
    "round robin, sizes ignored": "return [i % world_size for i in range(len(sizes))]",
    "greedy in the model's order": "order = range(len(sizes))\n" + _GREEDY,
    "smallest first": "order = sorted(range(len(sizes)), key=lambda i: sizes[i])\n" + _GREEDY,
    "contiguous blocks of tensors": "chunk = -(-len(sizes) // world_size)\n"
                                    "return [i // chunk for i in range(len(sizes))]",
    "ties: the last tensor first": "order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i), reverse=True)\n"
                                   + _GREEDY,
    "ties: the highest rank": "order = sorted(range(len(sizes)), key=lambda i: sizes[i], reverse=True)\n"
                              + _GREEDY.replace("owned.index(min(owned))",
                                                "max(range(world_size), key=lambda k: (-owned[k], k))"),
}


@pytest.mark.parametrize("wrong", WRONG_1_3.values(), ids=WRONG_1_3.keys())
def test_partition_wrong_answers_fail(zero_context, wrong):
    assert run_exercise(NB1, "1.3", zero_context, solution=wrong).status == "failed"


def test_partition_stub_is_not_attempted(zero_context):
    assert run_exercise(NB1, "1.3", zero_context, solution=STUB).status == "not attempted"


def _pipeline_ctx():
    log = ["F0", "F1", "F2", "F3", "B0", "B1", "B2", "B3"]  # each rank's order of work in the notebook's run
    return {"par": [{"pipeline": {"log": list(log)}} for _ in range(2)], "WORLD_SIZE": 2, "MICRO_BATCHES": 4}


@pytest.fixture()
def pipeline_context():
    return _pipeline_ctx()


def test_timeline_reference_passes(pipeline_context):
    assert run_exercise(NB1, "1.4", pipeline_context).status == "passed"


TIMELINE = ("first = n_micro + n_stages - 1\n"
            "slots = [[''] * n_stages for _ in range(2 * first)]\n"
            "for s in range(n_stages):\n"
            "    for m in range(n_micro):\n")


WRONG_1_4 = {
    "no stagger": TIMELINE + "        slots[m][s] = f'F{m}'\n"
                             "        slots[first + m][s] = f'B{m}'\n"
                             "return slots",  # a stage starts before the previous one has sent its activations
    "backward not staggered": TIMELINE + "        slots[s + m][s] = f'F{m}'\n"
                                         "        slots[first + m][s] = f'B{m}'\n"
                                         "return slots",  # gradients do not need to travel back
    "backwards in reverse order": TIMELINE + "        slots[s + m][s] = f'F{m}'\n"
                                             "        slots[first + (n_stages - 1 - s) + (n_micro - 1 - m)][s] = "
                                             "f'B{m}'\n"
                                             "return slots",  # not what the run did
    "one idle slot too many": TIMELINE.replace("range(2 * first)", "range(2 * first + 1)")
                              + "        slots[s + m][s] = f'F{m}'\n"
                                "        slots[first + 1 + (n_stages - 1 - s) + m][s] = f'B{m}'\n"
                                "return slots",  # before the backwards
}


@pytest.mark.parametrize("wrong", WRONG_1_4.values(), ids=WRONG_1_4.keys())
def test_timeline_wrong_answers_fail(pipeline_context, wrong):
    assert run_exercise(NB1, "1.4", pipeline_context, solution=wrong).status == "failed"


def test_timeline_stub_is_not_attempted(pipeline_context):
    assert run_exercise(NB1, "1.4", pipeline_context, solution=STUB).status == "not attempted"


# ---- 2.1 the training example (cut the text, never the template), 2.2 the served function --------------------------
CAPSTONE_SAMPLES = {  # (text, label id or answer) per task: a short text and one longer than any SEQ_LEN allows
    "sentiment_en": [("I love it", 1), ("worst service ever, " * 40, 0)],
    "sentiment_zh": [("很好用", 1), ("质量太差了，用了两天就坏了，客服也不理人。" * 20, 0)],
    "arithmetic": None,  # filled from llmcourse.tasks.arithmetic_problems, plus a long question
}


def notebook_cell(notebook, cell_id):
    from exercise_harness import ROOT

    from llmcourse.teaching.notebooks import cell_source, read_notebook

    return next(cell_source(c) for c in read_notebook(ROOT / notebook).cells if c.get("id") == cell_id)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    import llmcourse

    return AutoTokenizer.from_pretrained(llmcourse.resolve("HuggingFaceTB/SmolLM2-135M-Instruct"))


def capstone_task(tokenizer, name):
    """The notebook's own TASKS, chat_parts and prompt_ids for task `name`, with a few examples of it."""
    from llmcourse.tasks import arithmetic_problems

    ns = {}
    exec(notebook_cell(NB2, "c4a7e1f0"), ns)  # TASKS and chat_parts
    task = ns["TASKS"][name]
    head, tail = ns["chat_parts"](tokenizer, task)
    if task["labels"]:
        samples = [(text, task["labels"][y]) for text, y in CAPSTONE_SAMPLES[name]]
    else:
        problems = arithmetic_problems(3, seed=0)
        samples = [(p["question"], str(p["answer"])) for p in problems]
        samples.append((" ".join(p["question"] for p in arithmetic_problems(10, seed=1)), "1234"))
    ctx = {"torch": torch, "tokenizer": tokenizer, "HEAD": head, "TAIL": tail, "SEQ_LEN": task["seq_len"],
           "END": tokenizer.convert_tokens_to_ids("<|im_end|>"), "LABELS": task["labels"],
           "train_texts": [t for t, _ in samples], "train_y": [a for _, a in samples], "answer_text": str}
    exec(notebook_cell(NB2, "b7d2e5a1").replace("print(", "str("), ctx)  # ANSWER_ROOM, TEXT_ROOM, prompt_ids
    return ctx, samples


def assert_well_built(make_example, ctx, samples):
    """Every example keeps the whole template and its answer, fits SEQ_LEN, and trains on the answer only."""
    head, tail, tok = ctx["HEAD"], ctx["TAIL"], ctx["tokenizer"]
    for text, answer in samples:
        ex = make_example(text, answer)
        ids, labels = ex["input_ids"], ex["labels"]
        ans = tok.encode(answer) + [ctx["END"]]
        assert len(ids) == len(labels) <= ctx["SEQ_LEN"]
        assert ids[:len(head)] == head, "the system prompt and instruction were cut"
        assert ids[-len(ans) - len(tail):] == tail + ans, "the chat's tail or the answer is missing"
        kept = ids[len(head):-len(ans) - len(tail)]
        assert kept and kept == tok.encode(text)[:len(kept)], "the text is not the start of the text"
        assert labels == [-100] * (len(ids) - len(ans)) + ans


OLD_LEFT_CUT = (  # the capstone's first version: cut the whole prompt from the left, losing the template
    "answer_ids = tokenizer.encode(answer) + [END]\n"
    "prompt = (HEAD + tokenizer.encode(text) + TAIL)[-(SEQ_LEN - len(answer_ids)):]\n"
    "return {'input_ids': prompt + answer_ids, 'labels': [-100] * len(prompt) + answer_ids}")


def reference_make_example(ctx, solution=None):
    from llmcourse.teaching.notebooks import replace_solution

    src = exercise_cells(NB2, "2.1")[0]
    ns = dict(ctx)
    exec(replace_solution(src, solution) if solution else src, ns)
    return ns["make_example"]


@pytest.mark.parametrize("name", ["sentiment_en", "sentiment_zh", "arithmetic"])
def test_every_task_builds_examples_with_the_template_and_the_answer(smollm2_tokenizer, name):
    ctx, samples = capstone_task(smollm2_tokenizer, name)
    assert_well_built(reference_make_example(ctx), ctx, samples)
    assert run_exercise(NB2, "2.1", ctx).status == "passed"
    if name == "sentiment_en":  # the template is long enough that cutting the whole sequence loses it
        with pytest.raises(AssertionError, match="system prompt and instruction were cut"):
            assert_well_built(reference_make_example(ctx, OLD_LEFT_CUT), ctx, samples)


@pytest.fixture(scope="module")
def capstone_context(smollm2_tokenizer):
    return capstone_task(smollm2_tokenizer, "sentiment_en")[0]


def test_make_example_reference_passes(capstone_context):
    assert run_exercise(NB2, "2.1", capstone_context).status == "passed"


WRONG_2_1 = {
    "the whole prompt cut from the left": OLD_LEFT_CUT,
    # long examples lose their answer
    "the whole sequence cut from the right":
    "answer_ids = tokenizer.encode(answer) + [END]\n"
    "prompt = HEAD + tokenizer.encode(text) + TAIL\n"
    "return {'input_ids': (prompt + answer_ids)[:SEQ_LEN], 'labels': ([-100] * len(prompt) + answer_ids)[:SEQ_LEN]}",
    # the model would also learn to write the prompt
    "labels not masked":
    "answer_ids = tokenizer.encode(answer) + [END]\n"
    "prompt = prompt_ids(text, room=SEQ_LEN - len(HEAD) - len(TAIL) - len(answer_ids))\n"
    "return {'input_ids': prompt + answer_ids, 'labels': list(prompt + answer_ids)}",
    # long examples are SEQ_LEN + 1 tokens
    "off by one: the room forgets the end-of-turn token":
    "answer_ids = tokenizer.encode(answer) + [END]\n"
    "prompt = prompt_ids(text, room=SEQ_LEN - len(HEAD) - len(TAIL) - len(tokenizer.encode(answer)))\n"
    "return {'input_ids': prompt + answer_ids, 'labels': [-100] * len(prompt) + answer_ids}",
    # the model never learns to stop
    "no end-of-turn token":
    "answer_ids = tokenizer.encode(answer)\n"
    "prompt = prompt_ids(text, room=SEQ_LEN - len(HEAD) - len(TAIL) - len(answer_ids))\n"
    "return {'input_ids': prompt + answer_ids, 'labels': [-100] * len(prompt) + answer_ids}",
    # a longer answer overflows SEQ_LEN
    "the default room of a one-word answer":
    "answer_ids = tokenizer.encode(answer) + [END]\n"
    "prompt = prompt_ids(text)\n"
    "return {'input_ids': prompt + answer_ids, 'labels': [-100] * len(prompt) + answer_ids}",
}


@pytest.mark.parametrize("wrong", WRONG_2_1.values(), ids=WRONG_2_1.keys())
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
        word = "Positive" if "love" in text else "Negative"  # a model may capitalise: the reply is lower-cased
        new = self.tok.encode(" " + word) + [self.tok.convert_tokens_to_ids("<|im_end|>")]
        return torch.cat([input_ids, torch.tensor([new])], dim=1)


def notebook_function(notebook, name, namespace):
    """Define the notebook's function `name` (from whichever code cell defines it) in `namespace`."""
    import ast

    from exercise_harness import ROOT

    from llmcourse.teaching.notebooks import cell_source, read_notebook

    for cell in read_notebook(ROOT / notebook).cells:
        if cell.cell_type == "code" and f"def {name}(" in cell_source(cell):
            tree = ast.parse("\n".join(line for line in cell_source(cell).splitlines() if not line.startswith("%")))
            tree.body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
            exec(compile(tree, f"<{notebook} {name}>", "exec"), namespace)
            return namespace
    raise AssertionError(f"{notebook} defines no function {name}")


def served(capstone_context):
    texts = ["I love this", "this is awful", "love it", "meh, broken again"]
    ctx = capstone_context | {"merged": FakeModel(capstone_context["tokenizer"]), "test_texts": texts,
                              "MAX_NEW_TOKENS": 2, "pred_after": torch.tensor([1, 0, 1, 0]),
                              "as_number": lambda reply: -1}
    return notebook_function(NB2, "parse", ctx)  # the check reads replies as the scoreboard does


@pytest.fixture()
def served_context(capstone_context):
    return served(capstone_context)


def test_endpoint_reference_passes(served_context):
    assert run_exercise(NB2, "2.2", served_context).status == "passed"


_GENERATE = ("ids = torch.tensor([prompt_ids(text)])\n"
             "out = merged.generate(input_ids=ids, max_new_tokens=MAX_NEW_TOKENS, ")
WRONG_2_2 = {
    "decodes the prompt too": _GENERATE + "do_sample=False)\n"
    "return tokenizer.decode(out[0], skip_special_tokens=True).strip().lower()",
    "keeps <|im_end|> and the leading space": _GENERATE + "do_sample=False)\n"
    "return tokenizer.decode(out[0, ids.shape[1]:])",
    "not lower-cased": _GENERATE + "do_sample=False)\n"
    "return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()",
    "sampled, not greedy": _GENERATE + "do_sample=True)\n"
    "return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip().lower()",
    "a constant answer": "return 'positive'",  # disagrees with the model's scores
}


@pytest.mark.parametrize("wrong", WRONG_2_2.values(), ids=WRONG_2_2.keys())
def test_endpoint_wrong_answers_fail(served_context, wrong):
    assert run_exercise(NB2, "2.2", served_context, solution=wrong).status == "failed"


def test_endpoint_stub_is_not_attempted(served_context):
    assert run_exercise(NB2, "2.2", served_context, solution=STUB).status == "not attempted"


# ------------------------------------------------------------------------------------------------ the judge
# Graded, these exercises are judged outside the kernel (issue 21): the check cell's answer spec computes the answer
# on inputs drawn from the batch's seed, and the grader compares it with the reference's. The judge must reject every
# wrong answer the checks above reject, pass the reference, and see a stub as not attempted. A context factory takes
# pytest's `request` (the capstone's context needs the tokenizer fixture). 2.2's spec swaps the fine-tuned model for a
# stand-in built from the seed (the FakeModel of the context is never called).
SEED = 20261204  # the batch seed the judged answers are drawn from (a real batch draws a fresh one)


def _capstone_ctx(request, name="sentiment_en"):
    return capstone_task(request.getfixturevalue("smollm2_tokenizer"), name)[0]


JUDGED = [(NB1, "1.1", lambda request: _ddp_ctx(), WRONG_1_1), (NB1, "1.2", lambda request: {}, WRONG_1_2),
          (NB1, "1.3", lambda request: _zero_ctx(), WRONG_1_3),
          (NB1, "1.4", lambda request: _pipeline_ctx(), WRONG_1_4), (NB2, "2.1", _capstone_ctx, WRONG_2_1),
          (NB2, "2.2", lambda request: served(_capstone_ctx(request)), WRONG_2_2)]


test_the_judge_rejects_the_wrong_answers, test_the_judge_passes_the_reference_and_sees_a_stub_as_not_attempted = (
    judge_tests(JUDGED, SEED, with_request=True))


@pytest.mark.parametrize("name", ["sentiment_zh", "arithmetic"])
def test_the_judge_passes_a_right_answer_for_another_task(request, name):
    """The reference notebook runs the default task; a student may pick another (TASK), which changes HEAD, TAIL and
    SEQ_LEN. 2.1's answer records what the check verifies, not the ids, so a right answer passes on any task."""
    expected = answer_record(NB2, "2.1", _capstone_ctx(request), seed=SEED)
    got = answer_record(NB2, "2.1", _capstone_ctx(request, name), seed=SEED)
    assert judge(got, expected, spec_of(NB2, "2.1")) == ("passed", "")
    wrong = answer_record(NB2, "2.1", _capstone_ctx(request, name), WRONG_2_1["off by one: the room forgets the "
                                                                              "end-of-turn token"], seed=SEED)
    assert judge(wrong, expected, spec_of(NB2, "2.1"))[0] == "failed"


@pytest.mark.parametrize("name", ["sentiment_zh", "arithmetic"])
def test_the_judge_passes_a_right_endpoint_for_another_task(request, name):
    """2.2's stand-in model answers every prompt that ends with the chat's tail alike, whatever the TASK."""
    expected = answer_record(NB2, "2.2", served(_capstone_ctx(request)), seed=SEED)
    got = answer_record(NB2, "2.2", served(_capstone_ctx(request, name)), seed=SEED)
    assert judge(got, expected, spec_of(NB2, "2.2")) == ("passed", "")
    wrong = answer_record(NB2, "2.2", served(_capstone_ctx(request, name)), WRONG_2_2["decodes the prompt too"],
                          seed=SEED)
    assert judge(wrong, expected, spec_of(NB2, "2.2"))[0] == "failed"


def test_the_endpoint_spec_gives_the_notebook_back_its_model(request):
    """The spec swaps `merged` and MAX_NEW_TOKENS for the call only: the cells after it serve the real model."""
    ctx = served(_capstone_ctx(request))
    ex_src, _ = exercise_cells(NB2, "2.2")
    namespace = dict(ctx)
    exec(ex_src, namespace)
    kernel = {"get_ipython": lambda: SimpleNamespace(user_ns=namespace)}
    exec(KERNEL_SAVE, kernel)
    with tempfile.TemporaryDirectory() as folder:
        done = kernel["_llmcourse_save_answer"]("2.2", spec_of(NB2, "2.2").code, SEED, f"{folder}/answers.jsonl")
    assert done == "recorded"
    assert namespace["merged"] is ctx["merged"] and namespace["MAX_NEW_TOKENS"] == ctx["MAX_NEW_TOKENS"]
