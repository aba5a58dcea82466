"""Finding a checkpoint's files: a local folder, a single file, or a Hugging Face hub id.

Hub ids go through `huggingface_hub` and work offline from its cache (`HF_HUB_OFFLINE=1` or
`local_files_only=True`); when a file is neither cached nor reachable the error says so.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Iterable
from urllib.parse import urlparse

from .errors import CheckpointError, require

HubKwargs = dict  # revision, cache_dir, local_files_only, token


def is_local(name_or_path: str | os.PathLike) -> bool:
    return os.path.exists(name_or_path)


def resolve_file(name_or_path: str | os.PathLike, filename: str, *, required: bool = True,
                 revision: str | None = None, cache_dir: str | None = None,
                 local_files_only: bool = False, token: str | bool | None = None) -> str | None:
    """Path of `filename` inside a folder or hub repository; None when absent and not `required`."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
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


@lru_cache(maxsize=1)
def _unreachable_hub() -> str | None:
    """The hub's host name when it cannot even be resolved (no network), else None; checked once per process.

    Without this, huggingface_hub retries every file with back-off for tens of seconds before failing; with it,
    a machine without network goes straight to the cache. Behind a proxy the check is left to the proxy.
    """
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return host
    return None


def _cached_snapshot(name: str, revision: str | None, cache_dir: str | None) -> bool:
    """Whether some file of this repository is cached (so a missing optional file is simply absent)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json", cache_dir=cache_dir, revision=revision), str)
    except Exception:  # pragma: no cover - old huggingface_hub
        return False


def resolve_first(name_or_path: str | os.PathLike, filenames: Iterable[str], **hub_kwargs) -> str | None:
    """The first of `filenames` that exists in the folder or repository, else None."""
    for filename in filenames:
        path = resolve_file(name_or_path, filename, required=False, **hub_kwargs)
        if path is not None:
            return path
    return None
