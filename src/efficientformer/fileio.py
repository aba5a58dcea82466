"""Every file and folder the library writes goes through here, so that a crash or a kill at any moment
leaves either the old content or the complete new one, never a mix.

- Files: written to a temporary file beside the target, flushed to disk, then renamed over it
  (`os.replace` is atomic on POSIX and Windows). The new file gets the mode an ordinary `open(..., "w")`
  would give (0666 minus the umask), not `mkstemp`'s 0600.
- Folders (a saved model: config + weights + preprocessor): `write_folder` builds the complete new folder
  beside the target and swaps it in. On Linux the swap is one `renameat2(RENAME_EXCHANGE)`; elsewhere
  the old folder is first renamed aside, so a crash between the two renames leaves it intact under
  `.NAME.old-*`. Files of the old folder that do not belong to a model are carried over unchanged; the
  model files of the old folder (`MODEL_FILES`, shards included) are all replaced, so no stale weights
  of an older model stay beside the new ones.
- Errors a user can fix (permission denied, read-only, disk full, a file where a folder should be) are
  raised as `WriteError`: one sentence, an `InputError` for the command line and still an `OSError` for
  code that catches those.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .constants import CONFIG_NAME, PREPROCESSOR_NAME, PYTORCH_BIN_NAME, SAFETENSORS_NAME, TF_WEIGHTS_NAME
from .errors import InputError

# Files that make up a saved model in any layout we write; a new model replaces all of them, so no
# stale weights of an older model stay beside the new ones.
MODEL_FILES = frozenset({
    CONFIG_NAME, PREPROCESSOR_NAME, SAFETENSORS_NAME, PYTORCH_BIN_NAME, TF_WEIGHTS_NAME,
    *(f"{name}.index.json" for name in (SAFETENSORS_NAME, PYTORCH_BIN_NAME, TF_WEIGHTS_NAME)),
    "open_clip_config.json", "pytorch_model.pth", "model.pth",
})
# shards of a split checkpoint (transformers' `model-00001-of-00003.safetensors` naming) are model files too
_SHARD = re.compile(r"^(model|pytorch_model|tf_model)-\d+-of-\d+\.(safetensors|bin|h5)$")


class WriteError(InputError, OSError):
    """A file or folder that cannot be written for a reason the user can fix (one sentence says which)."""


def is_model_file(name: str, replaces: Iterable[str] = MODEL_FILES) -> bool:
    """Whether an entry called `name` is part of a saved model (so a new model replaces it)."""
    names = frozenset(replaces)
    # shards count only with the default set: a caller naming its own files means exactly those
    return name in names or (names == MODEL_FILES and _SHARD.match(name) is not None)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set back at once
    os.umask(mask)
    return mask


def _umask_mode() -> int:
    return 0o666 & ~_umask()


def _dir_mode() -> int:
    return 0o777 & ~_umask()


def _write_error(path: str | os.PathLike, err: OSError) -> OSError:
    """The one-sentence `WriteError` for an OSError a user can fix; the error itself otherwise."""
    path = os.fspath(path)
    if err.errno in (errno.EACCES, errno.EPERM):
        return WriteError(f"cannot write {path}: permission denied; fix the permissions of the folder or "
                          "write somewhere else.")
    if err.errno == errno.EROFS:
        return WriteError(f"cannot write {path}: the file system is read-only; write somewhere else.")
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return WriteError(f"cannot write {path}: no space left on the device; free some space or write "
                          "somewhere else.")
    if err.errno in (errno.ENOTDIR, errno.EISDIR):
        return WriteError(f"cannot write {path}: a file stands where a folder should be (or the reverse); "
                          "choose another path.")
    return err


@contextlib.contextmanager
def _translated(path: str | os.PathLike) -> Iterator[None]:
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        new = _write_error(path, err)
        if new is err:
            raise
        raise new from None


# --------------------------------------------------------------------------------------------- files
@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[Any]:
    """`open(path, mode)` for writing, all or nothing: the target appears complete when the block ends
    without an error, and is left as it was otherwise."""
    if not any(c in mode for c in "wx") or "+" in mode:
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not supported.")
    path = Path(path)
    with _translated(path):
        if path.is_dir():
            raise WriteError(f"cannot write {path}: it is a folder; give a file path.")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _umask_mode())
        with os.fdopen(fd, mode.replace("x", "w"), **kwargs) as handle:
            yield handle
            with _translated(path):
                handle.flush()
                os.fsync(handle.fileno())
        if "x" in mode and path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path))
        with _translated(path):
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
    with _translated(path):
        if path.is_dir():
            raise WriteError(f"cannot write {path}: it is a folder; give a file path.")
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with _translated(path):
            writer(str(tmp))
            os.chmod(tmp, _umask_mode())
            _fsync_file(str(tmp))
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                os.remove(tmp)
        raise


def append_whole(path: str | os.PathLike, data: bytes) -> None:
    """Append `data` (whole records, ending in a newline) to `path` in one piece: one `write` call, then
    fsync. A failed write (disk full) is cut off again, so the file ends after its last whole record; a
    power cut during the write can leave a torn last line, which the reader cuts (`cut_torn_tail`). For
    results files written batch by batch (`efficientformer predict --output`), where rewriting the whole
    file per batch would cost as much as the job."""
    path = Path(path)
    with _translated(path):
        if path.is_dir():
            raise WriteError(f"cannot write {path}: it is a folder; give a file path.")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:  # one call for regular files; the loop only guards against short writes
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)


def cut_torn_tail(path: str | os.PathLike) -> int:
    """Cut a last line without its newline off `path` (what a power cut during `append_whole` leaves);
    returns the bytes removed (0 for a missing or whole file)."""
    path = Path(path)
    with _translated(path):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return 0
        if size == 0:
            return 0
        with open(path, "rb+") as handle:
            step, end = 1 << 16, size
            while end > 0:
                begin = max(0, end - step)
                handle.seek(begin)
                chunk = handle.read(end - begin)
                if end == size and chunk.endswith(b"\n"):
                    return 0
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    keep = begin + newline + 1
                    break
                end = begin
            else:
                keep = 0
            handle.truncate(keep)
            os.fsync(handle.fileno())
            return size - keep


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


def _carry_over(old: Path, new: Path, replaces: Iterable[str]) -> None:
    """Hard-link (or copy) into `new` every entry of `old` that the new model does not replace."""
    for entry in old.iterdir():
        if is_model_file(entry.name, replaces) or os.path.lexists(new / entry.name) or _is_our_temp(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(new / entry.name))


def _is_our_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


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
    if same_path(path, folder):
        return True
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _read_only(path: Path) -> bool:
    """Read-only for us, or marked read-only by its owner (no write bit; this holds even for root, for whom
    `os.access` always says yes): either way the user did not mean it to be replaced."""
    try:
        return not os.access(path, os.W_OK) or not os.stat(path).st_mode & 0o222
    except OSError:
        return False


def check_folder(folder: str | os.PathLike, *, replaces: Iterable[str] = MODEL_FILES) -> Path:
    """Raise `WriteError` (one sentence) when `write_folder(folder)` could not or should not write there:
    `folder` is a file, it or one of the model files it would replace is read-only, its parent cannot take
    the temporary folder, or it holds the current working directory (swapping it would strand the shell
    in a deleted folder). Returns the real path the new folder will take. Cheap: call it before any
    compute."""
    target = Path(os.path.realpath(folder))
    name = os.fspath(folder)
    if target.exists() and not target.is_dir():
        raise WriteError(f"{name} is a file, not a folder; give a folder path (it is created).")
    if target.is_dir():
        if _read_only(target):
            raise WriteError(f"{name} is read-only; make it writable (chmod u+w {name}) or write somewhere else.")
        for entry in target.iterdir():
            if is_model_file(entry.name, replaces) and entry.is_file() and _read_only(entry):
                raise WriteError(f"{entry} is read-only, so it is not replaced; make it writable "
                                 f"(chmod u+w {entry}) or write somewhere else.")
        try:
            cwd = os.getcwd()
        except OSError:  # the current folder was deleted: nothing to protect
            cwd = None
        if cwd is not None and is_inside(cwd, target):
            raise WriteError(f"{name} is the current folder (or holds it), which cannot be replaced in one "
                                 "step; write into a subfolder such as ./model.")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or _read_only(parent):
        raise WriteError(f"cannot write {name}: {parent} is not a writable folder; fix its permissions or "
                         "write somewhere else.")
    return target


def _remove_stale_temps(target: Path) -> None:
    """Delete temporary folders that killed writers of `target` left beside it (their process is gone)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.[^.]+\.tmp$")
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            match = pattern.match(entry.name)
            if not match or int(match.group(1)) == os.getpid() or not entry.is_dir():
                continue
            try:
                os.kill(int(match.group(1)), 0)
            except ProcessLookupError:
                shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                pass  # alive (another user's process): leave it


@contextlib.contextmanager
def write_folder(folder: str | os.PathLike, *, replaces: Iterable[str] = MODEL_FILES) -> Iterator[Path]:
    """Build a folder atomically: yields an empty temporary folder beside `folder`; write every file into
    it. When the block ends without an error, the temporary folder (plus the entries of the old `folder`
    that are not model files, see `is_model_file`) takes the place of `folder` in one swap. On an error or
    a kill, `folder` is left exactly as it was.

    `folder` may be a symlink: the folder it points to is replaced, the link is kept.

    Raises:
        WriteError: see `check_folder` (raised before the block runs), or permission denied / disk full
            while writing.
    """
    target = check_folder(folder, replaces=replaces)
    name = os.fspath(folder)
    with _translated(name):
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(target)
        # the pid in the name lets a later writer remove what a killed one left
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    try:
        # the new folder keeps the old one's permissions (a user may have narrowed them)
        os.chmod(tmp, (target.stat().st_mode & 0o7777) if target.is_dir() else _dir_mode())
        with _translated(name):
            yield tmp
            mode = _umask_mode()
            for root, _, files in os.walk(tmp):
                for file in files:
                    # writers differ (safetensors creates 0600 files, open() follows the umask): the saved
                    # model's files all get the umask's mode, as any other file the library writes
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(root, file), mode)
                    _fsync_file(os.path.join(root, file))
            if target.exists():
                _carry_over(target, tmp, replaces)
                if _exchange(str(tmp), str(target)):
                    _fsync_dir(target.parent)
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
