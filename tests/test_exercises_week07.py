"""Week 7 exercise checks accept the reference solutions and reject plausible wrong answers (tiny models, fast)."""

import copy
import subprocess

import pytest
import torch
import torch.nn.functional as F
from exercise_harness import STUB, run_exercise
from tiny_configs import tiny_llama_config

NB1 = "week07/01_reading_library_code.ipynb"
NB2 = "week07/02_contribution_workflow.ipynb"


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=96, head_dim=16, initializer_range=0.2)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)  # learned scales are not all 1 in a trained model
    return {"torch": torch, "F": F, "model": model, "ids": torch.randint(0, 96, (2, 7))}


# ---- 1.1 RMSNorm -------------------------------------------------------------------------------------------------
def test_rms_norm_reference_passes(tiny):
    assert run_exercise(NB1, "1.1", tiny).status == "passed"


@pytest.mark.parametrize("wrong", [
    "return weight * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps)",
    "return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)",  # forgot the learned scale
    "return weight * x / x.norm(dim=-1, keepdim=True)",  # L2 norm instead of RMS
])
def test_rms_norm_wrong_answers_fail(tiny, wrong):
    assert run_exercise(NB1, "1.1", tiny, solution=wrong).status == "failed"


def test_rms_norm_stub_is_not_attempted(tiny):
    assert run_exercise(NB1, "1.1", tiny, solution=STUB).status == "not attempted"


# ---- 1.2 SwiGLU MLP ----------------------------------------------------------------------------------------------
def test_mlp_reference_passes(tiny):
    assert run_exercise(NB1, "1.2", tiny).status == "passed"


@pytest.mark.parametrize("wrong", [
    "return F.linear(F.silu(F.linear(x, mlp.up_proj.weight)) * F.linear(x, mlp.gate_proj.weight), "
    "mlp.down_proj.weight)",  # silu on the wrong branch
    "return F.linear(F.gelu(F.linear(x, mlp.gate_proj.weight)) * F.linear(x, mlp.up_proj.weight), "
    "mlp.down_proj.weight)",  # GELU instead of SiLU
    "return F.linear(F.silu(F.linear(x, mlp.up_proj.weight)), mlp.down_proj.weight)",  # no gate
])
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


@pytest.mark.parametrize("wrong", [
    LOOP.format(opt_extra="", steps="steps", clip=CLIP),  # torch's AdamW default weight_decay=0.01
    LOOP.format(opt_extra=", weight_decay=0.0", steps="steps", clip="pass"),  # no gradient clipping
    LOOP.format(opt_extra=", weight_decay=0.0", steps="steps - 1", clip=CLIP),  # one step short
    LOOP.format(opt_extra=", weight_decay=0.0", steps="steps", clip=CLIP).replace(
        "batch = data[step * batch_size:(step + 1) * batch_size]",
        "batch = [data[i] for i in torch.randperm(len(data))[:batch_size]]"),  # shuffled data
])
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


@pytest.mark.slow
@pytest.mark.parametrize("wrong", [
    'git("add", "wordstats/core.py", "wordstats/__init__.py", cwd=repo)\n'
    'git("commit", "-q", "-m", "core: add sentence_count\\n\\nCounts sentences.", cwd=repo)',  # test not added
    'git("add", "-A", cwd=repo)\ngit("commit", "-q", "-m", "Added sentence counting.", cwd=repo)',  # bad subject
    'git("add", "-A", cwd=repo)\ngit("commit", "-q", "-m", "core: add sentence_count", cwd=repo)',  # no body
    'git("add", "wordstats", cwd=repo)\ngit("commit", "-q", "-m", "core: add sentence_count\\n\\nCode.", cwd=repo)\n'
    'git("add", "tests", cwd=repo)\ngit("commit", "-q", "-m", "tests: add sentence tests\\n\\nTests.", cwd=repo)',
])
def test_unclean_history_fails(fork, wrong):
    assert run_exercise(NB2, "2.1", fork).status == "passed"
    assert run_exercise(NB2, "2.2", fork, solution=wrong).status == "failed"


def test_contribution_stubs_are_not_attempted(fork):
    assert run_exercise(NB2, "2.1", fork, solution=STUB).status == "not attempted"
    assert run_exercise(NB2, "2.2", fork, solution=STUB).status == "not attempted"
