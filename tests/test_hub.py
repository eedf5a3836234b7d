"""Where models come from online: HF_ENDPOINT mirrors (a loopback fake mirror here), ModelScope ids, the fix printed
when the hub does not answer, and offline behaviour unchanged."""

import http.server
import json
import socket
import sys
import threading
import types

import pytest

import llmcourse
from llmcourse import assets, hub
from llmcourse.errors import ConfigError

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CONFIG = json.dumps({"model_type": "llama", "served_by": "fake mirror"}).encode()


class _FakeMirror(http.server.BaseHTTPRequestHandler):
    """Answers /{repo}/resolve/{revision}/config.json as the hub does; records every path asked."""

    seen: list = []

    def _head(self):
        type(self).seen.append(self.path)
        if not self.path.endswith("/config.json"):
            self.send_response(404)
            self.end_headers()
            return False
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(CONFIG)))
        self.send_header("ETag", '"0123456789abcdef"')
        self.send_header("X-Repo-Commit", "a" * 40)
        self.end_headers()
        return True

    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        self._head()

    def do_GET(self):  # noqa: N802
        if self._head():
            self.wfile.write(CONFIG)

    def log_message(self, *args):
        pass


@pytest.fixture
def online(monkeypatch):
    """No HF_HUB_OFFLINE, and a fresh probe for every address."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_probes", {})
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", constants.ENDPOINT)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", constants.HUGGINGFACE_CO_URL_TEMPLATE)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return monkeypatch


@pytest.fixture
def mirror():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeMirror)
    _FakeMirror.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: nothing listens there


def test_mirror_gets_the_downloads(online, mirror, tmp_path):
    online.setenv("HF_ENDPOINT", mirror)
    assert hub.model_source() == hub.ModelSource("mirror", mirror, "HF_ENDPOINT is set")
    assert assets.resolve("smollm2") == SMOL  # online: the hub id, as transformers expects
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(SMOL, "config.json", cache_dir=tmp_path)
    assert json.loads(open(path).read())["served_by"] == "fake mirror"
    assert any(p.startswith(f"/{SMOL}/resolve/") for p in _FakeMirror.seen)


def test_unreachable_mirror_falls_back_to_packaged_and_says_so(online, capsys):
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    source = hub.model_source(timeout=1)
    assert source.kind == "packaged" and "did not answer" in source.reason and "HF_ENDPOINT" in source.reason
    assert assets.resolve("smollm2") != SMOL and "SmolLM2" in assets.resolve("smollm2")  # the packaged folder


def test_setup_prints_the_one_line_fix_when_the_hub_times_out(online, capsys):
    online.setattr(hub, "_probes", {hub.DEFAULT_ENDPOINT: True})  # as if huggingface.co timed out
    online.delenv("HF_ENDPOINT", raising=False)
    llmcourse.setup(quiet=True)
    out = capsys.readouterr().out
    assert "did not answer" in out and "export HF_ENDPOINT=" in out and "modelscope:" in out


def test_setup_is_silent_offline_by_choice(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_probes", {})
    llmcourse.setup(quiet=True)
    assert "did not answer" not in capsys.readouterr().out
    assert hub._probes == {}  # no network probe at all


def test_offline_behaviour_unchanged_with_a_mirror_set(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hub.model_source().kind == "packaged"
    assert assets.resolve("smollm2") != SMOL


def test_bad_endpoint_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "hf-mirror")
    with pytest.raises(ConfigError, match="full URL"):
        hub.endpoint()


def test_modelscope_ids(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("modelscope")
    fake.snapshot_download = lambda model_id: calls.append(model_id) or str(tmp_path / model_id)
    monkeypatch.setitem(sys.modules, "modelscope", fake)
    assert assets.resolve("modelscope:Qwen/Qwen2.5-0.5B-Instruct") == str(tmp_path / "Qwen/Qwen2.5-0.5B-Instruct")
    assert calls == ["Qwen/Qwen2.5-0.5B-Instruct"]
    monkeypatch.setitem(sys.modules, "modelscope", None)  # not installed
    with pytest.raises(ConfigError, match=r"pip install 'llmcourse\[modelscope\]'"):
        assets.resolve("modelscope:Qwen/Qwen2.5-0.5B-Instruct")
