"""Images inside uncompressed .tar archives (the shards of WebDataset-style datasets), named "shard.tar::member".

Bulk prediction takes a .tar as it takes a folder (`bulk.sources`): its image members, in archive order, become
inputs named `<archive>::<member name>`, and those names go through the pipeline like file paths (worker
processes, records, resuming). Reading a member needs the archive's index (where each member's bytes start): it
is built once per process and archive (`_index`, one pass over the headers) and kept while the archive's size
and modification time stay the same; each read is then one seek and one read of a plain file handle, so
threads and worker processes read members side by side. A compressed archive (.tar.gz, ...) has no such random
access (every member would decompress the archive from its start) and is refused with one sentence.
"""

from __future__ import annotations

import os
import tarfile
from functools import lru_cache

from ..errors import InputError

SEPARATOR = "::"
SUFFIXES = (".tar",)
_COMPRESSED = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")


def is_archive(path: str) -> bool:
    """Whether an input names a .tar archive to take images from (an existing file whose name ends in .tar, or
    a compressed tar, which `members` refuses)."""
    return path.lower().endswith(SUFFIXES + _COMPRESSED) and os.path.isfile(path)


def split(name: str) -> tuple[str, str] | None:
    """(archive, member) of a "shard.tar::member" name, or None for any other name."""
    archive, sep, member = name.partition(SEPARATOR)
    if not sep or not member or not archive.lower().endswith(SUFFIXES):
        return None
    return archive, member


def members(archive: str, suffixes: frozenset[str]) -> tuple[list[str], int]:
    """The "archive::member" names of the archive's regular-file members whose extension is in `suffixes`, in
    archive order, and how many other members it holds (WebDataset's .cls / .json companions and the like).

    Raises:
        InputError: a compressed, unreadable or corrupt archive.
    """
    index = _checked_index(archive)
    names = [name for name in index if os.path.splitext(name)[1].lower() in suffixes]
    return [f"{archive}{SEPARATOR}{name}" for name in names], len(index) - len(names)


def read_member(name: str) -> bytes:
    """The bytes of a "shard.tar::member" input.

    Raises:
        InputError: the archive is missing, unreadable, corrupt, or has no such member.
    """
    archive, member = split(name)
    where = _checked_index(archive).get(member)
    if where is None:
        raise InputError(f"{archive} holds no member {member}; list the archive with `tar tf` to check the name.")
    offset, size = where
    try:
        with open(archive, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
    except OSError as err:
        raise InputError(f"{archive} cannot be read ({err.strerror}); check the file.") from None
    if len(data) != size:
        raise InputError(f"{archive} is truncated inside member {member}; re-download or re-create the archive.")
    return data


def _checked_index(archive: str) -> dict[str, tuple[int, int]]:
    if archive.lower().endswith(_COMPRESSED):
        raise InputError(f"{archive} is a compressed tar, which has no random access to its members; unpack it, or "
                         "re-create it uncompressed (tar cf), as WebDataset shards are.")
    try:
        info = os.stat(archive)
    except FileNotFoundError:
        raise InputError(f"archive {archive} does not exist; check the path.") from None
    except OSError as err:
        raise InputError(f"archive {archive} cannot be reached ({err.strerror}); check the path.") from None
    return _index(archive, info.st_size, info.st_mtime_ns)


@lru_cache(maxsize=16)
def _index(archive: str, size: int, mtime_ns: int) -> dict[str, tuple[int, int]]:
    """member name -> (offset of its data, its size) for the archive's regular files (size and mtime in the key:
    a rewritten archive is indexed again)."""
    try:
        with tarfile.open(archive, mode="r:") as tar:
            return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
    except tarfile.ReadError as err:
        raise InputError(f"{archive} is not an uncompressed tar archive Python can read ({err}); check the file."
                         ) from None
    except OSError as err:
        raise InputError(f"{archive} cannot be read ({err.strerror}); check the file.") from None
