"""Week 4.3's evaluation set and retrieval: every generated answer is in its own source text, the checker accepts the
answer and rejects others, chunks keep line numbers, BM25 and dense search find what they should, and the metrics and
blending give exact values on hand-made rankings."""

import numpy as np
import pytest

from llmcourse import docqa, retrieval
from llmcourse.errors import ConfigError


@pytest.fixture(scope="module")
def questions():
    return docqa.build()


def test_at_least_100_generated_questions_each_answered_in_its_own_source(questions):
    assert len(questions) >= 100
    assert len({q.id for q in questions}) == len(questions)
    docs = docqa.corpus()
    for q in questions:
        lines = docs[q.gold.module].splitlines()
        assert q.gold.text == "\n".join(lines[q.gold.start - 1:q.gold.end])  # the passage is the file's own text
        assert q.answer in "\n".join(lines[q.first - 1:q.last]), q  # and the answer is on the defining lines
        assert q.name in "\n".join(lines[q.first - 1:q.last])
        assert q.answer not in docqa.UNINFORMATIVE


def test_building_is_seeded_and_reads_without_importing(questions):
    import subprocess
    import sys

    assert [q.id for q in docqa.build(seed=0)] == [q.id for q in questions]
    assert [q.id for q in docqa.build(seed=1)] != [q.id for q in questions]
    code = "import sys; from llmcourse import docqa; docqa.build(); print('transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_check_answer_accepts_the_answer_in_other_words_and_rejects_others():
    assert docqa.check_answer("The default learning rate is 5e-05.", "5e-5")
    assert docqa.check_answer("It defaults to 0.00005", "5e-5")
    assert docqa.check_answer("`steps`", '"steps"')
    assert docqa.check_answer("The default is 'passive'.", '"passive"')
    assert docqa.check_answer("-1", "-1")
    assert not docqa.check_answer("The default is 500 steps", "50")
    assert not docqa.check_answer("It is 1", "-1")
    assert not docqa.check_answer("epoch", '"steps"')
    assert not docqa.check_answer("stepsize", '"steps"')


def test_load_caches_the_same_questions(tmp_path, monkeypatch, questions):
    monkeypatch.setenv("LLMCOURSE_HOME", str(tmp_path))
    first = docqa.load()
    assert [q.id for q in first] == [q.id for q in questions]
    assert len(list((tmp_path / "docqa").glob("questions-*.json"))) == 1
    assert docqa.load() == first


def test_chunks_are_whole_lines_with_their_numbers():
    text = "\n".join(f"line {i}" for i in range(1, 11))  # 10 lines of 6-7 characters
    chunks = retrieval.chunk(text, "doc", size=20)
    assert [(c.start, c.end) for c in chunks] == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]
    assert all(c.text == "\n".join(text.splitlines()[c.start - 1:c.end]) for c in chunks)
    overlapping = retrieval.chunk(text, "doc", size=20, overlap_lines=1)
    assert [(c.start, c.end) for c in overlapping][:3] == [(1, 2), (2, 3), (3, 4)]
    assert [(c.start, c.end) for c in retrieval.chunk("x" * 50 + "\nshort", "doc", size=10)] == [(1, 1), (2, 2)]
    assert retrieval.covers(chunks[1], "doc", 3, 4) and not retrieval.covers(chunks[1], "doc", 4, 5)
    assert not retrieval.covers(chunks[1], "other", 3, 3)
    with pytest.raises(ConfigError):
        retrieval.chunk(text, "doc", size=0)


DOCS = {"a": "def train(learning_rate=5e-5, warmup_steps=0):\n    pass",
        "b": "The cat sat on the mat.\nCats like warm places.",
        "c": "Quantization stores weights in fewer bits.\nNF4 uses sixteen levels."}


def test_bm25_and_dense_find_the_obvious_document():
    chunks = [c for name, text in DOCS.items() for c in retrieval.chunk(text, name, size=200)]
    bm25 = retrieval.Bm25(chunks)
    assert chunks[bm25.search("default warmup_steps of train", k=3)[0][0]].source == "a"
    dense = retrieval.Dense(chunks, progress=False)
    assert chunks[dense.search("Where do kittens like to sleep?", k=3)[0][0]].source == "b"
    assert chunks[dense.search("storing model weights with four bits", k=3)[0][0]].source == "c"
    assert np.allclose(np.linalg.norm(dense.vectors, axis=1), 1.0, atol=1e-5)
    scores = [s for _, s in dense.search("cat", k=3)]
    assert scores == sorted(scores, reverse=True)


def test_blend_and_metrics_on_hand_made_rankings():
    a = [(0, 10.0), (1, 5.0), (2, 0.0)]
    b = [(2, 0.9), (3, 0.5), (0, 0.1)]
    # a scaled: 0 -> 1, 1 -> 0.5, 2 -> 0; b scaled: 2 -> 1, 3 -> 0.5, 0 -> 0
    assert retrieval.blend(a, b, weight=0.5) == [(0, 0.5), (2, 0.5), (1, 0.25), (3, 0.25)]
    assert retrieval.blend(a, b, weight=1.0)[0] == (0, 1.0)
    assert retrieval.blend(a, b, weight=0.0)[0] == (2, 1.0)
    with pytest.raises(ConfigError):
        retrieval.blend(a, b, weight=1.5)
    assert retrieval.recall_at_k([False, False, True], 2) == 0.0
    assert retrieval.recall_at_k([False, False, True], 3) == 1.0
    assert retrieval.reciprocal_rank([False, False, True]) == pytest.approx(1 / 3)
    assert retrieval.reciprocal_rank([False, False]) == 0.0
