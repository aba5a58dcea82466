"""What a bulk prediction runs over: image files, folders, glob patterns and CSV lists, expanded to paths.

A file named directly is decoded whatever its name, except a `.tar` archive, whose image members are taken in
archive order as "shard.tar::member" (`preprocessing.archives`; WebDataset shards), and a `.csv` file, which is a list: its column named
"image", "path", "file" or "filename" (else its first column) holds one image path per row, relative paths
taken from the CSV's own folder. Folders are searched recursively (symbolic links followed, each real folder
and file taken once, so a link loop classifies nothing twice) for files with an extension Pillow decodes
(`image_suffixes()`: .jpg, .jfif, .png, .webp, .tif, ...); hidden entries (names starting with ".") are not
searched, as a shell glob skips them. A glob's matches count as if named on the command line (a matched
folder is searched, except under "**", which lists the folder's files itself). Everything not taken is
returned with the reason, so that callers report it.

An input `hf:NAME[:CONFIG]` (a dataset of the Hugging Face Hub) or `hf:FOLDER` (one written by
`save_to_disk`) stands for every row of one split, named "hf:SOURCE/SPLIT/ROW" (`preprocessing.hf_datasets`;
`split` and `image_column` pick which); a row's own name is taken as it is.
"""

from __future__ import annotations

import csv
import errno
import glob
import os

from ..errors import InputError
from ..preprocessing import archives, hf_datasets

LIST_SUFFIX = ".csv"
_PATH_COLUMNS = ("image", "path", "file", "filename", "filepath", "image_path")


def is_list_file(item: str) -> bool:
    """Whether a command-line input is a CSV list of images rather than an image."""
    return item.lower().endswith(LIST_SUFFIX) and os.path.isfile(item)


def read_list(path: str) -> list[str]:
    """The image paths of a CSV list, in its row order (relative ones from the CSV's folder).

    Raises:
        InputError: the file cannot be read or has no rows.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"the image list {path} cannot be read ({err}); give a UTF-8 CSV file with one image "
                         "path per row.") from None
    if not rows:
        raise InputError(f"the image list {path} is empty; give one image path per row.")
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in _PATH_COLUMNS if name in header), None)
    if column is None:  # no known header: the first column, and the first row is a path unless it names no file
        column = 0
        first = rows[0][0].strip()
        if not os.path.lexists(_from_list(path, first)) and os.path.splitext(first)[1] == "":
            rows = rows[1:]
    else:
        rows = rows[1:]
    return [_from_list(path, row[column].strip()) for row in rows if len(row) > column and row[column].strip()]


def _from_list(list_path: str, entry: str) -> str:
    return entry if os.path.isabs(entry) else os.path.join(os.path.dirname(list_path), entry)


def expand_inputs(inputs: list[str], split: str | None = None,
                  image_column: str | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """(image paths in order, each real file once; [(input or path, reason)] for everything skipped).

    Files named directly (or matched by a glob) are kept whatever their extension; folders give their image
    files in sorted order and report their other files, unreadable sub-folders and broken links; `hf:`
    datasets give the names of the rows of `split` (None: "test", or the dataset's only split), their images
    taken from `image_column` (None: the first Image column).

    Raises:
        InputError: a CSV list that cannot be read; an `hf:` dataset, split or column that does not exist.
        MissingDependencyError: an `hf:` input without `datasets` installed.
    """
    paths: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen_files: set = set()
    seen_dirs: set = set()

    def add_file(path: str) -> None:
        if archives.is_archive(path):
            return add_archive(path)
        key = _identity(path)
        if key not in seen_files:
            seen_files.add(key)
            paths.append(path)

    def add_archive(archive: str) -> None:
        from ..preprocessing.image_io import image_suffixes

        try:
            names, others = archives.members(archive, image_suffixes())
        except InputError as err:
            skipped.append((archive, str(err)))
            return
        if not names:
            skipped.append((archive, "archive holds no image files"))
        elif others:  # one line, not one per companion file (WebDataset shards hold a .cls or .json per image)
            skipped.append((archive, f"{others} members that are not images left out"))
        identity = _identity(archive)
        for name in names:
            key = (identity, name.rpartition(archives.SEPARATOR)[2])
            if key not in seen_files:
                seen_files.add(key)
                paths.append(name)

    def add_folder(folder: str) -> None:
        found = _search_folder(folder, seen_dirs, skipped)
        if found is not None and not found:
            skipped.append((folder, "folder holds no image files"))
        for path in sorted(found or ()):
            add_file(path)

    def add_rows(item: str) -> None:
        if hf_datasets.parse_row(item) is not None:  # one row (read, or reported missing, when it is decoded)
            names = [item]
        else:
            names = hf_datasets.row_names(item[len(hf_datasets.PREFIX):], split, image_column)
            if not names:
                skipped.append((item, "the dataset's split holds no rows"))
        for name in names:
            if name not in seen_files:
                seen_files.add(name)
                paths.append(name)

    for item in inputs:
        if hf_datasets.is_source(item) and not os.path.lexists(item):
            add_rows(item)
        elif is_list_file(item):
            for path in read_list(item):
                if os.path.lexists(path):
                    add_file(path)
                else:
                    skipped.append((path, f"listed in {item} but does not exist"))
        elif os.path.isdir(item):
            add_folder(item)
        elif os.path.lexists(item):
            add_file(item)
        elif (member := archives.split(item)) is not None and os.path.isfile(member[0]):
            add_file(item)  # one member, "shard.tar::name" (read, or reported missing, when it is decoded)
        elif glob.has_magic(item):
            # shallowest first: a file that "**" also reaches through a link loop is shown by its shortest path
            matches = sorted(glob.glob(item, recursive=True), key=lambda m: (m.count(os.sep), m))
            matched, known = False, {}
            for match in matches:
                if os.path.isdir(match):
                    if "**" not in item:  # "**" lists the folder's files itself
                        add_folder(match)
                        matched = True
                elif not _past_link_loop(match, known):
                    add_file(match)  # once, even when an earlier input named it already
                    matched = True
            if not matched:
                skipped.append((item, "pattern matches no files"))
        else:
            skipped.append((item, "no such file or folder"))
    return paths, skipped


def _past_link_loop(path: str, known: dict) -> bool:
    """Whether `path` goes through one folder twice: "**" follows folder links, so a link loop gives every file
    under it again and again (up to the system's limit of links); glob also returned its shortest path.
    `known` caches the identity of each folder prefix."""
    pieces = path.split(os.sep)
    seen = set()
    for i in range(1, len(pieces)):
        prefix = os.sep.join(pieces[:i]) or os.sep
        if prefix not in known:
            try:
                known[prefix] = _identity(prefix, strict=True)
            except OSError as err:
                known[prefix] = "loop" if err.errno == errno.ELOOP else None
        key = known[prefix]
        if key == "loop" or (key is not None and key in seen):
            return True
        seen.add(key)
    return False


def _identity(path: str, strict: bool = False):
    """What makes two paths one file: device and inode (links, `..`, link loops), else the real path."""
    try:
        info = os.stat(path)
        return info.st_dev, info.st_ino
    except OSError:
        if strict:
            raise
        return os.path.realpath(path)


def _search_folder(folder: str, seen_dirs: set, skipped: list) -> list[str] | None:
    """Image files under `folder` (links followed, each real folder once; None when it was searched already),
    appending everything else found to `skipped`."""
    from ..preprocessing.image_io import image_suffixes

    found: list[str] = []
    stack, first = [folder], True
    while stack:
        current = stack.pop()
        key = _identity(current)
        if key in seen_dirs:  # a link back up the tree, or a folder named twice
            if first:
                return None
            continue
        seen_dirs.add(key)
        first = False
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            skipped.append((current, f"folder cannot be read ({err.strerror or err})"))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError as err:  # a link loop (a -> a) or a folder we may not look into
                skipped.append((entry.path, f"cannot be read ({err.strerror or err})"))
                continue
            if is_dir:
                subfolders.append(entry.path)
            elif is_file:
                if os.path.splitext(entry.name)[1].lower() in image_suffixes():
                    found.append(entry.path)
                else:
                    skipped.append((entry.path, "not an image file extension (name the file itself to try it)"))
            elif entry.is_symlink():
                skipped.append((entry.path, "broken symbolic link"))
            else:
                skipped.append((entry.path, "not a regular file"))
        stack.extend(reversed(subfolders))
    return found
