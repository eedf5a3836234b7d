"""Week 7 exercise checks accept the reference solutions and reject plausible wrong answers (tiny models, fast)."""

import copy
import functools
import subprocess
import tarfile

import pytest
import torch
import torch.nn.functional as F
from exercise_harness import STUB, answer_record, judge_tests, judged, run_exercise
from tiny_configs import tiny_llama_config

NB1 = "week07/01_reading_library_code.ipynb"
NB2 = "week07/02_contribution_workflow.ipynb"
SEED = 20261204  # the batch seed the judged answers are drawn from (a real batch draws a fresh one)


@functools.cache
def _tiny_model():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=96, head_dim=16, initializer_range=0.2)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)  # learned scales are not all 1 in a trained model
    return model, torch.randint(0, 96, (2, 7))


def _tiny_ctx():
    model, ids = _tiny_model()
    return {"torch": torch, "F": F, "model": model, "ids": ids}


@pytest.fixture(scope="module")
def tiny():
    return _tiny_ctx()


# ---- 1.1 RMSNorm -------------------------------------------------------------------------------------------------
def test_rms_norm_reference_passes(tiny):
    assert run_exercise(NB1, "1.1", tiny).status == "passed"


WRONG_1_1 = {
    "LayerNorm": "return weight * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) "
                 "+ eps)",
    "forgot the learned scale": "return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)",
    "L2 norm instead of RMS": "return weight * x / x.norm(dim=-1, keepdim=True)",
}


@pytest.mark.parametrize("wrong", list(WRONG_1_1.values()), ids=list(WRONG_1_1.keys()))
def test_rms_norm_wrong_answers_fail(tiny, wrong):
    assert run_exercise(NB1, "1.1", tiny, solution=wrong).status == "failed"


def test_rms_norm_stub_is_not_attempted(tiny):
    assert run_exercise(NB1, "1.1", tiny, solution=STUB).status == "not attempted"


# ---- 1.2 SwiGLU MLP ----------------------------------------------------------------------------------------------
def test_mlp_reference_passes(tiny):
    assert run_exercise(NB1, "1.2", tiny).status == "passed"


WRONG_1_2 = {
    "silu on the wrong branch": "return F.linear(F.silu(F.linear(x, mlp.up_proj.weight)) * "
                                "F.linear(x, mlp.gate_proj.weight), mlp.down_proj.weight)",
    "GELU instead of SiLU": "return F.linear(F.gelu(F.linear(x, mlp.gate_proj.weight)) * "
                            "F.linear(x, mlp.up_proj.weight), mlp.down_proj.weight)",
    "no gate": "return F.linear(F.silu(F.linear(x, mlp.up_proj.weight)), mlp.down_proj.weight)",
}


@pytest.mark.parametrize("wrong", list(WRONG_1_2.values()), ids=list(WRONG_1_2.keys()))
def test_mlp_wrong_answers_fail(tiny, wrong):
    assert run_exercise(NB1, "1.2", tiny, solution=wrong).status == "failed"


def test_mlp_stub_is_not_attempted(tiny):
    assert run_exercise(NB1, "1.2", tiny, solution=STUB).status == "not attempted"


# ---- 1.3 the minimal loop equals Trainer ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trainer_run(tiny, tmp_path_factory):
    from transformers import Trainer, TrainingArguments

    base = tiny["model"]
    steps, batch, lr = 4, 2, 1e-3
    torch.manual_seed(1)
    data = [{"input_ids": c, "labels": c} for c in torch.randint(0, 96, (steps * batch, 8))]

    def trainable_copy():
        m = copy.deepcopy(base)
        for name, p in m.named_parameters():
            p.requires_grad = name.startswith(("model.layers.1.", "model.norm."))
        return m

    m = trainable_copy()
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("trainer")), max_steps=steps,
                             per_device_train_batch_size=batch, learning_rate=lr, lr_scheduler_type="constant",
                             train_sampling_strategy="sequential", use_cpu=True, report_to="none",
                             save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = Trainer(model=m, args=args, train_dataset=data)
    trainer.train()
    return tiny | {
        "trainable_copy": trainable_copy, "train_data": data, "TRAIN_STEPS": steps, "BATCH": batch, "LR": lr,
        "trainer_losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "trainer_weights": {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad},
    }


LOOP = """
opt = torch.optim.AdamW(params, lr=lr{opt_extra})
for step in range({steps}):
    batch = data[step * batch_size:(step + 1) * batch_size]
    loss = model(input_ids=torch.stack([ex["input_ids"] for ex in batch]),
                 labels=torch.stack([ex["labels"] for ex in batch])).loss
    loss.backward()
    {clip}
    opt.step()
    opt.zero_grad()
    losses.append(loss.item())
"""
CLIP = "torch.nn.utils.clip_grad_norm_(params, 1.0)"


def test_minimal_loop_reference_passes(trainer_run):
    assert run_exercise(NB1, "1.3", trainer_run).status == "passed"


WRONG_1_3 = {
    "torch's AdamW default weight_decay=0.01": LOOP.format(opt_extra="", steps="steps", clip=CLIP),
    "no gradient clipping": LOOP.format(opt_extra=", weight_decay=0.0", steps="steps", clip="pass"),
    "one step short": LOOP.format(opt_extra=", weight_decay=0.0", steps="steps - 1", clip=CLIP),
    "shuffled data": LOOP.format(opt_extra=", weight_decay=0.0", steps="steps", clip=CLIP).replace(
        "batch = data[step * batch_size:(step + 1) * batch_size]",
        "batch = [data[i] for i in torch.randperm(len(data))[:batch_size]]"),
}


@pytest.mark.parametrize("wrong", list(WRONG_1_3.values()), ids=list(WRONG_1_3.keys()))
def test_minimal_loop_wrong_answers_fail(trainer_run, wrong):
    torch.manual_seed(0)
    assert run_exercise(NB1, "1.3", trainer_run, solution=wrong).status == "failed"


def test_minimal_loop_stub_is_not_attempted(trainer_run):
    assert run_exercise(NB1, "1.3", trainer_run, solution=STUB).status == "not attempted"


# ---- 2.1 / 2.2 the contribution workflow, with real git --------------------------------------------------------
def _git(*args, cwd):
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture()
def fork(tmp_path):
    from llmcourse.contrib import create_upstream

    upstream = create_upstream(tmp_path)
    repo = tmp_path / "wordstats"
    _git("clone", "-q", str(upstream), str(repo), cwd=tmp_path)
    _git("config", "user.name", "Test Learner", cwd=repo)
    _git("config", "user.email", "learner@example.com", cwd=repo)
    _git("switch", "-q", "-c", "add-sentence-count", cwd=repo)

    def git(*args, cwd=None, check=True):
        return _git(*args, cwd=cwd)

    from pathlib import Path
    return {"REPO": repo, "UPSTREAM": upstream, "git": git, "Path": Path}


@pytest.mark.slow
def test_contribution_reference_solutions_pass(fork):
    assert run_exercise(NB2, "2.1", fork).status == "passed"
    assert run_exercise(NB2, "2.2", fork).status == "passed"


WRITE_FILES = """
core = repo / "wordstats" / "core.py"
core.write_text(core.read_text() + FEATURE_CODE)
init = repo / "wordstats" / "__init__.py"
init.write_text(init.read_text().replace("import top_words", "import sentence_count, top_words")
                .replace('__all__ = [', '__all__ = ["sentence_count", '))
(repo / "tests" / "test_sentences.py").write_text(TEST_CODE)
"""
HEAD = '\n\ndef sentence_count(text: str) -> int:\n    """Sentences."""\n'
COUNT_PUNCTUATION = HEAD + '    return text.count(".") + text.count("!") + text.count("?")\n'
SPLIT_RUNS = HEAD + '    return sum(1 for part in re.split(r"[.!?]+", text) if words(part))\n'
GOOD_TEST = 'import wordstats\n\n\ndef test_sentence_count():\n    assert wordstats.sentence_count("Hi. Bye.") == 2\n'
WEAK_TEST = ('import wordstats\n\n\ndef test_sentence_count():\n'
             '    assert wordstats.word_count("Hi. Bye.") == 2  # sentence_count\n')


def test_feature_that_counts_punctuation_fails(fork):
    result = run_exercise(NB2, "2.1", fork | {"FEATURE_CODE": COUNT_PUNCTUATION, "TEST_CODE": GOOD_TEST},
                          solution=WRITE_FILES)
    assert result.status == "failed" and "sentence_count('...') is 3, expected 0" in result.message


@pytest.mark.slow
def test_files_written_this_way_pass(fork):
    result = run_exercise(NB2, "2.1", fork | {"FEATURE_CODE": SPLIT_RUNS, "TEST_CODE": GOOD_TEST}, solution=WRITE_FILES)
    assert result.status == "passed", result.message


@pytest.mark.slow
def test_test_that_passes_without_the_feature_fails(fork):
    result = run_exercise(NB2, "2.1", fork | {"FEATURE_CODE": SPLIT_RUNS, "TEST_CODE": WEAK_TEST}, solution=WRITE_FILES)
    assert result.status == "failed" and "does not fail on upstream" in result.message


WRONG_2_1 = {  # the two wrong answers above, as solutions (for the judge)
    "counts punctuation marks, not sentences":
    f"FEATURE_CODE, TEST_CODE = {COUNT_PUNCTUATION!r}, {GOOD_TEST!r}\n{WRITE_FILES}",
    "a test that passes without the feature": f"FEATURE_CODE, TEST_CODE = {SPLIT_RUNS!r}, {WEAK_TEST!r}\n{WRITE_FILES}",
}
WRONG_2_2 = {
    "the test not committed": 'git("add", "wordstats/core.py", "wordstats/__init__.py", cwd=repo)\n'
    'git("commit", "-q", "-m", "core: add sentence_count\\n\\nCounts sentences.", cwd=repo)',
    "a subject not in the project's format":
    'git("add", "-A", cwd=repo)\ngit("commit", "-q", "-m", "Added sentence counting.", cwd=repo)',
    "no body": 'git("add", "-A", cwd=repo)\ngit("commit", "-q", "-m", "core: add sentence_count", cwd=repo)',
    "two commits": 'git("add", "wordstats", cwd=repo)\n'
    'git("commit", "-q", "-m", "core: add sentence_count\\n\\nCode.", cwd=repo)\n'
    'git("add", "tests", cwd=repo)\ngit("commit", "-q", "-m", "tests: add sentence tests\\n\\nTests.", cwd=repo)',
}


@pytest.mark.slow
@pytest.mark.parametrize("wrong", WRONG_2_2.values(), ids=WRONG_2_2.keys())
def test_unclean_history_fails(fork, wrong):
    assert run_exercise(NB2, "2.1", fork).status == "passed"
    assert run_exercise(NB2, "2.2", fork, solution=wrong).status == "failed"


def test_contribution_stubs_are_not_attempted(fork):
    assert run_exercise(NB2, "2.1", fork, solution=STUB).status == "not attempted"
    assert run_exercise(NB2, "2.2", fork, solution=STUB).status == "not attempted"


# ---- 3.1 / 3.2 / 3.3 the real-library track: peft's own tests and linter judge every answer ---------------------
NB3 = "week07/03_contributing_to_peft.ipynb"


def _apply(exercise, context):
    """Run the reference solution of `exercise` (its exercise cell, without the check): the state the next one needs."""
    import re
    from pathlib import Path

    from exercise_harness import exercise_cells

    exec(exercise_cells(NB3, exercise)[0], {**context, "Path": Path, "re": re})


@pytest.fixture()
def peft_fork(tmp_path):
    import re
    from pathlib import Path

    from llmcourse.upstream import fresh_fork

    upstream, repo = fresh_fork(tmp_path)

    def git(*args, cwd=None, check=True):
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
        assert done.returncode == 0 or not check, done.stderr
        return (done.stdout + done.stderr).strip()

    return {"REPO": repo, "UPSTREAM": upstream, "git": git, "Path": Path, "re": re}


def _commit_and_conflict(ctx):
    """The notebook's steps after 3.1: commit, upstream moves, rebase stops at the conflict."""
    from llmcourse.upstream import move_upstream

    repo = ctx["REPO"]
    _git("commit", "-q", "-am", "FIX Validate lora_dropout in LoraConfig\n\nBody.", cwd=repo)
    move_upstream(ctx["UPSTREAM"])
    _git("fetch", "-q", "upstream", cwd=repo)
    assert subprocess.run(["git", "rebase", "upstream/main"], cwd=repo, capture_output=True).returncode != 0


@pytest.fixture()
def conflicted(peft_fork):
    _apply("3.1", peft_fork)
    _commit_and_conflict(peft_fork)
    return peft_fork


@pytest.fixture()
def reviewed(conflicted):
    _apply("3.2", conflicted)
    return conflicted | {"REVIEWED": _git("rev-parse", "HEAD", cwd=conflicted["REPO"]).strip()}


FEATURE = """
config = repo / "src" / "peft" / "tuners" / "lora" / "config.py"
anchor = "        self.peft_type = PeftType.LORA\\n"
config.write_text(config.read_text().replace(anchor, anchor + CHECK, 1))
tests = repo / "tests" / "test_config.py"
tests.write_text(tests.read_text() + TEST)
"""
GOOD_CHECK = ("        if not 0.0 <= self.lora_dropout < 1.0:\n"
              "            raise ValueError(f\"`lora_dropout` must be in [0, 1), got {self.lora_dropout}.\")\n")
PEFT_TEST = ("\n\nclass TestLoraDropoutValidation:\n    def test_lora_dropout_above_one_raises(self):\n"
             "        with pytest.raises(ValueError):\n            LoraConfig(lora_dropout=1.5)\n")


@pytest.mark.slow
def test_peft_feature_reference_passes(peft_fork):
    assert run_exercise(NB3, "3.1", peft_fork).status == "passed"


WRONG_3_1 = {  # (check, test, what the check's message names)
    # rejects the default 0.0: every LoraConfig() breaks, and peft's own tests catch it
    "rejects the default 0.0": (GOOD_CHECK.replace("0.0 <= self", "0.0 < self"), PEFT_TEST, "peft's own tests"),
    # only values above 1 are rejected: negatives still pass silently
    "negatives let through": (
        "        if self.lora_dropout > 1.0:\n            raise ValueError(\"bad lora_dropout\")\n", PEFT_TEST,
        "lora_dropout=-0.1"),
    # the test passes on upstream's code too: it proves nothing
    "a test that passes without the check": (GOOD_CHECK, PEFT_TEST.replace(
        "with pytest.raises(ValueError):\n            LoraConfig(lora_dropout=1.5)",
        "assert LoraConfig(lora_dropout=0.5).lora_dropout == 0.5"), "do not fail on"),
    # not formatted the project's way: peft's ruff format --check refuses it
    "not formatted the project's way": (GOOD_CHECK, PEFT_TEST.replace("LoraConfig(lora_dropout=1.5)",
                                                                      "LoraConfig( lora_dropout = 1.5 )"), "ruff"),
}


@pytest.mark.slow
@pytest.mark.parametrize("check_code, test_code, why", WRONG_3_1.values(), ids=WRONG_3_1.keys())
def test_peft_feature_wrong_answers_fail(peft_fork, check_code, test_code, why):
    result = run_exercise(NB3, "3.1", peft_fork | {"CHECK": check_code, "TEST": test_code}, solution=FEATURE)
    assert result.status == "failed" and why in result.message, result.message


@pytest.mark.slow
def test_peft_conflict_reference_passes(conflicted):
    assert run_exercise(NB3, "3.2", conflicted).status == "passed"


_CONTINUE = 'git("add", "-A", cwd=repo)\ngit("-c", "core.editor=true", "rebase", "--continue", cwd=repo)'
WRONG_3_2 = {  # (resolution, what the check's message names)
    # your side only (during a rebase, --theirs is the commit being replayed): the maintainer's check of r is lost,
    # and the maintainer's own test of it, now part of peft's tests, fails
    "your side only": ('git("checkout", "--theirs", "src/peft/tuners/lora/config.py", cwd=repo)\n' + _CONTINUE,
                       "test_lora_config_r_must_be_positive"),
    # upstream's side only: your check is lost, your own test fails among peft's
    "upstream's side only": ('git("checkout", "--ours", "src/peft/tuners/lora/config.py", cwd=repo)\n' + _CONTINUE,
                             "fail on"),
    "markers committed as they are": (_CONTINUE, "marker"),
    # gave up: the branch still sits on the old upstream
    "rebase aborted": ('git("rebase", "--abort", cwd=repo)', "does not sit on"),
}


@pytest.mark.slow
@pytest.mark.parametrize("wrong, why", WRONG_3_2.values(), ids=WRONG_3_2.keys())
def test_peft_conflict_wrong_answers_fail(conflicted, wrong, why):
    result = run_exercise(NB3, "3.2", conflicted, solution=wrong)
    assert result.status == "failed" and why in result.message, result.message


@pytest.mark.slow
def test_peft_review_reference_passes(reviewed):
    assert run_exercise(NB3, "3.3", reviewed).status == "passed"


REVIEW = """
config = repo / "src" / "peft" / "tuners" / "lora" / "config.py"
config.write_text(config.read_text().replace('raise ValueError("`lora_dropout` must be in [0, 1).")', MESSAGE))
tests = repo / "tests" / "test_config.py"
tests.write_text(tests.read_text().split("\\n\\nclass TestLoraDropoutValidation")[0] + TEST)
git("commit", "-q", "-a", *AMEND, cwd=repo)
"""
VALUE_MESSAGE = 'raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}.")'
BOTH_SIDES = ("\n\nclass TestLoraDropoutValidation:\n"
              "    @pytest.mark.parametrize(\"p\", [-0.1, 1.0, 1.5])\n"
              "    def test_bad_lora_dropout_raises(self, p):\n"
              "        with pytest.raises(ValueError):\n            LoraConfig(lora_dropout=p)\n")
VALID = ("\n    @pytest.mark.parametrize(\"p\", [0.0, 0.5])\n    def test_good_lora_dropout_is_kept(self, p):\n"
         "        assert LoraConfig(lora_dropout=p).lora_dropout == p\n")


WRONG_3_3 = {  # (message, test, commit arguments, what the check's message names)
    "the message still does not name the value": (
        'raise ValueError("`lora_dropout` must be in [0, 1).")'.replace("[0, 1).", "[0, 1), see the docs."),
        BOTH_SIDES + VALID, ["--amend", "--no-edit"], "does not name the value"),
    # a check that lets negatives through passes these tests
    "the test still tries one side only": (VALUE_MESSAGE, BOTH_SIDES.replace("[-0.1, 1.0, 1.5]", "[1.0, 1.5]") + VALID,
                                           ["--amend", "--no-edit"], "lets negatives through"),
    # a check that rejects everything passes these tests
    "no test of valid values": (VALUE_MESSAGE, BOTH_SIDES, ["--amend", "--no-edit"], "rejects valid values"),
    "a second commit instead of amending": (VALUE_MESSAGE, BOTH_SIDES + VALID, ["-m", "Address review"], "2 commits"),
}


@pytest.mark.slow
@pytest.mark.parametrize("message, test_code, amend, why", WRONG_3_3.values(), ids=WRONG_3_3.keys())
def test_peft_review_wrong_answers_fail(reviewed, message, test_code, amend, why):
    ctx = reviewed | {"MESSAGE": message, "TEST": test_code, "AMEND": amend}
    result = run_exercise(NB3, "3.3", ctx, solution=REVIEW)
    assert result.status == "failed" and why in result.message, result.message


def test_peft_stubs_are_not_attempted(peft_fork):
    assert run_exercise(NB3, "3.1", peft_fork, solution=STUB).status == "not attempted"
    _apply("3.1", peft_fork)
    _commit_and_conflict(peft_fork)
    assert run_exercise(NB3, "3.2", peft_fork, solution=STUB).status == "not attempted"
    _apply("3.2", peft_fork)
    head = _git("rev-parse", "HEAD", cwd=peft_fork["REPO"]).strip()
    assert run_exercise(NB3, "3.3", peft_fork | {"REVIEWED": head}, solution=STUB).status == "not attempted"


# ------------------------------------------------------------------------------------------------ the judge
# Graded, exercises 1.1-1.3 are judged outside the kernel (issue 21): the check cell's answer spec computes the answer
# on inputs drawn from the batch's seed (1.3 trains a tiny Llama it builds from the seed, not the notebook's SmolLM2
# copy), and the grader compares it with the reference's. The judge must reject every wrong answer the checks above
# reject, pass the reference, and see a stub as not attempted. The specs of 2.1 and 2.2 call the learner's function on
# a fresh fork of their own (2.2's with the feature written, a stamp from the seed inside) and record what the check
# verifies as data, with sentence counts of texts from the seed (2.1) and the stamp as committed (2.2). The specs of
# 3.x rebuild the exercise on a fresh peft fork with the learner's own functions (3.2 and 3.3 with their 3.1 and
# 3.2) and record what the checks verify, with LoraConfig probed on dropouts from the seed.
def _loop_ctx():
    return {"torch": torch, "F": F}


def _fork_ctx(request, fixture="fork"):
    """The notebook's names on the fork of `fixture`; its git() does not raise, as a second run of the exercise cell
    on the same REPO (the reference's, then the answer under test) has nothing left to commit or continue."""
    from pathlib import Path

    ctx = request.getfixturevalue(fixture)

    def git(*args, cwd=None, check=True):
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
        return (done.stdout + done.stderr).strip()

    return ctx | {"git": git, "Path": Path}


def _reference_functions(ctx, notebook, *exercises):
    """`ctx` with the reference solutions' functions of `notebook`'s `exercises` (what the specs of later ones call),
    defined in it as the notebook defines them in its namespace."""
    import ast
    import re
    from pathlib import Path

    from exercise_harness import exercise_cells

    ns = {"Path": Path, "re": re, **ctx}
    for exercise in exercises:
        tree = ast.parse(exercise_cells(notebook, exercise)[0])
        tree.body = [node for node in tree.body if isinstance(node, ast.FunctionDef)]  # not the call on REPO
        exec(compile(tree, f"<{exercise} reference>", "exec"), ns)
    return ns


def _peft_ctx(*earlier):
    """The notebook's names for a 3.x exercise judged: the reference functions of the `earlier` exercises, and a
    REPO (a plain folder with peft's two files the exercises edit) for the exercise cell's own call, whose effect
    the spec never reads (it builds a fork of its own); git() does not raise (git fails in that folder)."""
    def make(request):
        from llmcourse.upstream import CONFIG_FILE, FORK_RELEASE, sdist_path

        repo = request.getfixturevalue("tmp_path") / "peft"
        with tarfile.open(sdist_path(FORK_RELEASE)) as tar:
            for rel in (CONFIG_FILE, "tests/test_config.py"):
                member = next(m for m in tar.getmembers() if m.name.split("/", 1)[-1] == rel)
                (repo / rel).parent.mkdir(parents=True, exist_ok=True)
                (repo / rel).write_bytes(tar.extractfile(member).read())

        def git(*args, cwd=None, check=True):  # the spec runs the functions on its fork with this git too
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
            return (done.stdout + done.stderr).strip()

        return _reference_functions({"REPO": repo, "REVIEWED": "0" * 40, "git": git}, NB3, *earlier)
    return make


# The spec of 1.1 also has a row so small that the eps inside the root matters: the check's inputs are too large for
# it, so only the judge rejects this one.
JUDGED_WRONG_1_1 = {**WRONG_1_1, "eps outside the root":
                    "return weight * x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps)"}

JUDGED = [(NB1, "1.1", lambda request: _tiny_ctx(), JUDGED_WRONG_1_1),
          (NB1, "1.2", lambda request: _tiny_ctx(), WRONG_1_2), (NB1, "1.3", lambda request: _loop_ctx(), WRONG_1_3),
          (NB2, "2.1", _fork_ctx, WRONG_2_1),
          (NB2, "2.2", lambda request: _reference_functions(_fork_ctx(request), NB2, "2.1"), WRONG_2_2)]


test_the_judge_rejects_the_wrong_answers, test_the_judge_passes_the_reference_and_sees_a_stub_as_not_attempted = (
    judge_tests(JUDGED, SEED, with_request=True))


# Exercise 2.2's answer is the repository itself (a git bundle), and the grader reads the facts from it
# (llmcourse.contrib.history_from_bundle, the spec's "derive"): a kernel that replaces the course's helper to return the
# facts of a perfect answer does not pass. 2.1's answer is the files the learner's write_feature wrote, and the grader
# runs them itself, sandboxed (feature_from_files); 3.x send the fork and the grader runs peft's tests on it (below).
FORGE_2_2 = """import llmcourse.contrib


def commit_feature(repo):
    pass  # nothing committed: the forgery below speaks for it


def _forged(write_feature, commit_feature, folder, stamp):
    return {facts!r} | {{"committed_stamp": f"# {{stamp}}"}}


llmcourse.contrib.history_record = _forged
"""


def test_a_forged_history_record_fails_the_judge(request, monkeypatch):
    import llmcourse.contrib as contrib

    monkeypatch.setattr(contrib, "history_record", contrib.history_record)  # the forgery below replaces it: restored
    ctx = _reference_functions(_fork_ctx(request), NB2, "2.1")
    expected = answer_record(NB2, "2.2", ctx, seed=SEED)
    facts = contrib.history_from_bundle(expected["answer"])
    assert facts["commits"] == 1 and facts["code_and_test"] and facts["committed_stamp"].startswith("# batch ")
    forged = answer_record(NB2, "2.2", dict(ctx), FORGE_2_2.format(facts=facts), seed=SEED)
    assert forged["answer"] == facts  # exactly what the reference's repository yields, as the old judge compared
    status, message = judged(NB2, "2.2", dict(ctx), FORGE_2_2.format(facts=facts), seed=SEED, expected=expected)
    assert status == "failed" and "not a repository" in message, message


def test_history_from_bundle_reads_a_real_history_and_refuses_what_is_not_one(tmp_path):
    import base64

    from llmcourse.contrib import history_from_bundle

    repo = tmp_path / "r"
    _git("init", "-q", "-b", "main", str(repo), cwd=tmp_path)
    who = ["-c", "user.name=L", "-c", "user.email=l@example.com"]
    _git(*who, "commit", "-q", "--allow-empty", "-m", "base", cwd=repo)
    _git("switch", "-q", "-c", "feature", cwd=repo)
    (repo / "wordstats").mkdir()
    (repo / "tests").mkdir()
    (repo / "wordstats" / "core.py").write_text("x = 1\n# batch 7\n")
    (repo / "tests" / "test_x.py").write_text("def test_x():\n    pass\n")
    _git("add", "-A", cwd=repo)
    _git(*who, "commit", "-q", "-m", "core: add x\n\nWhy: a test needs it.", cwd=repo)
    _git("bundle", "create", "-q", str(tmp_path / "b"), "--all", cwd=repo)
    good = {"bundle": base64.b64encode((tmp_path / "b").read_bytes()).decode(), "branch": "feature", "clean": True}
    assert history_from_bundle(good) == {"commits": 1, "subject_length_ok": True, "subject_format": True,
                                         "body": True, "code_and_test": True, "on_branch": True, "clean": True,
                                         "committed_stamp": "# batch 7"}
    assert history_from_bundle(good | {"branch": "main"})["on_branch"] is False
    _git("bundle", "create", "-q", str(tmp_path / "c"), "feature", cwd=repo)  # no main, no HEAD
    bad = {"not a record": {"commits": 1}, "not base64": good | {"bundle": "%%%"},
           "not a bundle": good | {"bundle": base64.b64encode(b"PK\x03\x04 a zip file").decode()},
           "no HEAD or main": good | {"bundle": base64.b64encode((tmp_path / "c").read_bytes()).decode()},
           "too big": good | {"bundle": base64.b64encode(b"x" * (2**20 + 1)).decode()}}
    for what, answer in bad.items():
        with pytest.raises(ValueError):
            history_from_bundle(answer)
            pytest.fail(f"accepted: {what}")


FORGE_2_1 = """import llmcourse.contrib


def _forged(write_feature, folder, texts):
    return {facts!r}


llmcourse.contrib.feature_files = _forged
"""


def test_a_forged_feature_record_fails_the_judge(request, monkeypatch):
    import llmcourse.contrib as contrib

    monkeypatch.setattr(contrib, "feature_files", contrib.feature_files)  # the forgery below replaces it: restored
    ctx = _fork_ctx(request)
    expected = answer_record(NB2, "2.1", ctx, seed=SEED)
    facts = contrib.feature_from_files(expected["answer"])
    assert facts["counts"][:len(contrib.SENTENCE_CASES)] == [n for _, n in contrib.SENTENCE_CASES]
    assert facts["suite_passes"] and facts["test_fails_on_upstream"] and facts["ruff_clean"] and facts["exported"]
    forged = answer_record(NB2, "2.1", dict(ctx), FORGE_2_1.format(facts=facts), seed=SEED)
    assert forged["answer"] == facts  # what the old judge compared, kernel-made: now the files are the answer
    status, message = judged(NB2, "2.1", dict(ctx), FORGE_2_1.format(facts=facts), seed=SEED, expected=expected)
    assert status == "failed" and "not a fork's files" in message, message


SENTENCE_FEATURE = ("import re\n\n\ndef words(text):\n    return re.findall(r\"[A-Za-z0-9']+\", text)\n\n\n"
           "def sentence_count(text):\n    return sum(1 for part in re.split(r\"[.!?]+\", text) if words(part))\n")

SENTENCE_TEST = "import wordstats\n\n\ndef test_s():\n    assert wordstats.sentence_count('A. B') == 2\n"
PASS_ALL = ("import pytest\n\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
            "    outcome = yield\n    outcome.get_result().outcome = 'passed'\n")  # every failure reported as a pass


def test_feature_from_files_runs_the_files_and_refuses_what_is_not_a_fork(tmp_path):
    from llmcourse.contrib import feature_from_files

    files = {"wordstats/__init__.py": '__all__ = ["sentence_count"]\n\nfrom .core import sentence_count\n',
             "wordstats/core.py": SENTENCE_FEATURE, "tests/test_s.py": SENTENCE_TEST}
    good = {"files": files, "texts": ["One. Two!", "...", "x"]}
    assert feature_from_files(good) == {"texts": ["One. Two!", "...", "x"], "counts": [2, 0, 1], "exported": True,
                                        "has_test": True, "suite_passes": True, "test_fails_on_upstream": True,
                                        "ruff_clean": True}
    # a conftest.py of the learner's is not loaded: it cannot turn the failing suite into a pass
    failing = files | {"tests/test_s.py": SENTENCE_TEST.replace("== 2", "== 3"), "tests/conftest.py": PASS_ALL}
    assert feature_from_files({"files": failing, "texts": []})["suite_passes"] is False
    bad = {"facts, not files": {"counts": [2], "suite_passes": True}, "no texts": {"files": files},
           "a path out of the fork": {"files": {"wordstats/../../x.py": ""}, "texts": []},
           "not a .py file": {"files": {"pyproject.toml": ""}, "texts": []},
           "a file outside wordstats/ and tests/": {"files": {"setup.py": ""}, "texts": []},
           "too big": {"files": {"wordstats/core.py": "#" * (2**18 + 1)}, "texts": []},
           "texts not strings": {"files": files, "texts": [1, 2]}}
    for what, answer in bad.items():
        with pytest.raises(ValueError):
            feature_from_files(answer)
            pytest.fail(f"accepted: {what}")


@pytest.fixture()
def escape(tmp_path):
    """The body of a learner's test that tries to write outside its sandbox and to reach a loopback port opened
    here; `held()` asserts that it did neither. Skips where the machine has no bubblewrap."""
    import socket
    from types import SimpleNamespace

    from llmcourse.teaching.isolation import detect

    if detect().level != "bubblewrap":
        pytest.skip(f"no sandbox on this machine: {detect().describe()}")
    outside = tmp_path / "escaped.txt"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    body = (f"    import socket\n    from pathlib import Path\n\n    try:\n"
            f"        Path({str(outside)!r}).write_text('x')\n    except OSError:\n        pass\n    try:\n"
            f"        socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=2)\n"
            f"    except OSError:\n        pass\n")

    def held():
        assert not outside.exists()
        with pytest.raises(TimeoutError):
            server.accept()

    yield SimpleNamespace(body=body, held=held)
    server.close()


def test_feature_from_files_keeps_the_learners_code_in_its_sandbox(escape):
    """With bubblewrap, the learner's code that feature_from_files runs for the judge can write nothing outside its
    fork and reach no port on this machine's loopback (without it, the same test does both)."""
    from llmcourse.teaching.grading.judge import AnswerSpec, derived

    test = f"import wordstats\n\n\ndef test_s():\n{escape.body}    assert wordstats.sentence_count('A. B') == 2\n"
    files = {"wordstats/__init__.py": '__all__ = ["sentence_count"]\n\nfrom .core import sentence_count\n',
             "wordstats/core.py": SENTENCE_FEATURE, "tests/test_s.py": test}
    facts = derived({"files": files, "texts": ["A. B"]}, AnswerSpec("", derive="fork-feature"))  # as the judge runs it
    assert facts["suite_passes"] and facts["counts"] == [2]  # the tests ran
    escape.held()


# Week 7.3's answers are the fork itself (its commits as a bundle, the files that differ from HEAD) and the grader
# gathers the facts (llmcourse.peft_answers.fork_facts, the specs' "derive": "peft-fork"), running peft's tests on the
# learner's tree in a sandbox of its own.
FORGE_3_1 = """import llmcourse.peft_answers


def write_feature(repo):
    pass  # nothing written: the forgery below speaks for it


def _forged(write_feature, folder, dropouts):
    return {facts!r}


llmcourse.peft_answers.feature_answer = _forged
"""


@pytest.mark.slow
def test_a_forged_peft_answer_fails_the_judge(request, monkeypatch):
    import llmcourse.peft_answers as peft_answers

    monkeypatch.setattr(peft_answers, "feature_answer", peft_answers.feature_answer)  # the forgery replaces it
    ctx = _peft_ctx()(request)
    expected = answer_record(NB3, "3.1", ctx, seed=SEED)
    facts = peft_answers.fork_facts(expected["answer"])
    assert facts["config_changed"] and facts["tests_pass"] and facts["ruff_clean"] and facts["from_fork"]
    assert facts["caught"] == {"has no check at all": True}
    forged = answer_record(NB3, "3.1", dict(ctx), FORGE_3_1.format(facts=facts), seed=SEED)
    assert forged["answer"] == facts  # what the old judge compared, kernel-made
    status, message = judged(NB3, "3.1", dict(ctx), FORGE_3_1.format(facts=facts), seed=SEED, expected=expected)
    assert status == "failed" and "not a peft fork" in message, message


def _peft_state(tmp_path, **changes):
    """A fork answer: upstream's HEAD, nothing changed (what a stub of 3.1 leaves), then `changes`."""
    from llmcourse.upstream import fresh_fork

    _, repo = fresh_fork(tmp_path / "state")
    head = _git("rev-parse", "HEAD", cwd=repo).strip()
    return {"kind": "feature", "dropouts": [0.5], "head": head, "bundle": None, "files": {}, "others": [],
            "rebasing": False, "amended": False} | changes


@pytest.mark.slow
def test_fork_facts_reads_a_fork_and_refuses_what_is_not_one(tmp_path):
    import base64

    from llmcourse.peft_answers import fork_facts

    untouched = _peft_state(tmp_path)
    facts = fork_facts(untouched)
    assert facts["config_changed"] is False and facts["new_tests"] is False and facts["probe"] == [[0.5, "ok", False]]
    # a bundle of a history that is not upstream's
    other = tmp_path / "other"
    _git("init", "-q", "-b", "main", str(other), cwd=tmp_path)
    _git("-c", "user.name=L", "-c", "user.email=l@example.com", "commit", "-q", "--allow-empty", "-m", "x", cwd=other)
    _git("bundle", "create", "-q", str(tmp_path / "b"), "HEAD", cwd=other)
    foreign = base64.b64encode((tmp_path / "b").read_bytes()).decode()
    bad = {"facts, not a fork": {"config_changed": True, "tests_pass": True}, "an unknown kind": {"kind": "merge"},
           "a HEAD that is no commit id": {"head": "HEAD"}, "a path out of the fork": {"files": {"src/../../x": ""}},
           "a file outside src/ and tests/": {"files": {"setup.py": ""}}, "not base64": {"bundle": "%%%"},
           "a foreign history": {"bundle": foreign, "head": _git("rev-parse", "HEAD", cwd=other).strip()},
           "a HEAD in no bundle": {"head": "1" * 40}, "too big": {"files": {"tests/x.py": "#" * (2**20 + 1)}},
           "dropouts not floats": {"dropouts": ["0.5"]}}
    for what, change in bad.items():
        answer = change if what == "facts, not a fork" else untouched | change
        with pytest.raises(ValueError):
            fork_facts(answer)
            pytest.fail(f"accepted: {what}")


@pytest.mark.slow
def test_fork_facts_keeps_the_learners_tests_in_their_sandbox(tmp_path, escape):
    """With bubblewrap, a learner's test that fork_facts runs for the judge can write nothing outside its fork and
    reach no port on this machine's loopback."""
    from llmcourse.teaching.grading.judge import AnswerSpec, derived
    from llmcourse.upstream import fresh_fork

    _, repo = fresh_fork(tmp_path / "fork")
    tests = (repo / "tests" / "test_config.py").read_text()
    state = _peft_state(tmp_path, files={"tests/test_config.py": f"{tests}\n\ndef test_escape():\n{escape.body}"})
    facts = derived(state, AnswerSpec("", derive="peft-fork"))  # as the judge runs it
    assert facts["new_tests"] and facts["tests_pass"]  # the test ran, and passed
    escape.held()


FORGE_REPORT = """

def test_forges_the_report():
    import os
    import sys

    try:  # print a result line into the harness's own output
        with open(f"/proc/{os.getppid()}/fd/1", "w") as out:
            out.write('{"runs": {}}\\n')
    except OSError:
        pass
    result = getattr(sys.modules["__main__"], "result", None)  # the harness's report, if this process holds it
    if isinstance(result, dict):
        for run in result.get("runs", {}).values():
            run["code"] = 1  # every mutant "caught"
"""


@pytest.mark.slow
def test_a_learners_test_cannot_rewrite_the_harness_report(tmp_path):
    """The learner's tests run in children of the harness: a test that catches no mutant but tries to rewrite the
    harness's report (its result in memory, its output) still catches none."""
    from llmcourse.upstream import HOLES, fresh_fork, run_peft_tests

    _, repo = fresh_fork(tmp_path)
    tests = repo / "tests" / "test_config.py"
    tests.write_text(tests.read_text() + FORGE_REPORT)
    result = run_peft_tests(repo, ["tests/test_config.py::test_forges_the_report"], own=False, holes=HOLES)
    assert {name: run["code"] for name, run in result["runs"].items()} == dict.fromkeys(["tests", *HOLES], 0)


def _solutions(template, wrongs, names):
    """The wrong answers of a table above as solutions: their pieces bound to `names`, then `template`."""
    return {what: f"{', '.join(names)} = {', '.join(repr(p) for p in pieces[:len(names)])}\n{template}"
            for what, pieces in wrongs.items()}


def _some(wrongs, *names):
    return {name: wrongs[name] for name in names}


# Each answer takes about 10 s (a peft fork built, its new tests run under the mutants in a fresh interpreter), so the
# reference's is computed once per exercise and the judge is fed one or two wrong answers an exercise, one for each
# way its answer can differ (about 2 min in all); the in-kernel tests above feed the checks every one of them.
PEFT_JUDGED = [
    (NB3, "3.1", _peft_ctx(), _solutions(FEATURE, _some(WRONG_3_1, "a test that passes without the check"),
                                         ["CHECK", "TEST"])),
    (NB3, "3.2", _peft_ctx("3.1"), {what: pieces[0] for what, pieces in _some(WRONG_3_2, "your side only").items()}),
    (NB3, "3.3", _peft_ctx("3.1", "3.2"), _solutions(REVIEW, _some(
        WRONG_3_3, "the message still does not name the value", "the test still tries one side only"),
        ["MESSAGE", "TEST", "AMEND"])),
]

test_the_judge_rejects_the_wrong_peft_answers, test_the_judge_passes_the_peft_references = (
    pytest.mark.slow(f) for f in judge_tests(PEFT_JUDGED, SEED, with_request=True, reuse_reference=True))
