import os
import subprocess
import sys
import time

import pytest

from llmcourse import assets
from llmcourse.errors import AssetUnavailable, CourseError

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_offline_flag_is_honoured(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert assets.is_offline() is True


def test_online_returns_the_hub_id(monkeypatch):
    monkeypatch.setattr(assets, "is_offline", lambda timeout=3.0: False)
    assert assets.resolve(SMOL) == SMOL
    assert assets.resolve("smollm2") == SMOL  # aliases map to the usual hub id
    assert assets.resolve("all-MiniLM-L6-v2") == MINILM


def test_local_folder_is_returned_as_is(tmp_path):
    assert assets.resolve(str(tmp_path)) == str(tmp_path)


def test_minilm_offline_is_the_packaged_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = assets.resolve(MINILM)
    assert os.path.exists(os.path.join(path, "config.json"))
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers) == ("bert", 384, 6)


def test_unknown_id_offline_says_what_is_available(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AssetUnavailable) as err:
        assets.resolve("some-org/not-a-packaged-model")
    msg = str(err.value)
    assert "some-org/not-a-packaged-model" in msg and SMOL in msg and MINILM in msg
    assert "Fix:" in msg and "download" in msg
    assert isinstance(err.value, CourseError)


def _load_seconds(env) -> tuple[float, str]:
    code = ("import time, llmcourse\n"
            f"t = time.perf_counter(); p = llmcourse.resolve('{SMOL}')\n"
            "from transformers import AutoModelForCausalLM\n"
            "m = AutoModelForCausalLM.from_pretrained(p)\n"
            "print(time.perf_counter() - t, sum(x.numel() for x in m.parameters()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    seconds, params = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), params


@pytest.mark.slow
def test_smollm2_offline_converts_once_then_loads_from_cache(tmp_path):
    """First resolve converts the packaged GGUF (slow); the second load comes from the cached safetensors."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLMCOURSE_HOME": str(tmp_path)}
    first, params = _load_seconds(env)
    cached = tmp_path / "models" / SMOL.replace("/", "--")
    assert (cached / "model.safetensors").exists() and (cached / "tokenizer.json").exists()
    start = time.perf_counter()
    second, params2 = _load_seconds(env)
    assert params == params2 == "134515008"
    assert second < first / 3, f"cached load {second:.1f} s is not much faster than the conversion {first:.1f} s"
    assert time.perf_counter() - start < first


def test_list_assets_covers_models_and_data():
    rows = {r["name"]: r for r in assets.list_assets()}
    for name in [SMOL, MINILM, "tweets", "chinese_reviews", "people_daily", "kjv", "mnist", "digits", "cl100k_base"]:
        assert rows[name]["installed"], f"{name} is not installed: {rows[name]['install']}"
        assert rows[name]["license"]
    assert rows[SMOL]["size_bytes"] > 80 * 2**20
