"""llmcourse.recipes: the week 3 classifier recipe, its cache key, atomic store and one-time training."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from tiny_configs import tiny_bert_config

from llmcourse import recipes
from llmcourse.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NB2 = ROOT / "week03" / "02_finetune_classifier.ipynb"


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_HOME", str(tmp_path))
    return tmp_path


def _tiny_classifier():
    from transformers import AutoTokenizer, BertForSequenceClassification

    import llmcourse

    tok = AutoTokenizer.from_pretrained(llmcourse.resolve("sentence-transformers/all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(vocab_size=tok.vocab_size, num_hidden_layers=1,
                                                           num_labels=2))
    return model, tok


def test_cache_key_depends_on_every_setting(home):
    base = recipes.classifier_path()
    assert base == recipes.classifier_path(**{k: v for k, v in recipes.TWEET_RECIPE.items()})
    assert base.parent == home / "models"
    for key, value in [("n_train", 100), ("lr", 3e-5), ("seed", 1), ("max_length", 32)]:
        assert recipes.classifier_path(**{key: value}) != base


def test_unknown_setting_is_a_config_error(home):
    with pytest.raises(ConfigError, match="unknown recipe setting"):
        recipes.classifier_path(learning_rate=1e-4)


def test_notebook_02_defaults_and_choice_are_the_recipe():
    """The recipe's fixed settings are the notebook's parameters; its lr and epochs are among those the notebook
    sweeps, and the notebook's stored run chose exactly them (re-run the notebook after changing either)."""
    nb = json.loads(NB2.read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    params = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign):
            params[node.targets[0].id] = ast.literal_eval(node.value)
    names = {"n_train": "N_TRAIN", "max_length": "MAX_LENGTH", "batch_size": "BATCH_SIZE",
             "warmup_steps": "WARMUP_STEPS", "weight_decay": "WEIGHT_DECAY", "seed": "SEED"}
    assert {k: params[v] for k, v in names.items()} == {k: recipes.TWEET_RECIPE[k] for k in names}
    assert recipes.TWEET_RECIPE["lr"] in params["LRS"]
    assert 1 <= recipes.TWEET_RECIPE["epochs"] <= params["MAX_EPOCHS"]
    saved = next(c for c in nb["cells"] if "recipes.save_tweet_classifier" in "".join(c["source"]))
    printed = "".join("".join(o.get("text", "")) for o in saved.get("outputs", []))
    assert "the settings chosen here are the recipe's: True" in printed, printed


def test_save_is_atomic_and_loading_does_not_train(home, monkeypatch):
    model, tok = _tiny_classifier()
    folder = recipes.save_tweet_classifier(model, tok, info={"test_accuracy": 0.9}, n_train=8)
    assert (folder / "recipe.json").exists()
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]  # no half-written folder left behind
    meta = json.loads((folder / "recipe.json").read_text())
    assert meta["recipe"]["n_train"] == 8 and meta["test_accuracy"] == 0.9

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the cache holds the model")

    monkeypatch.setattr(recipes, "train_tweet_classifier", no_training)
    loaded, _ = recipes.tweet_classifier(n_train=8, verbose=False)
    ids = tok(["a fine day"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(loaded(**ids).logits, model.eval()(**ids).logits, atol=1e-6)


def test_trains_once_then_reads_the_cache(home, monkeypatch):
    calls = []

    class FakeTrainer:
        def __init__(self):
            self.model, self.processing_class = _tiny_classifier()

    def fake_train(output_dir, **overrides):
        calls.append(overrides)
        return FakeTrainer()

    monkeypatch.setattr(recipes, "train_tweet_classifier", fake_train)
    recipes.tweet_classifier(n_train=16, verbose=False)
    recipes.tweet_classifier(n_train=16, verbose=False)
    assert calls == [{"n_train": 16}]
    recipes.tweet_classifier(n_train=16, retrain=True, verbose=False)
    assert len(calls) == 2


@pytest.mark.slow
def test_recipe_trains_for_real_on_a_few_tweets(tmp_path):
    """The recipe code itself (real MiniLM, real tweets), 2 steps: it runs and the loss is finite."""
    trainer = recipes.train_tweet_classifier(tmp_path, n_train=32, max_length=16)
    assert trainer.state.global_step == 2
    losses = [h["train_loss"] for h in trainer.state.log_history if "train_loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert trainer.model.config.id2label == {0: "negative", 1: "positive"}
