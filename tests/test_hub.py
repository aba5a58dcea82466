"""Hub lookups: offline from the cache, fast when the network or the proxy is dead (issue 13)."""

from __future__ import annotations

import socket
import time

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("torch")

from efficientformer.checkpoints import hub
from efficientformer.checkpoints.loading import load_checkpoint
from efficientformer.errors import CheckpointError

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                   "NO_PROXY", "no_proxy", "HF_HUB_OFFLINE", "HF_ENDPOINT")


@pytest.fixture
def clean_env(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    hub._unreachable_hub.cache_clear()  # checked once per process: every test starts afresh
    yield monkeypatch
    hub._unreachable_hub.cache_clear()


def _dead_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_dead_proxy_sends_cached_ids_straight_to_the_cache(fixtures_dir, clean_env):
    clean_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_dead_port()}")
    cache = str(fixtures_dir / "hub")
    load_checkpoint("efficientformer-fixtures/hf-tiny", cache_dir=cache)  # warm up imports
    started = time.perf_counter()
    # timm-small's cache has no preprocessor_config.json: huggingface_hub retried that file through the dead
    # proxy with back-off for about 25 s before falling back to the cache
    ckpt = load_checkpoint("efficientformer-fixtures/timm-small", cache_dir=cache)
    assert time.perf_counter() - started < 2.0
    assert ckpt.format == "timm" and ckpt.config.num_labels == 10
    with pytest.raises(CheckpointError, match=r"could not be downloaded \(the proxy http://127.0.0.1:\d+ cannot be "
                                              r"reached\) and is not in"):
        load_checkpoint("efficientformer-fixtures/absent", cache_dir=cache)


def test_the_proxy_check_follows_the_proxy_variables(clean_env):
    with socket.socket() as server:  # a proxy that accepts connections is left to do its work
        server.bind(("127.0.0.1", 0))
        server.listen()
        clean_env.setenv("https_proxy", f"127.0.0.1:{server.getsockname()[1]}")
        assert hub._unreachable_hub() is None
    hub._unreachable_hub.cache_clear()
    dead = f"socks5://127.0.0.1:{_dead_port()}"
    clean_env.delenv("https_proxy")
    clean_env.setenv("ALL_PROXY", dead)
    assert hub._unreachable_hub() == f"the proxy {dead}"
    hub._unreachable_hub.cache_clear()
    clean_env.setenv("NO_PROXY", "huggingface.co")  # bypassed: the check is the name lookup again
    clean_env.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    assert hub._unreachable_hub() == "huggingface.co"
