"""The from-scratch GPT (llmcourse.gpt) against the reference: transformers' GPT-2 given the same weights."""

import pytest
import torch

from llmcourse.gpt import GPT, CharTokenizer, GPTConfig, from_hf_gpt2, get_batch, load_hf_gpt2_weights

transformers = pytest.importorskip("transformers")


def tiny_hf_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=101, n_positions=32, n_embd=48, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random non-zero biases and LayerNorm affines, so that a wrong copy cannot hide
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_same_logits_as_transformers_gpt2():
    hf = tiny_hf_gpt2()
    ours = from_hf_gpt2(hf).eval()
    idx = torch.randint(0, 101, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        logits, loss = ours(idx)
    assert loss is None
    assert logits.shape == (3, 32, 101)
    assert torch.allclose(logits, expected, atol=1e-5, rtol=0), (logits - expected).abs().max()


def test_same_loss_as_transformers_gpt2():
    hf = tiny_hf_gpt2(seed=3)
    ours = from_hf_gpt2(hf).eval()
    idx = torch.randint(0, 101, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf(idx, labels=idx).loss  # transformers shifts the labels inside
        _, loss = ours(idx[:, :-1], targets=idx[:, 1:])
    assert abs(loss.item() - expected.item()) < 1e-5


def test_load_refuses_wrong_sizes():
    hf = tiny_hf_gpt2()
    wrong = GPT(GPTConfig(vocab_size=101, block_size=32, n_layer=2, n_head=4, n_embd=64))
    with pytest.raises(ValueError, match="shape"):
        load_hf_gpt2_weights(wrong, hf)


def test_num_params_matches_gpt2_and_formula():
    hf = tiny_hf_gpt2()
    ours = from_hf_gpt2(hf)
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())  # both count the tied head once
    V, T, C, L = 101, 32, 48, 2
    per_block = 12 * C * C + 13 * C  # attention 4C^2+4C, MLP 8C^2+5C, two LayerNorms 4C
    assert ours.num_params() == V * C + T * C + L * per_block + 2 * C
    assert ours.num_params(non_embedding=True) == L * per_block + 2 * C


def test_training_reduces_loss_and_generate_shapes():
    torch.manual_seed(0)
    text = "in the beginning god created the heaven and the earth. " * 20
    tok = CharTokenizer(text)
    data = torch.tensor(tok.encode(text))
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        x, y = get_batch(data, 16, 8, generator=g)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.5  # about ln(vocab) at the start
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    out = model.generate(torch.zeros(2, 1, dtype=torch.long), max_new_tokens=20, top_k=5)
    assert out.shape == (2, 21)
    greedy = model.generate(torch.zeros(1, 1, dtype=torch.long), max_new_tokens=10, temperature=0)
    assert greedy.tolist() == model.generate(torch.zeros(1, 1, dtype=torch.long), 10, temperature=0).tolist()
    assert tok.decode(tok.encode("the earth")) == "the earth"


def test_bias_false_and_errors():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16, bias=False))
    assert all(not n.endswith("bias") for n, _ in model.named_parameters())
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=3, n_embd=16))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        CharTokenizer("abc").encode("abd")
