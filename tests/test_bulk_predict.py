"""Bulk prediction (`efficientformer predict --output`, `ImageClassifier.predict_files`): a killed job resumes
with every image exactly once, worker processes and torchrun ranks give the serial path's records, and the
progress report stays quiet in logs."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from efficientformer import ImageClassifier, InputError  # noqa: E402
from efficientformer.bulk import records  # noqa: E402
from efficientformer.bulk.progress import Progress  # noqa: E402
from efficientformer.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut_640x480.jpg")


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return str(fixtures_dir / "hf-tiny")


@pytest.fixture(scope="module")
def folder(fixtures_dir, tmp_path_factory):
    """24 photos (copies of four fixtures under distinct names) and one truncated file."""
    root = tmp_path_factory.mktemp("bulk") / "photos"
    root.mkdir()
    for i in range(6):
        for name in SOURCES:
            stem, ext = os.path.splitext(name)
            shutil.copy(fixtures_dir / "images" / name, root / f"{i}_{stem}{ext}")
    shutil.copy(fixtures_dir / "images" / "truncated.jpg", root / "truncated.jpg")
    return root


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _predict(*args) -> int:
    return main(["predict", *map(str, args), "--device", "cpu"])


def test_output_file_holds_every_image_once_and_a_rerun_adds_nothing(model, folder, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert _predict(folder, "-m", model, "-k", "2", "-b", "5", "--workers", "0", "--output", out) == 1
    err = capsys.readouterr().err
    assert "truncated.jpg" in err  # reported, not written
    rows = _jsonl(out)
    assert len(rows) == 24 and len({r["image"] for r in rows}) == 24
    assert all(len(r["predictions"]) == 2 for r in rows)
    before = out.read_bytes()
    assert _predict(folder, "-m", model, "-k", "2", "-b", "5", "--output", out) == 1
    assert out.read_bytes() == before
    assert "24 of 25 image(s) were there already" in capsys.readouterr().err
    # another --top-k would mix records of different lengths: refused before any work
    assert _predict(folder, "-m", model, "-k", "3", "--output", out) == 2
    assert "--top-k 2" in capsys.readouterr().err


def test_workers_give_the_serial_records_and_the_classifiers_scores(model, folder, tmp_path, fixtures_dir):
    serial, parallel = tmp_path / "serial.csv", tmp_path / "parallel.csv"
    _predict(folder, "-m", model, "-k", "3", "-b", "4", "--workers", "0", "--output", serial)
    _predict(folder, "-m", model, "-k", "3", "-b", "4", "--workers", "2", "--output", parallel)
    assert serial.read_bytes() == parallel.read_bytes()
    classifier = ImageClassifier.from_pretrained(model, device="cpu")
    files = sorted(str(p) for p in folder.iterdir() if p.name != "truncated.jpg")
    expected = classifier.predict(files, top_k=3, batch_size=4)  # the in-memory path, float32 from the processor
    result = classifier.predict_files(folder, top_k=3, batch_size=4, workers=2)
    assert [name for name, _ in result.predictions] == files
    assert [p for _, p in result.predictions] == expected  # the same floats, not just the same order
    assert [name for name, _ in result.failed] == [str(folder / "truncated.jpg")]
    # another batch composition: the same labels, scores to float32 rounding (BLAS kernels differ by batch size)
    pngs = classifier.predict(str(folder / "*.png"), top_k=1)
    want = [row[:1] for row, f in zip(expected, files) if f.endswith(".png")]
    assert [[(p.label, p.index) for p in row] for row in pngs] == [[(p.label, p.index) for p in row] for row in want]
    assert all(abs(a.score - b.score) < 1e-5 for r, w in zip(pngs, want) for a, b in zip(r, w))


def _shard(folder, path, extra_member: bool = True):
    """A WebDataset-style shard of the folder's files (sorted), each with a .cls companion member."""
    import tarfile

    with tarfile.open(path, "w") as tar:
        for file in sorted(folder.iterdir()):
            tar.add(file, arcname=f"sample/{file.name}")
            if extra_member:
                companion = io.BytesIO(b"3")
                info = tarfile.TarInfo(f"sample/{file.stem}.cls")
                info.size = 1
                tar.addfile(info, companion)
    return path


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_tar_shard_is_classified_like_the_folder_it_holds(model, folder, tmp_path, capsys, workers):
    shard = _shard(folder, tmp_path / "shard-000.tar")
    from_folder, from_shard = tmp_path / "folder.jsonl", tmp_path / "shard.jsonl"
    _predict(folder, "-m", model, "-k", "3", "-b", "4", "--workers", "0", "--output", from_folder)
    capsys.readouterr()
    assert _predict(shard, "-m", model, "-k", "3", "-b", "4", "--workers", workers, "--output", from_shard) == 1
    err = capsys.readouterr().err
    assert "truncated.jpg" in err and "25 members that are not images left out" in err
    rows, expected = _jsonl(from_shard), _jsonl(from_folder)
    assert [r["image"] for r in rows] == [f"{shard}::sample/{Path(r['image']).name}" for r in expected]
    assert [r["predictions"] for r in rows] == [r["predictions"] for r in expected]  # the same scores
    before = from_shard.read_bytes()  # resuming works on member names as on paths
    _predict(shard, "-m", model, "-k", "3", "-b", "4", "--output", from_shard)
    assert from_shard.read_bytes() == before
    one = f"{shard}::sample/0_chelsea.png"  # one member named on its own
    classifier = ImageClassifier.from_pretrained(model, device="cpu")
    assert classifier.predict(one, top_k=3) == classifier.predict(str(folder / "0_chelsea.png"), top_k=3)


def test_archives_that_cannot_be_read_are_one_sentence(model, folder, tmp_path, capsys):
    import tarfile

    packed = tmp_path / "shard.tar.gz"
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(folder / "0_chelsea.png", arcname="0_chelsea.png")
    (tmp_path / "broken.tar").write_bytes(b"not a tar archive at all" * 40)
    assert _predict(packed, tmp_path / "broken.tar", "-m", model, "--workers", "0") == 1  # nothing to classify
    err = capsys.readouterr().err
    assert "is a compressed tar, which has no random access to its members; unpack it" in err
    assert "broken.tar is not an uncompressed tar archive" in err
    classifier = ImageClassifier.from_pretrained(model, device="cpu")
    shard = _shard(folder, tmp_path / "ok.tar", extra_member=False)
    with pytest.raises(InputError, match="holds no member sample/missing.png; list the archive"):
        classifier.predict(f"{shard}::sample/missing.png")


def test_worker_processes_stay_up_for_the_next_call_with_the_same_settings(model, folder):
    # starting "spawn" workers costs seconds (each imports the caller's main module): a process that predicts
    # again keeps them, and gets the same batches; other settings, or a call left half-way, start new ones
    from efficientformer.bulk import loader

    processor = ImageClassifier.from_pretrained(model, device="cpu").processor
    files = sorted(str(p) for p in folder.iterdir() if p.name != "truncated.jpg")
    try:
        first = [b.crops for b in loader.batches(files, 2, processor, workers=1)]
        pool = loader._POOL[2]
        again = [b.crops for b in loader.batches(files, 2, processor, workers=1)]
        assert loader._POOL[2] is pool
        assert all(np.array_equal(a, b) for a, b in zip(first, again)) and len(first) == len(again)
        draft = list(loader.batches(files, 2, processor, workers=1, draft=True))
        assert loader._POOL[2] is not pool and len(draft) == len(first)
        stopped = loader.batches(files, 2, processor, workers=1, draft=True)
        next(stopped)
        stopped.close()  # the caller stopped half-way: its tasks may still run, so its pool is ended
        assert loader._POOL is None
    finally:
        loader.close_pool()


# a writer slowed down after each batch, so that the kill lands between batches of a run that is under way
_SLOW_WRITER = """
import sys, time
from efficientformer.bulk import records
original = records.append
def slow(*args, **kwargs):
    original(*args, **kwargs)
    print("batch", flush=True)
    time.sleep(0.3)
records.append = slow
from efficientformer.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_job_killed_midway_resumes_with_every_image_exactly_once(model, folder, tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    command = [sys.executable, "-c", _SLOW_WRITER, "predict", str(folder), "-m", model, "-k", "2", "-b", "3",
               "--workers", "1", "--device", "cpu", "--output", str(out)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for _ in range(2):  # two batches written, then kill -9
            assert job.stdout.readline() == "batch\n"
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait(timeout=60)
    kept = records.read(out, records.output_format(out)).records
    assert 6 <= len(kept) < 24  # killed mid-way, with whole batches only
    with open(out, "a", encoding="utf-8") as handle:  # what a power cut during a write can leave
        handle.write('{"image": "photos/half' if suffix == ".jsonl" else "photos/half.png,1,ca")
    assert _predict(folder, "-m", model, "-k", "2", "-b", "3", "--output", out) == 1
    complete = tmp_path / f"complete{suffix}"
    _predict(folder, "-m", model, "-k", "2", "-b", "3", "--workers", "0", "--output", complete)
    got = records.read(out, records.output_format(out)).records
    want = records.read(complete, records.output_format(complete)).records
    assert sorted(got) == sorted(want) and len(want) == 24  # every image, once
    assert got == {name: want[name] for name in got}  # each record as an uninterrupted run writes it
    lines = out.read_text().splitlines()
    assert "half" not in out.read_text() and len(lines) == (24 if suffix == ".jsonl" else 1 + 24 * 2)


def test_csv_lists_and_globs_are_sources(model, folder, tmp_path, capsys):
    listing = tmp_path / "list.csv"
    names = sorted(p.name for p in folder.glob("0_*"))
    listing.write_text("label,image\n" + "".join(f"x,photos/{name}\n" for name in names) + "x,gone.png\n")
    shutil.copytree(folder, tmp_path / "photos")
    out = tmp_path / "out.jsonl"
    assert _predict(listing, tmp_path / "photos" / "1_*.png", "-m", model, "-k", "1", "--output", out) == 1
    assert "gone.png: listed in" in capsys.readouterr().err  # relative to the list's folder, reported missing
    assert [r["image"] for r in _jsonl(out)] == [os.path.join(str(tmp_path), "photos", name) for name in names] + [
        str(tmp_path / "photos" / name) for name in ("1_chelsea.png", "1_coffee.png")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, argv: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        main(argv)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_gloo_ranks_write_the_records_of_one_process(model, folder, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    args = [str(folder), "-m", model, "-k", "2", "-b", "4", "--workers", "0", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: the thread count moves the last bits of the scores
    try:
        main(["predict", *args, "--output", str(one)])
    finally:
        torch.set_num_threads(threads)
    half = [line for i, line in enumerate(one.read_text().splitlines(keepends=True)) if i % 3 == 0]
    two.write_text("".join(half))  # an earlier, interrupted run: the ranks share out only what is left
    torch.multiprocessing.spawn(_rank, args=(2, _free_port(), ["predict", *args, "--output", str(two)]), nprocs=2,
                                join=True)
    assert not records.part_files(two)  # merged
    got, want = _jsonl(two), _jsonl(one)

    def labels(rows):  # the ranks batch other images together: labels exact, scores to float32 rounding
        return sorted((r["image"], [(p["label"], p["index"]) for p in r["predictions"]]) for r in rows)

    def scores(rows):
        return {r["image"]: [p["score"] for p in r["predictions"]] for r in rows}

    assert labels(got) == labels(want)
    assert all(abs(a - b) < 1e-5 for k, v in scores(want).items() for a, b in zip(scores(got)[k], v))
    assert [r["image"] for r in got[len(half):]] == [r["image"] for r in want if r not in got[:len(half)]]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_in_a_log_is_a_line_every_interval_at_most():
    stream, clock = io.StringIO(), _Clock()
    bar = Progress(10_000, stream=stream, interval=5.0, clock=clock)
    for _ in range(10_000):  # 10,000 updates over 20 s
        clock.now += 0.002
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 4 <= len(lines) <= 5 and "\r" not in stream.getvalue()
    assert lines[-1].startswith("predicting 10000/10000 (100%), 500.0 images/s")


def test_torchrun_without_output_and_bad_output_names_are_refused(model, folder, tmp_path, capsys, monkeypatch):
    assert _predict(folder, "-m", model, "--output", tmp_path / "out.txt") == 2
    assert ".jsonl or .csv" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _predict(folder, "-m", model) == 2
    assert "need --output" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line_and_keeps_results_above_it(capsys):
    stream, clock = _Terminal(), _Clock()
    bar = Progress(100, stream=stream, clock=clock)
    for i in range(100):
        clock.now += 0.05
        bar.update(1)
        if i == 50:
            bar.write("a result")
    bar.close()
    text = stream.getvalue()
    assert "\n" not in text.rstrip("\n") and text.count("\r\033[K") >= 20  # redrawn in place, then one newline
    assert "[####################] 100/100 (100%), 20.0 images/s" in text.rsplit("\r\033[K", 1)[-1]
    assert capsys.readouterr().out == "a result\n"


def test_a_failed_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    from efficientformer import fileio

    path = tmp_path / "out.jsonl"
    fileio.append_whole(path, b'{"a": 1}\n')
    real_write = os.write

    def half_then_full_disk(fd, data):
        real_write(fd, bytes(data[:5]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "write", half_then_full_disk)
    with pytest.raises(fileio.WriteError, match="no space left"):
        fileio.append_whole(path, b'{"b": 2}\n{"c": 3}\n')
    assert path.read_bytes() == b'{"a": 1}\n'  # the half-written batch was cut off again
    monkeypatch.setattr(fileio.os, "write", real_write)
    path.write_bytes(b'{"a": 1}\n{"b": 2')  # a torn last line (a power cut)
    assert fileio.cut_torn_tail(path) == len(b'{"b": 2') and path.read_bytes() == b'{"a": 1}\n'


def test_draft_decoding_is_close_and_only_on_request(model, fixtures_dir, tmp_path):
    """--draft decodes a large JPEG at a reduced DCT scale: within a level on average, a few dozen at edges."""
    import numpy as np
    from PIL import Image

    from efficientformer.bulk.loader import prepare

    big = tmp_path / "big.jpg"
    Image.open(fixtures_dir / "images" / "chelsea.png").convert("RGB").resize((1280, 960)).save(big, quality=90)
    processor = ImageClassifier.from_pretrained(model, device="cpu").processor
    exact, fast = prepare([str(big)], processor).crops[0], prepare([str(big)], processor, draft=True).crops[0]
    difference = np.abs(exact.astype(int) - fast)
    assert exact.shape == fast.shape and 0 < difference.mean() < 1.5 and difference.max() <= 40
    out = tmp_path / "out.jsonl"
    assert _predict(big, "-m", model, "-k", "1", "--draft", "--output", out) == 0 and len(_jsonl(out)) == 1


def test_default_workers_share_the_cores_among_torchrun_processes(monkeypatch):
    from efficientformer.bulk import loader
    from efficientformer.preprocessing import resize

    monkeypatch.setattr(resize, "usable_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader.default_workers(1000, 32) == 15 and loader.default_workers(32, 32) == 0  # one batch: none
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 ranks on this machine: 4 cores each, one runs the model
    assert loader.default_workers(1000, 32) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert loader.default_workers(1000, 32) == 1
