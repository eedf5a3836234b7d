"""Tiny model configs shared by the tests: one home for the shapes, keyword arguments override any field.

    cfg = tiny_llama_config()                                   # 2 layers, hidden 64: builds in milliseconds
    cfg = tiny_llama_config(vocab_size=1000, num_hidden_layers=4)  # a test whose expected numbers need these

Tests assert exact numbers worked out from these shapes (parameter counts, KV-cache bytes): change a default here
and they fail, saying which. Importable from tests/ (the root conftest.py puts
tests/ on sys.path, as for exercise_harness); a conftest.py cannot be imported reliably, since pytest loads the root
one and this folder's one under the same module name.
"""

from __future__ import annotations

from typing import Any

# vocab 256, hidden 64, MLP 128, 2 layers, 4 query heads of 16 and 2 key/value heads (grouped-query attention)
LLAMA = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)
# vocab 256, hidden 32, MLP 64, 2 layers, 2 heads; num_labels stays at transformers' default (2)
BERT = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def tiny_llama_config(**overrides: Any):
    """A tiny `LlamaConfig` (LLAMA, then `overrides`), marked as a LlamaForCausalLM for the memory estimator."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(**{**LLAMA, **overrides})
    cfg.architectures = ["LlamaForCausalLM"]
    return cfg


def tiny_bert_config(**overrides: Any):
    """A tiny `BertConfig` (BERT, then `overrides`)."""
    from transformers import BertConfig

    return BertConfig(**{**BERT, **overrides})
