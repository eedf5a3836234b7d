"""The OpenAI-compatible chat endpoint (week 3.5): the official client talks to it, streamed or not; bad requests get a
400 with a JSON error and the server keeps serving; concurrent requests queue; the port is freed at the end."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from llmcourse.serve import MAX_TOKENS_LIMIT, parse_chat_request, serve

openai = pytest.importorskip("openai")

WORDS = ["The", " sky", " is", " blue", " because", " air", " scatters", " blue", " light", "."]


def echo_chat(delay: float = 0.0, log: list | None = None):
    """A deterministic stand-in for a model: the reply is WORDS, cut at max_tokens; one piece per token."""

    def chat(messages, max_tokens, temperature):
        prompt_tokens = sum(len(m["content"].split()) for m in messages)

        def pieces():
            try:
                for word in WORDS[:max_tokens]:
                    time.sleep(delay)
                    yield word
            finally:
                if log is not None:
                    log.append("closed")

        return prompt_tokens, pieces()

    return chat


def client_for(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=30)


def test_official_client_gets_whole_and_streamed_answers():
    with serve(chat=echo_chat(), name="echo") as server:
        client = client_for(server)
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]
        whole = client.chat.completions.create(model="echo", messages=messages, max_tokens=4)
        assert whole.choices[0].message.content == "The sky is blue"
        assert whole.choices[0].finish_reason == "length"
        assert (whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens) == (7, 4, 11)
        full = client.chat.completions.create(model="echo", messages=messages, max_tokens=50)
        assert full.choices[0].finish_reason == "stop" and full.usage.completion_tokens == len(WORDS)

        stream = client.chat.completions.create(model="echo", messages=messages, max_tokens=50, stream=True)
        chunks = list(stream)
        deltas = [c.choices[0].delta.content for c in chunks]
        assert chunks[0].choices[0].delta.role == "assistant" and deltas[0] == ""
        assert deltas[1:-1] == WORDS  # one chunk per token, in order
        assert chunks[-1].choices[0].finish_reason == "stop" and deltas[-1] is None
        assert [m.id for m in client.models.list().data] == ["echo"]
        assert server.requests == 3


@pytest.mark.parametrize("body, message", [
    (b"not json", "the body is not JSON"),
    (b"[1, 2]", "must be a JSON object, not list"),
    (b'{"model": "m"}', '"messages" must be a non-empty list'),
    (b'{"messages": [{"role": "robot", "content": "hi"}]}', "messages[0] must be"),
    (b'{"messages": [{"role": "user", "content": 5}]}', "messages[0] must be"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "from 1 to 4096, got 0"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e9}', "from 1 to 4096, got 1000000000.0"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', '"temperature" must be a number'),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', '"stream" must be true or false'),
])
def test_malformed_requests_get_a_400_with_a_json_error_and_the_server_keeps_serving(body, message):
    with serve(chat=echo_chat()) as server:
        request = urllib.request.Request(server.url + "/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 400
        error = json.loads(err.value.read())["error"]
        assert message in error["message"] and error["type"] == "invalid_request_error"
        reply = client_for(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                          max_tokens=2)
        assert reply.choices[0].message.content == "The sky" and server.requests == 1


def test_the_client_raises_a_bad_request_error_with_the_servers_message():
    with serve(chat=echo_chat()) as server:
        with pytest.raises(openai.BadRequestError, match="max_tokens"):
            client_for(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                       max_tokens=MAX_TOKENS_LIMIT + 1)


def test_a_model_failure_is_a_500_before_the_stream_and_an_error_event_inside_it():
    def broken(messages, max_tokens, temperature):
        if messages[-1]["content"] == "fail early":
            raise RuntimeError("out of memory")

        def pieces():
            yield "half"
            raise RuntimeError("kernel died")

        return 1, pieces()

    with serve(chat=broken) as server:
        client = client_for(server)
        with pytest.raises(openai.InternalServerError, match="out of memory"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "fail early"}])
        with pytest.raises(openai.APIError, match="kernel died"):
            list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
        assert server.requests == 0 and server.running


def test_concurrent_streams_queue_one_at_a_time_and_all_finish():
    with serve(chat=echo_chat(delay=0.02)) as server:
        results, waits = {}, {}

        def ask(i):
            body = json.dumps({"messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 5,
                               "stream": True}).encode()
            request = urllib.request.Request(server.url + "/v1/chat/completions", data=body)
            with urllib.request.urlopen(request, timeout=30) as response:
                waits[i] = float(response.headers["X-Queue-Seconds"])
                lines = response.read().decode().split("\n\n")
            results[i] = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                                 for line in lines if line.startswith("data: {"))

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert results == {i: "The sky is blue because" for i in range(4)}
        # each answer takes about 5 x 20 ms; queued requests waited for the ones before them
        assert sorted(waits.values())[-1] >= 0.15, waits
        assert server.requests == 4


def test_a_client_that_leaves_mid_stream_stops_the_generation_and_frees_the_model():
    made, closed = [], threading.Event()

    def slow(messages, max_tokens, temperature):
        def pieces():
            try:
                for i in range(max_tokens):
                    time.sleep(0.02)
                    made.append(i)
                    yield "x"
            finally:
                closed.set()

        return 1, pieces()

    with serve(chat=slow) as server:
        body = json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 500, "stream": True})
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
                         f"{body}".encode())
            received = b""
            while b"data:" not in received:  # the headers may come in a packet of their own
                part = sock.recv(4096)
                assert part, "the server closed the connection before the first event"
                received += part
        assert closed.wait(timeout=8), "the generator was never closed"
        assert len(made) < 100, f"{len(made)} of 500 tokens were made for a client that left after the first"
        assert server.requests == 0  # an unfinished stream is not an answered request
        reply = client_for(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                          max_tokens=1)
        assert reply.choices[0].message.content == "x"


def test_the_port_is_free_after_stop_and_one_endpoint_alone_is_refused_the_other():
    server = serve(chat=echo_chat())
    port = server.port
    with pytest.raises(urllib.error.HTTPError) as err:  # no generate given: /generate is not a route
        urllib.request.urlopen(urllib.request.Request(server.url + "/generate", data=b"{}"), timeout=10)
    assert err.value.code == 404 and "POST /v1/chat/completions" in json.loads(err.value.read())["error"]
    server.stop()
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", port), timeout=5)
    with serve(chat=echo_chat(), port=port) as again:  # and a new server can take the same port at once
        assert again.port == port and client_for(again).models.list().data[0].id == "model"


def test_parse_chat_request_defaults():
    parsed = parse_chat_request({"messages": [{"role": "user", "content": "hi"}]})
    assert parsed == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, "temperature": 0.0,
                      "stream": False}
    assert parse_chat_request({"messages": [{"role": "user", "content": "hi"}],
                               "max_completion_tokens": 7})["max_tokens"] == 7
