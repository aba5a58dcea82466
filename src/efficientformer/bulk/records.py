"""Results files of bulk prediction (`--output FILE.jsonl|csv`): one record per image, written batch by batch,
read back to resume.

- JSON Lines: one line per image, `{"image": NAME, "predictions": [{"label", "index", "score"}, ...]}`.
- CSV: the header `image,rank,label,index,score`, then one row per (image, rank), as `--format csv` prints.

Each batch is appended in one write and fsynced (`fileio.append_whole`), so a killed job leaves whole
batches; reading a file back cuts a torn last line or an image with fewer rows than its rank count (what a
power cut during a write can leave), so the records a rerun finds are exactly the complete ones. Processes
started by torchrun write part files beside the output (`NAME.part-00001.jsonl`), which `merge` folds into
it (in input order, each image once) with one atomic rewrite.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..errors import InputError
from ..fileio import append_whole, atomic_open, cut_torn_tail

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CSV_HEADER = ("image", "rank", "label", "index", "score")


def output_format(path: str | os.PathLike) -> str:
    """"jsonl" or "csv" from the file name.

    Raises:
        InputError: another extension, or a folder.
    """
    name = os.fspath(path)
    fmt = FORMATS.get(os.path.splitext(name)[1].lower())
    if fmt is None:
        raise InputError(f"--output {name} has an unknown extension; name a .jsonl or .csv file.")
    if os.path.isdir(name):
        raise InputError(f"--output {name} is a folder; name a .jsonl or .csv file.")
    return fmt


def encode(fmt: str, name: str, predictions: Sequence) -> str:
    """The text of one image's record (lines ending in a newline)."""
    if fmt == "jsonl":
        return json.dumps({"image": name, "predictions": [p.to_dict() for p in predictions]},
                          ensure_ascii=False) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for rank, p in enumerate(predictions, 1):
        writer.writerow([name, rank, p.label, p.index, f"{p.score:.6f}"])
    return buffer.getvalue()


def _csv_header() -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(CSV_HEADER)
    return buffer.getvalue()


@dataclass
class Contents:
    """What a results file holds: each image's record text in file order, and how many ranks they have."""

    records: dict[str, str]
    top_k: int | None


def read(path: str | os.PathLike, fmt: str, *, repair: bool = False, top_k: int | None = None) -> Contents:
    """The complete records of a results file (none when it does not exist).

    `repair=True` (only the file's one writer may) also cuts what an interrupted write left at its end.
    `top_k`: the ranks a complete CSV record has (else the other records tell; a file of one record cannot).

    Raises:
        InputError: the file is not a results file of this format (another header, lines that are not
            records), or its records differ in their number of ranks.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return Contents({}, None)
    if repair:
        cut_torn_tail(path)
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    if not text.endswith("\n") and text:  # a torn line another process may still be finishing: not counted
        text = text[:text.rfind("\n") + 1]
    contents, torn = _read_jsonl(path, text) if fmt == "jsonl" else _read_csv(path, text, top_k)
    if torn and repair:
        with open(path, "rb+") as handle:
            handle.truncate(len(text.encode("utf-8")) - len(torn.encode("utf-8")))
            os.fsync(handle.fileno())
    return contents


def _not_results(path: str, fmt: str, where: str) -> InputError:
    return InputError(f"{path} is not a {fmt} results file of efficientformer predict ({where}); choose another "
                      "--output file (or delete this one).")


def _read_jsonl(path: str, text: str) -> tuple[Contents, str]:
    records: dict[str, str] = {}
    counts: set[int] = set()
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            name, count = record["image"], len(record["predictions"])
        except (ValueError, KeyError, TypeError):
            raise _not_results(path, "JSON Lines", f"line {number} is not a record") from None
        counts.add(count)
        records.setdefault(name, line)
    return Contents(records, _one_count(path, counts)), ""


def _read_csv(path: str, text: str, top_k: int | None = None) -> tuple[Contents, str]:
    if not text:
        return Contents({}, None), ""
    rows = list(csv.reader(io.StringIO(text)))
    if tuple(rows[0]) != CSV_HEADER:
        raise _not_results(path, "CSV", f"its header is not {','.join(CSV_HEADER)}")
    groups: list[tuple[str, list[list[str]]]] = []
    for row in rows[1:]:
        if len(row) != len(CSV_HEADER) or not row[1].isdigit():
            raise _not_results(path, "CSV", f"a row reads {row!r}")
        if row[1] == "1" or not groups or groups[-1][0] != row[0]:
            groups.append((row[0], []))
        groups[-1][1].append(row)
    counts = {len(rows) for _, rows in groups[:-1]}
    torn = ""
    if groups:
        last_rows = groups[-1][1]
        expected = max(counts) if counts else top_k
        if expected is not None and len(last_rows) < expected:  # a write cut between the ranks of one image
            torn = _csv_rows(last_rows)
            groups.pop()
        else:
            counts.add(len(last_rows))
    records: dict[str, str] = {}
    for name, group in groups:
        records.setdefault(name, _csv_rows(group))
    return Contents(records, _one_count(path, counts)), torn


def _csv_rows(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _one_count(path: str, counts: set[int]) -> int | None:
    if len(counts) > 1:
        raise InputError(f"{path} mixes records of {sorted(counts)} classes each; write each --top-k to its own "
                         "--output file.")
    return next(iter(counts), None)


def check_top_k(path: str | os.PathLike, contents: Contents, top_k: int) -> None:
    """Refuse to resume a file written with another number of classes per image."""
    if contents.top_k is not None and contents.top_k != top_k:
        raise InputError(f"{os.fspath(path)} holds the top {contents.top_k} classes of each image but this run asks "
                         f"for {top_k}; rerun with --top-k {contents.top_k}, or write to another --output file.")


def append(path: str | os.PathLike, fmt: str, texts: Iterable[str]) -> None:
    """Append the records of one batch (the CSV header first when the file is new or empty)."""
    body = "".join(texts)
    if not body:
        return
    if fmt == "csv" and (not os.path.exists(path) or os.path.getsize(path) == 0):
        body = _csv_header() + body
    append_whole(path, body.encode("utf-8"))


def part_path(path: str | os.PathLike, rank: int) -> str:
    """The part file of one torchrun process: out.jsonl -> out.part-00001.jsonl."""
    stem, suffix = os.path.splitext(os.fspath(path))
    return f"{stem}.part-{rank:05d}{suffix}"


def part_files(path: str | os.PathLike) -> list[str]:
    """The part files beside `path`, left by this run's processes or an interrupted earlier one."""
    stem, suffix = os.path.splitext(os.fspath(path))
    return sorted(glob.glob(f"{glob.escape(stem)}.part-[0-9][0-9][0-9][0-9][0-9]{glob.escape(suffix)}"))


def merge(path: str | os.PathLike, fmt: str, order: Sequence[str] = (), top_k: int | None = None) -> Contents:
    """Fold the part files into `path` with one atomic rewrite, then delete them; returns what `path` holds.

    Records already in `path` keep their place; those of the parts follow in `order` (the run's input
    order), each image once. A kill before the parts are deleted is harmless: the next merge (or rerun)
    finds their records in `path` already."""
    parts = part_files(path)
    existing = read(path, fmt, repair=True, top_k=top_k)
    if not parts:
        return existing
    merged = dict(existing.records)
    counts = {existing.top_k} - {None}
    found: dict[str, str] = {}
    for part in parts:
        contents = read(part, fmt, repair=True, top_k=top_k)
        if contents.top_k is not None:
            counts.add(contents.top_k)
        for name, text in contents.records.items():
            found.setdefault(name, text)
    rank = {name: i for i, name in enumerate(order)}
    for name in sorted(found, key=lambda n: rank.get(n, len(rank))):
        merged.setdefault(name, found[name])
    count = _one_count(os.fspath(path), counts)
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        if fmt == "csv" and merged:
            handle.write(_csv_header())
        handle.writelines(merged.values())
    for part in parts:
        os.remove(part)
    return Contents(merged, count)
