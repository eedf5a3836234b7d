import json
import os
import subprocess
import sys

import pytest

from llmcourse import device
from llmcourse.device import bf16_from_capability, detect, detect_platform, simulated_card


def _expected_kind() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def test_detect_on_this_machine():
    card = detect()
    assert card.kind == _expected_kind()
    assert card.total_memory > 0 and 0 < card.free_memory <= card.total_memory
    assert card.bnb_4bit, card.bnb_4bit_error  # the probe passes here (perhaps read from the cache)
    assert device._round_trip_4bit(card.kind) == (True, None)  # and so does the real quantize/dequantize round trip
    assert card.versions["torch"] and card.ok
    assert "[OK] torch" in str(card) and "<table>" in card._repr_html_()


def test_bf16_is_judged_by_capability_not_emulation():
    assert bf16_from_capability((7, 5)) is False  # T4: torch says bf16 is "supported" (emulated), we say no
    assert bf16_from_capability((8, 0)) is True  # A100
    assert bf16_from_capability((9, 0)) is True  # H100
    assert bf16_from_capability(None) is False
    t4 = simulated_card("t4")
    assert (t4.bf16, t4.fp16, t4.kind) == (False, True, "cuda")


def test_platform_markers(tmp_path):
    assert detect_platform({}, root=tmp_path) == "local"
    assert detect_platform({"COLAB_RELEASE_TAG": "release-colab_20261101"}, root=tmp_path) == "colab"
    assert detect_platform({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, root=tmp_path) == "kaggle"
    (tmp_path / "kaggle" / "working").mkdir(parents=True)
    assert detect_platform({}, root=tmp_path) == "kaggle"


def test_missing_package_is_reported_as_fail(monkeypatch):
    card = detect(probe_bnb=False)
    card.versions["peft"] = None
    card.versions["transformers"] = "4.46.0"
    rows = {p: ok for p, _, _, ok in card.requirement_rows()}
    assert rows["peft"] is False and rows["transformers"] is False and rows["torch"] is True
    assert not card.ok and "[FAIL] transformers" in str(card)


@pytest.mark.slow
def test_doctor_json_cli():
    out = subprocess.run([sys.executable, "-m", "llmcourse.cli", "doctor", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["hardware"]["kind"] == _expected_kind()
    assert all(r["ok"] for r in report["hardware"]["requirements"])
    assert {a["name"] for a in report["assets"]} >= {"HuggingFaceTB/SmolLM2-135M-Instruct", "kjv"}


def test_requirements_parse_versions():
    assert device._version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert device._version_tuple("1.0rc1") == (1, 0)


@pytest.mark.gpu
def test_detect_reads_the_cuda_card():
    import torch

    card = detect()
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    capability = (props.major, props.minor)
    assert (card.kind, card.name, card.compute_capability) == ("cuda", props.name, capability)
    assert card.total_memory == torch.cuda.mem_get_info(index)[1] and 0 < card.free_memory <= card.total_memory
    assert card.bf16 is (capability >= (8, 0)) and card.fp16 is (capability >= (6, 0))  # bf16 from Ampere on
    assert card.bnb_4bit, card.bnb_4bit_error  # the real 4-bit probe, on the GPU


PROBE = """
import json, sys
from llmcourse.device import detect
card = detect()
print(json.dumps({"ok": card.bnb_4bit, "imported": "bitsandbytes" in sys.modules}))
"""


@pytest.mark.slow
def test_passed_4bit_probe_is_cached_and_a_failed_one_is_not(tmp_path):
    """The first kernel probes (importing bitsandbytes, ~5 s); the next one reads the stored answer and never imports
    it. A stored failure is not trusted: the probe runs again."""
    env = {**os.environ, "LLMCOURSE_HOME": str(tmp_path)}

    def run():
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert run() == {"ok": True, "imported": True}
    stored = list((tmp_path / "probes").glob("bnb4-*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["ok"] is True
    assert run() == {"ok": True, "imported": False}
    stored[0].write_text(json.dumps({"ok": False}))
    assert run() == {"ok": True, "imported": True}
    assert json.loads(stored[0].read_text())["ok"] is True


def test_probe_reads_the_store_unless_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(device, "_round_trip_4bit", lambda dev: calls.append(dev) or (True, None))
    assert device._probe_bnb_4bit("cpu", "x86_64") == (True, None)
    assert device._probe_bnb_4bit("cpu", "x86_64") == (True, None)
    assert calls == ["cpu"]
    assert device._probe_bnb_4bit("cpu", "x86_64", fresh=True) == (True, None)
    assert device._probe_bnb_4bit("cuda", "Tesla T4") == (True, None)  # another device: its own probe
    assert calls == ["cpu", "cpu", "cuda"]
    monkeypatch.setattr(device, "_round_trip_4bit", lambda dev: calls.append(dev) or (False, "broken"))
    assert device._probe_bnb_4bit("mps", "") == (False, "broken")
    assert device._probe_bnb_4bit("mps", "") == (False, "broken")  # a failure is probed again each time
    assert calls == ["cpu", "cpu", "cuda", "mps", "mps"]
