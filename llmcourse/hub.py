"""Where models come from when the course is online: the Hugging Face hub, a mirror of it, or ModelScope.

Introduced in week 1 (`week01/00_setup_and_hardware.ipynb`). From mainland China the hub is often unreachable; the
usual fixes are a mirror, chosen with the environment variable HF_ENDPOINT that huggingface_hub itself reads, or
ModelScope (`modelscope:` ids, with the optional `modelscope` package). `llmcourse.resolve` asks this module whether
the source answers, and falls back to the packaged copies when it does not; `llmcourse doctor` prints `model_source()`.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["DEFAULT_ENDPOINT", "MODELSCOPE_PREFIX", "ModelSource", "endpoint", "is_offline", "model_source",
           "modelscope_snapshot", "point_client", "unreachable_fix"]

DEFAULT_ENDPOINT = "https://huggingface.co"
MIRROR_EXAMPLE = "https://hf-mirror.com"  # a public mirror often used from mainland China
MODELSCOPE_PREFIX = "modelscope:"
_TRUE = ("1", "true", "yes", "on")
_probes: dict[str, bool] = {}


def endpoint() -> str:
    """The hub address the course and huggingface_hub use: $HF_ENDPOINT when set, else huggingface.co."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    if value and not urlsplit(value).hostname:
        raise ConfigError(f"HF_ENDPOINT={value!r} is not an address. Fix: set it to a full URL, e.g. "
                          f"HF_ENDPOINT={MIRROR_EXAMPLE}, or unset it to use {DEFAULT_ENDPOINT}.")
    return value or DEFAULT_ENDPOINT


def forced_offline() -> bool:
    """True when HF_HUB_OFFLINE asks for offline work."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def is_offline(timeout: float = 3.0) -> bool:
    """True when HF_HUB_OFFLINE is set, or the hub at `endpoint()` cannot be reached within `timeout` seconds
    (probed once per address)."""
    if forced_offline():
        return True
    url = endpoint()
    if url not in _probes:
        parts = urlsplit(url)
        port = parts.port or (80 if parts.scheme == "http" else 443)
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout):
                _probes[url] = False
        except OSError:
            _probes[url] = True
    return _probes[url]


def point_client() -> str:
    """Make huggingface_hub download from `endpoint()` even if it was imported before HF_ENDPOINT was set (it reads
    the variable once, at import). Returns the endpoint."""
    url = endpoint()
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and getattr(constants, "ENDPOINT", url) != url:
        constants.ENDPOINT = url
        constants.HUGGINGFACE_CO_URL_TEMPLATE = url + "/{repo_id}/resolve/{revision}/{filename}"
    return url


def modelscope_snapshot(model_id: str) -> str:
    """Download (or find in ModelScope's cache) `model_id` from ModelScope; return its local folder."""
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise ConfigError(f"{MODELSCOPE_PREFIX}{model_id} needs the modelscope package. Fix: pip install "
                          "'llmcourse[modelscope]' (or pip install modelscope).") from None
    return str(snapshot_download(model_id))


@dataclass(frozen=True)
class ModelSource:
    """Where `resolve` will take models from, and why."""

    kind: str  # "hub", "mirror", "packaged"
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} ({self.where}): {self.reason}"


def model_source(timeout: float = 3.0) -> ModelSource:
    """Which source `resolve` uses for hub ids now: the hub, the mirror HF_ENDPOINT names, or the packaged copies."""
    url = endpoint()
    kind = "hub" if url == DEFAULT_ENDPOINT else "mirror"
    if forced_offline():
        return ModelSource("packaged", "installed packages and the Hugging Face cache", "HF_HUB_OFFLINE=1 is set")
    if is_offline(timeout):
        return ModelSource("packaged", "installed packages and the Hugging Face cache",
                           f"{url} did not answer within {timeout:g} s. Fix: {unreachable_fix()}")
    why = "HF_ENDPOINT is set" if kind == "mirror" else "it answered (set HF_ENDPOINT to use a mirror)"
    return ModelSource(kind, url, why)


def unreachable_fix() -> str:
    """The one-line fix a learner needs when the hub times out (the text after "Fix:")."""
    if endpoint() != DEFAULT_ENDPOINT:
        return (f"check the mirror address in HF_ENDPOINT ({endpoint()}), or unset it; the packaged models "
                "still work offline.")
    return (f"if the hub is blocked where you are (as often in mainland China), use a mirror: "
            f"`export HF_ENDPOINT={MIRROR_EXAMPLE}` in the shell or `os.environ['HF_ENDPOINT'] = "
            f"'{MIRROR_EXAMPLE}'` in the notebook, or use ModelScope ids "
            f"(`{MODELSCOPE_PREFIX}owner/name`, pip install modelscope); the packaged models work offline meanwhile.")
