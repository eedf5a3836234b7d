"""Serve a model on this machine (loopback) behind a small JSON endpoint and an OpenAI-compatible one, and query it.

Introduced in week 3 (`week03/05_local_inference.ipynb`: the chat endpoint, streamed, called with the official `openai`
client) and used in week 8 (`week08/02_capstone.ipynb`, where the fine-tuned model answers over HTTP). Uses only the
standard library (`http.server`, a thread per connection), so it runs offline and in Colab. Endpoints:

    GET  /           -> a demo page: a form that posts to /generate with fetch() and shows the answer
    GET  /health     -> {"status": "ok", "model": name}
    POST /generate   {"prompt": "...", "max_new_tokens": 8}  -> {"model": name, "completion": "...", "seconds": 0.12}
    GET  /v1/models             -> the one model, in the OpenAI list format             (when `chat` is given)
    POST /v1/chat/completions   {"messages": [...], "max_tokens": 32, "stream": true}   (when `chat` is given)
                                -> one JSON answer, or server-sent events ("data: {chunk}" lines, then "data: [DONE]")

Connections are accepted concurrently, but the model answers one request at a time: the others wait in a queue
(a model's forward pass is not thread-safe, and a laptop's few cores gain nothing from two at once). The wait is
reported in the `X-Queue-Seconds` header. This is a teaching server: no authentication, so it refuses to listen on
anything but loopback.
"""

from __future__ import annotations

import html
import itertools
import json
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import ConfigError, CourseError

__all__ = ["Server", "ask", "demo_page", "serve"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_TOKENS_LIMIT = 4096  # the most tokens one chat request may ask for
ROLES = ("system", "user", "assistant")

# chat(messages, max_tokens=..., temperature=...) -> (prompt token count, iterable of text pieces, one per new token)
Chat = Callable[..., tuple[int, Iterable[str]]]

# The demo page: one form; the script posts the text to /generate and writes the completion into #answer.
_PAGE = string.Template("""<!doctype html>
<html lang="$lang">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
textarea { width: 100%; font: inherit; }
#answer { font-size: 1.4rem; font-weight: bold; }
</style>
</head>
<body>
<h1>$title</h1>
<p>$description</p>
<form id="ask">
<textarea id="prompt" name="prompt" rows="4" required placeholder="$placeholder"></textarea>
<p><button id="send" type="submit">Ask</button> <span id="status"></span></p>
</form>
<p>Answer: <output id="answer" for="prompt"></output></p>
<script>
document.getElementById("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = document.getElementById("status");
  const answer = document.getElementById("answer");
  status.textContent = "thinking...";
  answer.textContent = "";
  try {
    const response = await fetch("/generate", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({prompt: document.getElementById("prompt").value}),
    });
    const reply = await response.json();
    if (!response.ok) throw new Error(reply.error);
    answer.textContent = reply.completion;
    status.textContent = reply.seconds.toFixed(2) + " s";
  } catch (err) {
    status.textContent = "error: " + err.message;
  }
});
</script>
</body>
</html>
""")


def demo_page(title: str, description: str = "", placeholder: str = "", lang: str = "en") -> str:
    """The HTML of the demo page `serve` shows at GET /: a form whose text goes to POST /generate (week 8.2)."""
    fields = {"title": title, "description": description, "placeholder": placeholder, "lang": lang}
    return _PAGE.substitute({k: html.escape(v) for k, v in fields.items()})


class Server:
    """A running endpoint: `url`, `port`, `requests` served; `stop()` (or a `with` block) shuts it down."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread, name: str):
        self._httpd, self._thread, self.name = httpd, thread, name
        self.host, self.port = httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.requests = 0  # requests the model answered (bad requests and failures do not count)
        self.model_lock = threading.Lock()  # one request at a time reaches the model; the others queue here

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=10)
        self._httpd.server_close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Server({self.name!r} at {self.url}, {state}, {self.requests} requests served)"


class BadRequest(ValueError):
    """A request the endpoint refuses with 400: what was wrong and what to send instead."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _openai_error(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def parse_chat_request(request: object) -> dict[str, Any]:
    """Check a /v1/chat/completions body; return messages, max_tokens, temperature and stream, or raise BadRequest."""
    if not isinstance(request, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(request).__name__}")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest('"messages" must be a non-empty list like [{"role": "user", "content": "Hi"}]', "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES \
                or not isinstance(message.get("content"), str):
            raise BadRequest(f"messages[{i}] must be {{\"role\": one of {list(ROLES)}, \"content\": a string}}, "
                             f"got {json.dumps(message)[:80]}", f"messages[{i}]")
    max_tokens = request.get("max_completion_tokens", request.get("max_tokens", 64))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise BadRequest(f'"max_tokens" must be an integer from 1 to {MAX_TOKENS_LIMIT}, got {max_tokens!r}',
                         "max_tokens")
    temperature = request.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise BadRequest(f'"temperature" must be a number from 0 (greedy) to 2, got {temperature!r}', "temperature")
    stream = request.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f'"stream" must be true or false, got {stream!r}', "stream")
    return {"messages": messages, "max_tokens": max_tokens, "temperature": float(temperature), "stream": stream}


_ids = itertools.count(1)


def _handler(generate: Callable[..., str] | None, chat: Chat | None, name: str, server: list,
             page: str) -> type[BaseHTTPRequestHandler]:
    names = ["GET /health"] + (["POST /generate"] if generate else []) + \
        (["GET /v1/models", "POST /v1/chat/completions"] if chat else [])
    routes = ", ".join(names[:-1]) + " or " + names[-1]

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict[str, Any] | str, queued: float | None = None) -> None:
            is_page = isinstance(payload, str)
            body = payload.encode() if is_page else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8" if is_page else "application/json")
            self.send_header("Content-Length", str(len(body)))
            if queued is not None:
                self.send_header("X-Queue-Seconds", f"{queued:.4f}")
            self.end_headers()
            self.wfile.write(body)

        def _read_json(self) -> object:
            length = int(self.headers.get("Content-Length", 0))
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.rstrip("/")
            if self.path in ("/", "/index.html"):
                self._send(200, page)
            elif path == "/health":
                self._send(200, {"status": "ok", "model": name})
            elif path == "/v1/models" and chat:
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                                            "owned_by": "llmcourse"}]})
            else:
                self._send(404, {"error": f"no route {self.path} (GET / is the demo page): use {routes}"})

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.rstrip("/")
            if path == "/generate" and generate:
                self._generate()
            elif path == "/v1/chat/completions" and chat:
                self._chat()
            else:
                self._send(404, {"error": f"no route {self.path}: use {routes}"})

        def _generate(self) -> None:
            try:
                request = self._read_json()
                prompt = request["prompt"]
                if not isinstance(prompt, str):
                    raise TypeError("prompt must be a string")
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, {"error": f"send JSON like {{\"prompt\": \"...\"}} ({type(exc).__name__}: {exc})"})
                return
            options = {k: v for k, v in request.items() if k != "prompt"}
            arrived = time.perf_counter()
            with server[0].model_lock:
                start = time.perf_counter()
                try:
                    completion = generate(prompt, **options)
                except Exception as exc:  # noqa: BLE001 - report the model's failure to the client, keep serving
                    self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
                    return
                server[0].requests += 1
            self._send(200, {"model": name, "completion": completion,
                             "seconds": round(time.perf_counter() - start, 4)}, queued=start - arrived)

        def _chat(self) -> None:
            try:
                request = parse_chat_request(self._read_json())
            except json.JSONDecodeError as exc:
                self._send(400, _openai_error(f"the body is not JSON ({exc})"))
                return
            except BadRequest as exc:
                self._send(400, _openai_error(str(exc), param=exc.param))
                return
            arrived = time.perf_counter()
            with server[0].model_lock:
                queued = time.perf_counter() - arrived
                try:
                    prompt_tokens, pieces = chat(request["messages"], max_tokens=request["max_tokens"],
                                                 temperature=request["temperature"])
                    pieces = iter(pieces)
                    if request["stream"]:
                        self._stream(pieces, prompt_tokens, request["max_tokens"], queued)
                    else:
                        self._whole(pieces, prompt_tokens, request["max_tokens"], queued)
                except Exception as exc:  # noqa: BLE001 - before any byte was sent: a 500 the client can read
                    self._send(500, _openai_error(f"{type(exc).__name__}: {exc}", kind="server_error"))

        def _whole(self, pieces, prompt_tokens: int, max_tokens: int, queued: float) -> None:
            text = []
            for piece in pieces:
                text.append(piece)
            finish = "length" if len(text) >= max_tokens else "stop"
            server[0].requests += 1  # counted before the answer leaves, so a client that reads it sees the count
            self._send(200, {
                "id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
                "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text),
                          "total_tokens": prompt_tokens + len(text)},
            }, queued=queued)
            return True

        def _stream(self, pieces, prompt_tokens: int, max_tokens: int, queued: float) -> None:
            """Server-sent events: one chunk per token, then the finish reason, then [DONE]."""
            ident, created = f"chatcmpl-{next(_ids)}", int(time.time())

            def chunk(delta: dict, finish: str | None = None) -> bytes:
                body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                return f"data: {json.dumps(body)}\n\n".encode()

            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("X-Queue-Seconds", f"{queued:.4f}")
            self.end_headers()  # HTTP/1.0 without a length: the body ends when the connection closes
            count = 0
            try:
                self.wfile.write(chunk({"role": "assistant", "content": ""}))
                self.wfile.flush()
                try:
                    for piece in pieces:
                        count += 1
                        self.wfile.write(chunk({"content": piece}))
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    raise
                except Exception as exc:  # noqa: BLE001 - mid-stream the status is sent: report in the stream
                    error = _openai_error(f"{type(exc).__name__}: {exc}", "server_error")
                    self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())
                    return
                server[0].requests += 1  # the whole answer was made and sent: counted before the stream ends
                self.wfile.write(chunk({}, "length" if count >= max_tokens else "stop"))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                close = getattr(pieces, "close", None)
                if close:
                    close()  # stop generating for a client that left

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep notebook output quiet
            pass

    return Handler


def serve(generate: Callable[..., str] | None = None, host: str = "127.0.0.1", port: int = 0, name: str = "model",
          page: str | None = None, chat: Chat | None = None) -> Server:
    """Start serving at http://host:port in a background thread; `stop()` it (or use a `with` block).

    generate: `generate(prompt, **options) -> str`, served at POST /generate.
    chat: `chat(messages, max_tokens=..., temperature=...) -> (prompt_tokens, pieces)`, where `pieces` yields the
        text of each new token as it is made; served at POST /v1/chat/completions (streamed when the request says
        "stream": true), so that the official `openai` client, pointed at `server.url + "/v1"`, can talk to it.
    port=0 lets the operating system pick a free port (read it from `server.port` / `server.url`). GET / shows
    `page` (HTML), by default `demo_page(name)`: a form that sends its text to POST /generate.
    """
    if host not in LOOPBACK:
        raise ConfigError(f"host {host!r} is not loopback: this teaching server has no authentication, so it only "
                          "listens on 127.0.0.1. Put a real server (and a login) in front of a model you expose.")
    if generate is None and chat is None:
        raise ConfigError("serve() needs something to serve: generate=fn(prompt) -> text, chat=fn(messages, ...), "
                          "or both")
    holder: list = []
    page = demo_page(name) if page is None else page
    httpd = ThreadingHTTPServer((host, port), _handler(generate, chat, name, holder, page))
    httpd.daemon_threads = True  # a client that never reads does not keep the kernel alive
    thread = threading.Thread(target=httpd.serve_forever, name=f"serve-{name}", daemon=True)
    server = Server(httpd, thread, name)
    holder.append(server)
    thread.start()
    return server


def ask(url: str, prompt: str, timeout: float = 120.0, **options: Any) -> dict[str, Any]:
    """POST `prompt` (and generation options) to `url`/generate; return the JSON answer as a dict."""
    data = json.dumps({"prompt": prompt, **options}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/generate", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise CourseError(f"the server answered {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise CourseError(f"no answer from {url} ({exc.reason}): is the server running (server.running)?") from None
