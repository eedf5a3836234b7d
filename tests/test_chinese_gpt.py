"""Week 2.1's Chinese variant: CORPUS="people_daily" trains the tiny GPT on People's Daily, offline, within the
notebook's declared runtime (the factor CI allows every notebook), and beats the counting baselines."""

import time

import pytest

from llmcourse.teaching.execute import RUNTIME_FACTOR
from llmcourse.teaching.notebooks import cell_source, read_notebook_json
from llmcourse.teaching.syllabus import notebook_entry, project_root

NOTEBOOK = "week02/01_tiny_gpt_from_scratch.ipynb"


@pytest.mark.slow
def test_the_chinese_tiny_gpt_runs_offline_within_the_declared_runtime(tmp_path):
    papermill = pytest.importorskip("papermill")
    root = project_root()
    out = tmp_path / "zh.ipynb"
    start = time.perf_counter()
    papermill.execute_notebook(str(root / NOTEBOOK), str(out), parameters={"CORPUS": "people_daily"},
                               cwd=str(tmp_path), progress_bar=False)
    minutes = (time.perf_counter() - start) / 60
    declared = notebook_entry(NOTEBOOK).runtime_min
    assert minutes <= declared * RUNTIME_FACTOR, f"{minutes:.1f} min for {declared} declared"
    printed = "".join("".join(o.get("text", "")) for c in read_notebook_json(out)["cells"] if c["cell_type"] == "code"
                      for o in c.get("outputs", []))
    corpus = next(cell_source(c) for c in read_notebook_json(out)["cells"] if "CORPUS = " in cell_source(c)
                  and "injected" in str(c["metadata"].get("tags")))
    assert "people_daily" in corpus
    assert "people_daily characters: train 1,6" in printed  # 1.6-1.7M characters of Chinese text
    assert "final validation loss < bigram baseline: True" in printed
    assert "GPT beats bigram on the share of training words: True" in printed
