"""Fair evaluation: the baselines a score sits next to, choices made on validation only, and honest uncertainty.

Introduced in week 3.2 (`week03/02_finetune_classifier.ipynb`) and used wherever a notebook reports a score:

    >>> board = Scoreboard(labels)                       # the test labels, scored once at the end
    >>> board.add("majority class", majority(train_labels, len(labels)))
    >>> board.add("fine-tuned MiniLM", preds)
    >>> board                                            # a table: accuracy with its 95% interval, F1

Three habits live here. A score is printed next to chance, the majority class and a simple classical model trained
on the same data (`tfidf_logreg`). Every choice (a learning rate, a number of epochs, a regularisation strength) is
made on the validation split (`select`), and the test split is scored once, at the end. Where two scores are close, a
bootstrap interval (`accuracy_interval`, `paired_difference`) says whether the gap is larger than the noise of a
finite test set.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError

__all__ = ["Score", "Scoreboard", "TextBaseline", "accuracy_interval", "chance", "majority", "paired_difference",
           "select", "tfidf_logreg"]

LEVEL = 0.95  # the confidence level of every interval printed in the course
BOOTSTRAP = 2000  # resamples per interval: its ends move by about 0.002 between seeds on 2,000 examples


def _as_labels(values: Iterable, what: str) -> np.ndarray:
    if hasattr(values, "numpy"):  # a torch tensor
        values = values.numpy()
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values))
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(f"{what} must be a non-empty 1-D sequence of class ids, got shape {arr.shape}.")
    return arr.astype(np.int64)


def accuracy_interval(correct: Sequence[bool], level: float = LEVEL, n_boot: int = BOOTSTRAP,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of an accuracy: resample the examples with replacement, `n_boot` times."""
    hits = np.asarray(correct, dtype=float)
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(0, hits.size, size=(n_boot, hits.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_difference(correct_a: Sequence[bool], correct_b: Sequence[bool], level: float = LEVEL,
                      n_boot: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy of A minus accuracy of B on the same examples, with its bootstrap interval (low, high).

    The same resampled examples score both models, so what they share (easy and hard examples) cancels: the interval
    of the difference is much narrower than the two accuracies' intervals suggest. An interval that excludes 0 says
    the gap is larger than the test set's sampling noise."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape:
        raise ConfigError(f"paired_difference needs both models scored on the same examples: got {a.size} and "
                          f"{b.size} results.")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(a.mean() - b.mean()), float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail))


def chance(n_classes: int, n: int, seed: int = 0) -> np.ndarray:
    """Predictions of a uniform random guesser over `n_classes` for `n` examples (its accuracy tends to 1/n_classes)."""
    return np.random.default_rng(seed).integers(0, n_classes, size=n)


def majority(train_labels: Iterable, n: int) -> np.ndarray:
    """Predictions that always answer the class most common in the *training* labels (not the test labels: knowing
    the test set's majority is already a peek at it)."""
    counts = np.bincount(_as_labels(train_labels, "train_labels"))
    return np.full(n, int(np.argmax(counts)), dtype=np.int64)


@dataclass
class TextBaseline:
    """A TF-IDF + logistic regression classifier whose strength C was chosen on the validation split."""

    model: object
    C: float
    validation: dict[float, float]  # C -> validation accuracy

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.predict(list(texts)))


def tfidf_logreg(train_texts: Sequence[str], train_labels: Iterable, val_texts: Sequence[str], val_labels: Iterable,
                 Cs: Sequence[float] = (0.3, 1.0, 3.0, 10.0), analyzer: str = "word",
                 ngram_range: tuple[int, int] = (1, 2)) -> TextBaseline:
    """The classical baseline: word and word-pair TF-IDF features, logistic regression, C chosen on validation.

    For text without spaces between words (Chinese), pass analyzer="char" and ngram_range=(1, 3): characters and
    character runs instead of words (week 8.2's Chinese task)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    y_train, y_val = _as_labels(train_labels, "train_labels"), _as_labels(val_labels, "val_labels")
    fitted, scores = {}, {}
    for c in Cs:
        features = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range, min_df=1, sublinear_tf=True)
        pipe = make_pipeline(features, LogisticRegression(C=c, max_iter=2000))
        pipe.fit(list(train_texts), y_train)
        fitted[c], scores[c] = pipe, float(np.mean(pipe.predict(list(val_texts)) == y_val))
    best = select([{"C": c, "val_accuracy": s} for c, s in scores.items()])["C"]
    return TextBaseline(fitted[best], best, scores)


def select(records: Sequence[dict], metric: str = "val_accuracy", higher_is_better: bool = True) -> dict:
    """The record with the best validation `metric`; among equals, the first listed (list cheaper settings first).

    Only validation numbers may decide: a record's test score, if it has one, is ignored here on purpose."""
    if not records:
        raise ConfigError("select() got no records: run the sweep first.")
    missing = [i for i, r in enumerate(records) if metric not in r]
    if missing:
        raise ConfigError(f"select(): records {missing} have no {metric!r}; each record needs its validation score "
                          f"under that key (keys of the first: {sorted(records[0])}).")
    best = records[0]
    for r in records[1:]:
        if (r[metric] > best[metric]) if higher_is_better else (r[metric] < best[metric]):
            best = r
    return best


@dataclass(frozen=True)
class Score:
    """One row of a scoreboard."""

    name: str
    accuracy: float
    low: float
    high: float
    f1: float | None  # F1 of the positive class (binary tasks only)
    note: str = ""


@dataclass
class Scoreboard:
    """Scores of several predictors on the same labelled examples, each with its 95% bootstrap interval."""

    labels: np.ndarray
    scores: list[Score] = field(default_factory=list)
    _correct: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.labels = _as_labels(self.labels, "labels")

    def add(self, name: str, preds: Iterable, note: str = "") -> Score:
        preds = _as_labels(preds, f"predictions of {name!r}")
        if preds.shape != self.labels.shape:
            raise ConfigError(f"{name!r}: {preds.size} predictions for {self.labels.size} labels; score every "
                              "predictor on the same examples.")
        correct = preds == self.labels
        low, high = accuracy_interval(correct)
        f1 = None
        if set(np.unique(self.labels)) <= {0, 1}:
            tp = int(np.sum(correct & (preds == 1)))
            f1 = 0.0 if tp == 0 else 2 * tp / (2 * tp + int(np.sum(~correct)))
        score = Score(name, float(correct.mean()), low, high, f1, note)
        self.scores = [s for s in self.scores if s.name != name] + [score]
        self._correct[name] = correct
        return score

    def __getitem__(self, name: str) -> Score:
        for s in self.scores:
            if s.name == name:
                return s
        raise KeyError(f"no score named {name!r}; have {[s.name for s in self.scores]}")

    def difference(self, a: str, b: str) -> tuple[float, float, float]:
        """Accuracy of `a` minus `b` on the same examples, with its 95% paired bootstrap interval."""
        return paired_difference(self._correct[a], self._correct[b])

    def best_except(self, exclude: Callable[[Score], bool]) -> Score:
        """The most accurate score not excluded (e.g. the strongest baseline)."""
        return max((s for s in self.scores if not exclude(s)), key=lambda s: s.accuracy)

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        out = []
        for s in self.scores:
            f1 = "-" if s.f1 is None else f"{s.f1:.3f}"
            out.append((s.name, f"{s.accuracy:.3f}", f"[{s.low:.3f}, {s.high:.3f}]", f1, s.note))
        return out

    def __str__(self) -> str:
        head = ("", "accuracy", f"{LEVEL:.0%} interval", "F1 (pos.)", "")
        rows = [head, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}".rstrip()
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        return f"{self.labels.size:,} examples\n" + "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("", "accuracy", f"{LEVEL:.0%} interval", "F1 (pos.)", "note"))
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(v)}</td>" for v in r) + "</tr>"
                       for r in self.rows())
        return f"<p>{self.labels.size:,} examples</p><table><tr>{head}</tr>{body}</table>"
