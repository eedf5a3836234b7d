"""Serve a text-generation function behind a small JSON HTTP endpoint on this machine (loopback), and query it.

Introduced in week 8 (`week08/02_capstone.ipynb`), where the fine-tuned model answers over HTTP. Uses only the
standard library (`http.server` in a background thread), so it runs offline and in Colab. Endpoints:

    GET  /           -> a demo page: a form that posts to /generate with fetch() and shows the answer
    GET  /health     -> {"status": "ok", "model": name}
    POST /generate   {"prompt": "...", "max_new_tokens": 8}  -> {"model": name, "completion": "...", "seconds": 0.12}

Requests are answered one at a time (a model's forward pass is not thread-safe, and one CPU gains nothing from
concurrency). This is a teaching server: no authentication, so it refuses to listen on anything but loopback.
"""

from __future__ import annotations

import html
import json
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from .errors import ConfigError, CourseError

__all__ = ["Server", "ask", "demo_page", "serve"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")

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

    def __init__(self, httpd: HTTPServer, thread: threading.Thread, name: str):
        self._httpd, self._thread, self.name = httpd, thread, name
        self.host, self.port = httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.requests = 0

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


def _handler(generate: Callable[..., str], name: str, server: list, page: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict[str, Any] | str) -> None:
            is_page = isinstance(payload, str)
            body = payload.encode() if is_page else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8" if is_page else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path in ("/", "/index.html"):
                self._send(200, page)
            elif self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok", "model": name})
            else:
                self._send(404, {"error": f"no route {self.path} (GET / is the demo page): "
                                          "use GET /health or POST /generate"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/generate":
                self._send(404, {"error": f"no route {self.path}: use POST /generate"})
                return
            try:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                prompt = request["prompt"]
                if not isinstance(prompt, str):
                    raise TypeError("prompt must be a string")
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, {"error": f"send JSON like {{\"prompt\": \"...\"}} ({type(exc).__name__}: {exc})"})
                return
            options = {k: v for k, v in request.items() if k != "prompt"}
            start = time.perf_counter()
            try:
                completion = generate(prompt, **options)
            except Exception as exc:  # noqa: BLE001 - report the model's failure to the client, keep serving
                self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
                return
            server[0].requests += 1
            self._send(200, {"model": name, "completion": completion,
                             "seconds": round(time.perf_counter() - start, 4)})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep notebook output quiet
            pass

    return Handler


def serve(generate: Callable[..., str], host: str = "127.0.0.1", port: int = 0, name: str = "model",
          page: str | None = None) -> Server:
    """Start serving `generate(prompt, **options) -> str` at http://host:port in a background thread.

    port=0 lets the operating system pick a free port (read it from `server.port` / `server.url`). GET / shows
    `page` (HTML), by default `demo_page(name)`: a form that sends its text to POST /generate.
    """
    if host not in LOOPBACK:
        raise ConfigError(f"host {host!r} is not loopback: this teaching server has no authentication, so it only "
                          "listens on 127.0.0.1. Put a real server (and a login) in front of a model you expose.")
    holder: list = []
    httpd = HTTPServer((host, port), _handler(generate, name, holder, demo_page(name) if page is None else page))
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
