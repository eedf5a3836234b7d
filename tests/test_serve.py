"""The loopback endpoint of week 8's capstone answers requests, reports errors and frees its port."""

import json
import urllib.error
import urllib.request

import pytest
from tiny_configs import tiny_llama_config

from llmcourse.errors import ConfigError, CourseError
from llmcourse.serve import ask, serve


def test_endpoint_answers_a_generate_request():
    calls = []

    def generate(prompt, max_new_tokens=4):
        calls.append((prompt, max_new_tokens))
        return prompt.upper()[:max_new_tokens]

    with serve(generate, name="upper") as server:
        assert server.host == "127.0.0.1" and server.port > 0
        answer = ask(server.url, "hello world", max_new_tokens=5)
        assert answer["completion"] == "HELLO" and answer["model"] == "upper" and answer["seconds"] >= 0
        with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
            assert json.loads(response.read()) == {"status": "ok", "model": "upper"}
        assert server.requests == 1 and calls == [("hello world", 5)]
    assert not server.running


def test_endpoint_serves_a_real_model_forward_pass():
    torch = pytest.importorskip("torch")
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=64, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_key_value_heads=4)).eval()

    def generate(prompt, max_new_tokens=3):
        ids = torch.tensor([[ord(c) % 64 for c in prompt]])
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
        return " ".join(str(t) for t in out[0, ids.shape[1]:].tolist())

    expected = generate("abc")
    with serve(generate) as server:
        assert ask(server.url, "abc")["completion"] == expected
        assert len(expected.split()) == 3


def test_bad_requests_are_reported_and_the_server_keeps_serving():
    def generate(prompt):
        if prompt == "boom":
            raise RuntimeError("model failed")
        return "ok"

    with serve(generate) as server:
        with pytest.raises(urllib.error.HTTPError) as err:  # a client that does not send JSON
            urllib.request.urlopen(urllib.request.Request(server.url + "/generate", data=b"not json"), timeout=10)
        assert err.value.code == 400
        assert json.loads(err.value.read())["error"].startswith('send JSON like {"prompt": "..."} (JSONDecodeError')
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "/nowhere", timeout=10)
        assert err.value.code == 404 and "use GET /health or POST /generate" in json.loads(err.value.read())["error"]
        with pytest.raises(CourseError, match=r"answered 400: .*TypeError: prompt must be a string"):
            ask(server.url, 42)
        with pytest.raises(CourseError, match="500.*model failed"):
            ask(server.url, "boom")
        with pytest.raises(CourseError, match="unexpected keyword"):
            ask(server.url, "hi", temperature=0.5)
        assert ask(server.url, "fine")["completion"] == "ok"
        assert server.requests == 1  # only the answered request counts


def test_stopped_server_frees_its_port_and_refuses_public_hosts():
    server = serve(lambda prompt: "x")
    url = server.url
    server.stop()
    with pytest.raises(CourseError, match="no answer"):
        ask(url, "hi", timeout=2)
    with pytest.raises(ConfigError, match="loopback"):
        serve(lambda prompt: "x", host="0.0.0.0")


def test_root_serves_the_demo_page_or_a_given_one():
    from llmcourse.serve import demo_page

    with serve(lambda prompt: "x", name="tweet <sentiment>") as server:
        with urllib.request.urlopen(server.url + "/", timeout=10) as response:
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            page = response.read().decode()
        assert page == demo_page("tweet <sentiment>")
        assert "<title>tweet &lt;sentiment&gt;</title>" in page and 'fetch("/generate"' in page
    with serve(lambda prompt: "x", page="<p>mine</p>") as server:
        with urllib.request.urlopen(server.url + "/index.html", timeout=10) as response:
            assert response.read() == b"<p>mine</p>"
