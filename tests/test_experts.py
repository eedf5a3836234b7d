"""A mixture of experts on a CPU in 16-bit: the experts multiplied one by one in fp32 (llmcourse.experts), and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from tiny_configs import tiny_llama_config

from llmcourse.experts import cpu_experts_in_float32, experts_matmul, limit_expert_memory

TINY_MIXTRAL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                    num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=256)


def _model(dtype, moe: bool = True):
    from transformers import AutoModelForCausalLM

    from benchmarks.memory import make_config

    torch.manual_seed(0)
    cfg = make_config("mixtral", json.dumps(TINY_MIXTRAL)) if moe else tiny_llama_config()
    return AutoModelForCausalLM.from_config(cfg, dtype=dtype)


@pytest.fixture
def grouped_mm_restored(monkeypatch):
    """limit_expert_memory replaces transformers' grouped matmul for the process: put it back after the test."""
    from transformers.integrations import moe

    monkeypatch.setattr(moe, "_grouped_mm", moe._grouped_mm)
    return moe


def test_experts_matmul_is_the_grouped_matmul_forward_and_backward():
    """Against torch's grouped matmul in fp32: an expert with no rows, rows past the last expert's end (left at 0,
    with no gradient), the transposed weight view transformers passes; results and gradients in bf16."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 16, generator=g).to(torch.bfloat16).requires_grad_()
    w = torch.randn(4, 24, 16, generator=g).to(torch.bfloat16).requires_grad_()  # stored (experts, out, in)
    offs = torch.tensor([10, 10, 30, 38], dtype=torch.int32)
    out = experts_matmul(x, w.transpose(-2, -1), offs)
    grad = torch.randn(40, 24, generator=g).to(torch.bfloat16)
    out.backward(grad)
    xf, wf = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    ref = torch._grouped_mm(xf, wf.transpose(-2, -1), offs=offs)
    ref.backward(grad.float())
    assert out.dtype == x.grad.dtype == w.grad.dtype == torch.bfloat16 and w.grad.shape == w.shape
    # bf16 keeps 8 bits of mantissa: one rounding of values up to about 20
    torch.testing.assert_close(out[:38].float(), ref[:38], atol=0.07, rtol=0.01)
    torch.testing.assert_close(x.grad[:38].float(), xf.grad[:38], atol=0.07, rtol=0.01)
    torch.testing.assert_close(w.grad.float(), wf.grad, atol=0.07, rtol=0.01)
    assert not out[38:].any() and not x.grad[38:].any() and not w.grad[1].any()  # expert 1 had no rows


def test_only_experts_in_16_bit_on_a_cpu_are_routed(grouped_mm_restored):
    moe = grouped_mm_restored
    plain = moe._grouped_mm
    assert not limit_expert_memory(_model(torch.float32)) and not limit_expert_memory(_model(torch.bfloat16, False))
    assert moe._grouped_mm is plain
    model = _model(torch.bfloat16)
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        before = model(ids).logits.float()
        assert limit_expert_memory(model) and limit_expert_memory(model)  # a second call changes nothing
        routed = moe._grouped_mm
        assert routed is not plain and routed.__wrapped__ is plain
        after = model(ids).logits.float()
    torch.testing.assert_close(after, before, atol=0.05, rtol=0.05)  # the same model, rounded once per expert
    cfg = model.config
    assert cpu_experts_in_float32(cfg, "bf16", "cpu") and cpu_experts_in_float32(cfg, torch.float16, "cpu")
    assert not cpu_experts_in_float32(cfg, "bf16", "cuda") and not cpu_experts_in_float32(cfg, "fp32", "cpu")
    assert not cpu_experts_in_float32(cfg, torch.uint8, "cpu")  # a quantized model's storage
    assert not cpu_experts_in_float32(tiny_llama_config(), "bf16", "cpu")


GROWTH = """
import sys, torch
from llmcourse.experts import experts_matmul
torch.set_num_threads(1)
how = sys.argv[1]
torch.backends.mkldnn.enabled = how != "off"
matmul = experts_matmul if how == "course" else lambda x, w, offs: torch._grouped_mm(x, w, offs=offs)
def rss():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS"))
w, x = torch.randn(8, 1376, 512).to(torch.bfloat16), torch.randn(1024, 512).to(torch.bfloat16)
g = torch.Generator().manual_seed(0)
matmul(x, w.transpose(-2, -1), torch.arange(128, 1025, 128, dtype=torch.int32))  # warm
base = rss()
for _ in range(30):  # a new split of the 1,024 tokens among the 8 experts each time, as routing gives
    cuts = torch.sort(torch.randint(0, 1024, (7,), generator=g)).values
    matmul(x, w.transpose(-2, -1), torch.cat([cuts, torch.tensor([1024])]).to(torch.int32))
print((rss() - base) / 2**20)
"""


@pytest.mark.platform("linux")
def test_the_grouped_matmul_grows_in_bf16_on_a_cpu_and_the_courses_does_not():
    """Why llmcourse.experts exists, kept true: with oneDNN's bf16 path, torch's grouped matmul keeps memory for
    every new split of the tokens (no tensor holds it); not with oneDNN off (but slow), and not expert by expert in
    fp32. Should a torch release stop the growth, the first assertion fails, and the module can go."""
    flags = open("/proc/cpuinfo", encoding="utf-8").read()
    if not torch.backends.mkldnn.is_available() or not ("avx512_bf16" in flags or "amx_bf16" in flags):
        pytest.skip("this CPU has no oneDNN bf16 path (AVX512-BF16 or AMX): the growth is measured where it has")

    def growth(how: str) -> float:
        done = subprocess.run([sys.executable, "-c", GROWTH, how], capture_output=True, text=True, check=True,
                              env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
        return float(done.stdout.split()[-1])

    on, off, course = growth("on"), growth("off"), growth("course")
    assert on > 40, f"{on:.1f} MiB after 30 new splits with oneDNN (95 here): the growth is gone"
    assert off < 10, f"{off:.1f} MiB with oneDNN off (1.6 here)"
    assert course < 10, f"{course:.1f} MiB expert by expert in fp32"


@pytest.mark.slow
def test_load_model_runs_the_experts_as_its_plan_assumes(grouped_mm_restored, tmp_path):
    """A mixture of experts loaded in bf16 on a CPU goes expert by expert, and its plan says it planned for that;
    in fp32 neither."""
    from transformers import AutoTokenizer

    from llmcourse.assets import resolve
    from llmcourse.loading import load_model

    moe = grouped_mm_restored
    plain = moe._grouped_mm
    _model(torch.float32).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(resolve("smollm2")).save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path), dtype="fp32", budget="4GiB", device="cpu")
    assert moe._grouped_mm is plain and "one by one" not in model.llmcourse_plan.explanation
    model, _ = load_model(str(tmp_path), dtype="bf16", budget="4GiB", device="cpu")
    assert moe._grouped_mm is not plain and "one by one in fp32" in model.llmcourse_plan.explanation
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 256)
