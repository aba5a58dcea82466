"""Every file and folder the library writes goes through here, so that a crash or a kill at any moment
leaves either the old content or the complete new one, never a mix.

- Files: written to a temporary file beside the target, flushed to disk, then renamed over it
  (`os.replace` is atomic on POSIX and Windows). The new file gets the mode an ordinary `open(..., "w")`
  would give (0666 minus the umask), not `mkstemp`'s 0600.
- Folders (a saved model: config + weights + preprocessor): `write_folder` builds the complete new folder
  beside the target and swaps it in. On Linux the swap is one `renameat2(RENAME_EXCHANGE)`; elsewhere
  the old folder is first renamed aside, so a crash between the two renames leaves it intact under
  `.NAME.old-*`. Files of the old folder that do not belong to a model are carried over unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

# Files that make up a saved model in any layout we write; a new model replaces all of them, so no
# stale weights of an older model stay beside the new ones.
MODEL_FILES = frozenset({
    "config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5",
    "model.safetensors.index.json", "pytorch_model.bin.index.json", "tf_model.h5.index.json",
    "open_clip_config.json", "pytorch_model.pth",
})


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set back at once
    os.umask(mask)
    return mask


def _umask_mode() -> int:
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[Any]:
    """`open(path, mode)` for writing, all or nothing: the target appears complete when the block ends
    without an error, and is left as it was otherwise."""
    if not any(c in mode for c in "wx") or "+" in mode:
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not supported.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _umask_mode())
        with os.fdopen(fd, mode.replace("x", "w"), **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if "x" in mode and path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """Write `data` as JSON (with a final newline) to `path` atomically."""
    write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[str], Any]) -> None:
    """Atomic write for libraries that only write to a path (safetensors, h5py, onnx, torch.save): `writer`
    gets a temporary path beside `path`, which is renamed over `path` once `writer` returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        writer(str(tmp))
        os.chmod(tmp, _umask_mode())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                os.remove(tmp)
        raise


# ------------------------------------------------------------------------------------------- folders
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def _carry_over(old: Path, new: Path, replaced: Iterable[str]) -> None:
    """Hard-link (or copy) into `new` every entry of `old` that the new model does not replace."""
    replaced = set(replaced)
    for entry in old.iterdir():
        if entry.name in replaced or (new / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(new / entry.name))


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder, through symlinks and hard links."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` (resolved through symlinks) lies in `folder` or is `folder` itself."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@contextlib.contextmanager
def write_folder(folder: str | os.PathLike, *, replaces: Iterable[str] = MODEL_FILES) -> Iterator[Path]:
    """Build a folder atomically: yields an empty temporary folder beside `folder`; write every file into
    it. When the block ends without an error, the temporary folder (plus the entries of the old `folder`
    whose names are not in `replaces`) takes the place of `folder` in one swap. On an error or a kill,
    `folder` is left exactly as it was.

    `folder` may be a symlink: the folder it points to is replaced, the link is kept.
    """
    target = Path(os.path.realpath(folder))
    if target.exists() and not target.is_dir():
        from .errors import InputError

        raise InputError(f"{os.fspath(folder)} is a file, not a folder; give a folder path (it is created).")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, _dir_mode())
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                _fsync_file(os.path.join(root, name))
        if target.exists():
            _carry_over(target, tmp, replaces)
            if _exchange(str(tmp), str(target)):
                shutil.rmtree(tmp, ignore_errors=True)  # now holds the old folder
                return
            aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, aside)
            os.rename(tmp, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _dir_mode() -> int:
    return 0o777 & ~_umask()


def _fsync_file(path: str) -> None:
    with contextlib.suppress(OSError):
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
