"""Finding a checkpoint's files: a local folder, a single file, or a Hugging Face hub id.

Hub ids go through `huggingface_hub` and work offline from its cache (`HF_HUB_OFFLINE=1` or
`local_files_only=True`); when a file is neither cached nor reachable the error says so.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from functools import lru_cache
from typing import Iterable
from urllib.parse import urlparse

from ..constants import CONFIG_NAME
from ..errors import CheckpointError, require

HubKwargs = dict  # revision, cache_dir, local_files_only, token


def resolve_file(name_or_path: str | os.PathLike, filename: str, *, required: bool = True,
                 revision: str | None = None, cache_dir: str | None = None,
                 local_files_only: bool = False, token: str | bool | None = None) -> str | None:
    """Path of `filename` inside a folder or hub repository; None when absent and not `required`."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        if not os.access(name, os.R_OK | os.X_OK):  # else its files look absent: "has no config.json"
            raise CheckpointError(f"cannot read the folder {name}: permission denied; make it readable "
                                  "(chmod u+rx) or copy it somewhere you can read.")
        path = os.path.join(name, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise CheckpointError(f"{name} has no {filename}; point at a folder written by save_pretrained "
                                  "or a hub id.")
        return None
    if os.path.isfile(name):
        return name
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise CheckpointError(f"{name} does not exist; give an existing folder or file, or a hub id as 'org/name'.")
    hub = require("huggingface_hub", "torch", "loading by hub id")
    errors = require("huggingface_hub.errors", "torch", "loading by hub id")
    unreachable = None if local_files_only else _unreachable_hub()
    try:
        return hub.hf_hub_download(name, filename, revision=revision, cache_dir=cache_dir,
                                   local_files_only=local_files_only or unreachable is not None, token=token)
    except errors.LocalEntryNotFoundError:
        if not required and _cached_snapshot(name, revision, cache_dir):
            return None
        offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        where = cache_dir or os.environ.get("HF_HUB_CACHE") or "the hub cache"
        if offline:
            raise CheckpointError(f"{name}/{filename} is not in {where} and the hub is offline; download it once "
                                  "with network access, or point at a local folder.") from None
        reason = f"{unreachable} cannot be reached" if unreachable else "no network?"
        raise CheckpointError(f"{name}/{filename} could not be downloaded ({reason}) and is not in {where}; "
                              "download it once with network access, or point at a local folder.") from None
    except errors.EntryNotFoundError:  # after LocalEntryNotFoundError, its subclass
        if required:
            raise CheckpointError(f"hub repository {name} has no {filename}.") from None
        return None
    except errors.RepositoryNotFoundError:
        raise CheckpointError(f"hub repository {name} does not exist or needs a token.") from None
    except (OSError, ValueError) as err:
        if not required:
            return None
        raise CheckpointError(f"could not get {filename} from {name}: {err}") from None


# Seconds to wait for a proxy to accept a connection. A proxy answers from the local network in milliseconds;
# without this bound a dead one costs huggingface_hub's five retries with back-off (about 25 s) per missing file.
PROXY_CONNECT_TIMEOUT = 1.0


@lru_cache(maxsize=1)
def _unreachable_hub() -> str | None:
    """What makes the hub unreachable ("huggingface.co", "the proxy http://..."), or None; checked once per process.

    Without this, huggingface_hub retries every file with back-off for tens of seconds before failing; with it,
    a machine without network, or behind a proxy that refuses connections, goes straight to the cache. Without
    a proxy the check is that the hub's name resolves; with one, that the proxy accepts a TCP connection
    (whether the proxy then reaches the hub is left to it).
    """
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname
    if not host:
        return None
    proxy = _proxy_for(endpoint.scheme or "https", host)
    if proxy is not None:
        return _dead_proxy(proxy)
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return host
    return None


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy URL the HTTP client will use for `host` (HTTPS_PROXY, ALL_PROXY, ... minus NO_PROXY), or None."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    return proxy


def _dead_proxy(proxy: str) -> str | None:
    """'the proxy SCHEME://HOST:PORT' when nothing accepts a connection at its address, else None."""
    parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = parsed.port or {"https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080}.get(parsed.scheme, 80)
    except ValueError:  # a port that is not a number: the client will fail on it too
        return "the proxy in HTTPS_PROXY / ALL_PROXY (its port is not a number)"
    if not parsed.hostname:
        return "the proxy in HTTPS_PROXY / ALL_PROXY (it names no host)"
    shown = f"the proxy {parsed.scheme}://{parsed.hostname}:{port}"  # without a user:password part
    try:
        with socket.create_connection((parsed.hostname, port), timeout=PROXY_CONNECT_TIMEOUT):
            return None
    except OSError:
        return shown


def _cached_snapshot(name: str, revision: str | None, cache_dir: str | None) -> bool:
    """Whether some file of this repository is cached (so a missing optional file is simply absent)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, CONFIG_NAME, cache_dir=cache_dir, revision=revision), str)
    except Exception:  # pragma: no cover - old huggingface_hub
        return False


def resolve_first(name_or_path: str | os.PathLike, filenames: Iterable[str], **hub_kwargs) -> str | None:
    """The first of `filenames` that exists in the folder or repository, else None."""
    for filename in filenames:
        path = resolve_file(name_or_path, filename, required=False, **hub_kwargs)
        if path is not None:
            return path
    return None
