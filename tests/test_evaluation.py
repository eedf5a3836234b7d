"""Fair evaluation helpers: baselines from training labels only, validation-only selection, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from llmcourse import evaluation
from llmcourse.errors import ConfigError


def test_majority_answers_the_training_majority_not_the_test_one():
    preds = evaluation.majority([1, 1, 1, 0], n=5)
    assert preds.tolist() == [1, 1, 1, 1, 1]


def test_chance_guesses_uniformly():
    preds = evaluation.chance(2, 20_000)
    assert set(preds.tolist()) == {0, 1} and abs(preds.mean() - 0.5) < 0.02


def test_accuracy_interval_matches_the_normal_approximation():
    correct = np.array([True] * 800 + [False] * 200)
    low, high = evaluation.accuracy_interval(correct)
    half = 1.96 * np.sqrt(0.8 * 0.2 / 1000)  # 0.0248
    assert low < 0.8 < high
    assert abs((high - low) / 2 - half) < 0.004, (low, high)


def test_paired_difference_is_exact_at_the_point_and_narrower_than_unpaired():
    rng = np.random.default_rng(0)
    b = rng.random(1000) < 0.7
    a = b.copy()
    flip = np.flatnonzero(~b)[:30]  # A fixes 30 of B's mistakes and breaks nothing
    a[flip] = True
    diff, low, high = evaluation.paired_difference(a, b)
    assert diff == pytest.approx(0.03)
    assert 0 < low < 0.03 < high
    la, ha = evaluation.accuracy_interval(a)
    lb, hb = evaluation.accuracy_interval(b)
    assert la < hb  # unpaired intervals overlap, the paired one excludes 0
    assert evaluation.paired_difference(b, b) == (0.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="same examples: got 3 and 2"):
        evaluation.paired_difference([1, 0, 1], [1, 0])


def test_select_uses_validation_only_and_prefers_the_first_of_equals():
    runs = [{"lr": 3e-5, "epoch": 1, "val_accuracy": 0.80, "test_accuracy": 0.90},
            {"lr": 1e-4, "epoch": 1, "val_accuracy": 0.85, "test_accuracy": 0.84},
            {"lr": 1e-4, "epoch": 2, "val_accuracy": 0.85, "test_accuracy": 0.86},
            {"lr": 3e-4, "epoch": 2, "val_accuracy": 0.83, "test_accuracy": 0.88}]
    assert evaluation.select(runs) is runs[1]
    losses = [{"r": 4, "val_loss": 2.0}, {"r": 8, "val_loss": 1.5}, {"r": 16, "val_loss": 1.5}]
    assert evaluation.select(losses, metric="val_loss", higher_is_better=False)["r"] == 8
    with pytest.raises(ConfigError, match="records \\[1\\] have no 'val_accuracy'"):
        evaluation.select([{"val_accuracy": 0.5}, {"acc": 0.6}])
    with pytest.raises(ConfigError, match="no records"):
        evaluation.select([])


def test_tfidf_baseline_chooses_C_on_validation_and_learns_words():
    pos = ["great happy day", "love it so much", "happy great love", "so happy today", "love this great"]
    neg = ["awful sad day", "hate it so much", "sad awful hate", "so sad today", "hate this awful"]
    texts, labels = pos + neg, [1] * 5 + [0] * 5
    base = evaluation.tfidf_logreg(texts, labels, ["happy love", "sad hate"], [1, 0], Cs=(0.3, 10.0))
    assert set(base.validation) == {0.3, 10.0}
    assert base.validation[base.C] == max(base.validation.values())
    assert base.predict(["great love", "awful hate"]).tolist() == [1, 0]


def test_scoreboard_scores_match_sklearn_and_refuse_mismatched_lengths():
    labels = np.array([0, 0, 0, 1, 1, 0, 1, 0, 0, 1])
    preds = np.array([0, 1, 0, 1, 0, 0, 1, 0, 1, 1])
    board = evaluation.Scoreboard(labels)
    score = board.add("model", preds, note="test")
    assert score.accuracy == pytest.approx(0.7)
    assert score.f1 == pytest.approx(f1_score(labels, preds))
    board.add("majority", evaluation.majority(labels, len(labels)))
    assert board["majority"].accuracy == pytest.approx(0.6) and board["majority"].f1 == 0.0
    assert board.best_except(lambda s: s.name == "model").name == "majority"
    text = str(board)
    assert text.splitlines()[0] == "10 examples" and "model" in text and "0.700" in text
    assert board.difference("model", "majority")[0] == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="3 predictions for 10 labels"):
        board.add("short", [0, 1, 0])
