"""The test split is scored once, at the end: no code cell before a notebook's `final-test` cell may touch it.

A notebook that reports a held-out score tags the cell that first uses its test split `final-test`; every choice
(learning rate, epochs, a baseline's strength) is made on validation in the cells above it. The scan is static: it
looks for the string "test" used as a key or attribute and for names such as `test` or `test_tok`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from llmcourse.teaching.notebooks import cell_source, cell_tags, read_notebook

ROOT = Path(__file__).resolve().parents[1]
GUARDED = ["week03/02_finetune_classifier.ipynb", "week04/01_lora_and_qlora.ipynb"]


def test_split_uses(source: str) -> list[str]:
    """Where `source` touches a split called test: 'tweets["test"]', 'ds.test', 'test_tok', 'test = ...'."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Constant) and node.value == "test":
            found.append(f"the string 'test' (line {node.lineno})")
        elif isinstance(node, ast.Name) and (node.id == "test" or node.id.startswith("test_")):
            found.append(f"the name {node.id} (line {node.lineno})")
        elif isinstance(node, ast.Attribute) and node.attr == "test":
            found.append(f"the attribute .test (line {node.lineno})")
    return found


test_split_uses.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("notebook", GUARDED)
def test_no_cell_before_the_final_test_cell_touches_the_test_split(notebook):
    cells = read_notebook(ROOT / notebook).cells
    finals = [i for i, c in enumerate(cells) if "final-test" in cell_tags(c)]
    assert len(finals) == 1, f"{notebook}: tag exactly one cell 'final-test' (found {len(finals)})"
    early = {i: test_split_uses(cell_source(c)) for i, c in enumerate(cells[:finals[0]]) if c["cell_type"] == "code"}
    assert not {i: uses for i, uses in early.items() if uses}, f"{notebook}: the test split is used before cell " \
                                                                f"{finals[0]}"
    assert test_split_uses(cell_source(cells[finals[0]])), "the final-test cell does not use the test split"


@pytest.mark.parametrize("peek", ['acc = trainer.evaluate(tweets["test"])', "x = ds.test[0]",
                                  "test_tok = test.map(tokenize)", "scores = model(test_labels)",
                                  "split = 'test'\nds[split]"])
def test_the_scan_catches_a_peek(peek):
    assert test_split_uses(peek)


@pytest.mark.parametrize("clean", ['val = tweets["validation"]', "latest = contest + 1", "%pip install test",
                                   'print("a test of the course")', "def testing(x): return x"])
def test_the_scan_leaves_other_code_alone(clean):
    assert not test_split_uses(clean)
