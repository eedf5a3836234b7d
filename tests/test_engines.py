"""Week 3.5's engines: the same greedy tokens however they are asked for, honest measurements from a fresh process,
and a chat function whose streamed text is exactly the decoded tokens (characters split across tokens included)."""

import pytest

from llmcourse import engines
from llmcourse.errors import ConfigError, CourseError

needs_llama_cpp = pytest.mark.skipif(not engines.llama_cpp_available(), reason="llama-cpp-python is not installed")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from llmcourse.assets import resolve

    return AutoTokenizer.from_pretrained(resolve("smollm2"))


@pytest.fixture(scope="module")
def prompt(tokenizer):
    return tokenizer.apply_chat_template([{"role": "user", "content": "Why is the sky blue?"}],
                                         add_generation_prompt=True, tokenize=True, return_dict=False)


def test_agreement_counts_the_shared_beginning_over_all_prompts():
    assert engines.agreement([[1, 2, 3, 4]], [[1, 2, 3, 4]]) == 1.0
    assert engines.agreement([[1, 2, 9, 4]], [[1, 2, 3, 4]]) == 0.5  # the 4 after the difference does not count
    assert engines.agreement([[1, 2], [7, 7, 7, 7]], [[1, 2], [5, 7, 7, 7]]) == 2 / 6
    assert engines.agreement([[1]], [[1, 2, 3]]) == 1 / 3  # an answer that stopped early
    with pytest.raises(ValueError):
        engines.agreement([[1]], [[1], [2]])


def test_bad_engine_names_and_budgets_are_refused():
    with pytest.raises(ConfigError, match="unknown engine 'onnx': choose one of fp32, bf16"):
        engines.load_engine("onnx")
    with pytest.raises(ConfigError, match="unknown engine"):
        engines.measure_engine("fp16", [[1, 2]])
    with pytest.raises(ConfigError, match="at least 2"):
        engines.measure("fp32", [[1, 2]], new_tokens=1)


def test_compile_engine_refuses_what_its_static_cache_cannot_hold():
    engine = engines.load_engine("compile", threads=1)  # loading compiles nothing: generate() would, on first use
    limit = engines.STATIC_CACHE_TOKENS
    with pytest.raises(ConfigError, match=f"500 prompt \\+ 20 new tokens exceed the compile engine's static cache "
                                          f"of {limit}"):
        engine.greedy([1] * 500, 20)
    with pytest.raises(ConfigError, match="static cache"):
        next(engine.stream([1] * (limit - 4), 5))


class _Replay:
    """An engine that 'generates' given token ids, one at a time."""

    def __init__(self, ids):
        self.ids = ids

    def stream(self, ids, n, temperature=0.0):
        yield from self.ids[:n]


def test_chat_function_streams_exactly_the_decoded_text_even_when_a_character_spans_tokens(tokenizer):
    text = "猫と犬 are friends; naïve café ☕"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split())  # byte-level pieces: some characters take several tokens
    chat = engines.chat_function(_Replay(ids + [tokenizer.eos_token_id, 42]), tokenizer)
    prompt_tokens, pieces = chat([{"role": "user", "content": "hi"}], max_tokens=100, temperature=0.0)
    pieces = list(pieces)
    assert prompt_tokens == len(tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                                              add_generation_prompt=True, tokenize=True,
                                                              return_dict=False))
    assert "".join(pieces) == text
    assert len(pieces) == len(ids)  # one piece per token, the end-of-text token and what follows it not sent
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # a token holding half a character is sent as an empty piece
    _, cut = chat([{"role": "user", "content": "hi"}], max_tokens=3, temperature=0.0)
    assert len(list(cut)) == 3


def test_hf_engine_streams_what_it_generates_greedily(prompt):
    engine = engines.load_engine("fp32")
    greedy = engine.greedy(prompt, 6)
    assert len(greedy) == 6
    assert list(engine.stream(prompt, 6)) == greedy


@needs_llama_cpp
def test_gguf_engine_is_greedy_repeatable_and_its_own_process_measures_it(prompt, tokenizer):
    engine = engines.load_engine("gguf")
    first = engine.greedy(prompt, 8)
    assert engine.greedy(prompt, 8) == first  # no state left over from the previous call
    assert list(engine.stream(prompt, 8)) == first
    assert tokenizer.decode(first).strip()[0].isalpha()
    row = engines.measure_engine("gguf", [prompt, prompt[:10]], new_tokens=6, repeats=1)
    assert row.tokens[0] == first[:6] and len(row.tokens[1]) == 6
    assert row.decode_tok_s > 0 and row.prefill_tok_s > 0 and row.load_s > 0
    assert 0 < row.rss_mib <= row.peak_rss_mib and row.file_rss_mib is not None
    assert row.note.startswith("Q4_1")


@needs_llama_cpp
def test_a_failing_engine_process_reports_its_error():
    with pytest.raises(CourseError, match=r"engine gguf failed \(exit 1\).*exceed the context of 2048"):
        engines.measure_engine("gguf", [[1] * 2100], new_tokens=4, repeats=1)


@needs_llama_cpp
def test_gguf_behind_the_openai_endpoint_streams_its_greedy_answer(prompt, tokenizer):
    openai = pytest.importorskip("openai")
    from llmcourse.serve import serve

    engine = engines.load_engine("gguf")
    expected = tokenizer.decode(engine.greedy(prompt, 12), skip_special_tokens=True)
    with serve(chat=engines.chat_function(engine, tokenizer), name="smol") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "Why is the sky blue?"}]
        stream = client.chat.completions.create(model="smol", messages=messages, max_tokens=12, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == expected
