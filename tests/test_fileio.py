"""fileio: every write is all or nothing, follows the umask, and a folder write leaves exactly the new model."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from efficientformer import fileio
from efficientformer.errors import InputError
from efficientformer.fileio import (
    WriteError,
    atomic_open,
    is_inside,
    same_path,
    write_bytes,
    write_folder,
    write_json,
    write_text,
    write_with,
)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _siblings(path) -> list[str]:
    return sorted(os.listdir(os.path.dirname(os.path.abspath(path))))


def test_files_follow_the_umask_not_mkstemps_0600(tmp_path, umask_027):
    write_text(tmp_path / "a.json", "{}")
    write_with(tmp_path / "b.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    with write_folder(tmp_path / "model") as tmp:
        write_bytes(tmp / "model.safetensors", b"weights")
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "b.bin") == 0o640
    assert _mode(tmp_path / "model" / "model.safetensors") == 0o640 and _mode(tmp_path / "model") == 0o750


def test_training_checkpoint_files_are_not_0600(tmp_path, umask_027):
    pytest.importorskip("torch")
    from efficientformer.training.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "last.pt", model={}, global_step=1)
    assert _mode(tmp_path / "last.pt") == 0o640


def test_a_failed_file_write_keeps_the_old_content_and_leaves_no_temporary(tmp_path):
    write_json(tmp_path / "summary.json", {"top1": 91.5})
    with pytest.raises(RuntimeError):
        with atomic_open(tmp_path / "summary.json", "w") as handle:
            handle.write('{"top1": ')
            raise RuntimeError("killed half way")
    assert json.loads((tmp_path / "summary.json").read_text()) == {"top1": 91.5}
    assert _siblings(tmp_path / "summary.json") == ["summary.json"]


def test_a_new_model_replaces_every_old_model_file_and_keeps_the_rest(tmp_path):
    old = tmp_path / "model"
    old.mkdir()
    for name in ("config.json", "model.safetensors", "tf_model.h5", "model-00001-of-00002.safetensors",
                 "README.md", "notes.txt"):
        (old / name).write_text(f"old {name}")
    (old / "eval").mkdir()
    (old / "eval" / "results.json").write_text("{}")
    with write_folder(old) as tmp:
        (tmp / "config.json").write_text("new config")
        (tmp / "pytorch_model.bin").write_text("new weights")
    assert sorted(os.listdir(old)) == ["README.md", "config.json", "eval", "notes.txt", "pytorch_model.bin"]
    assert (old / "config.json").read_text() == "new config" and (old / "notes.txt").read_text() == "old notes.txt"
    assert (old / "eval" / "results.json").read_text() == "{}"
    assert _siblings(old) == ["model"]  # no temporary or old folder left beside it


def test_an_error_while_writing_a_folder_leaves_the_old_one_untouched(tmp_path):
    old = tmp_path / "model"
    old.mkdir()
    (old / "config.json").write_text("old config")
    (old / "model.safetensors").write_text("old weights")
    with pytest.raises(RuntimeError):
        with write_folder(old) as tmp:
            (tmp / "config.json").write_text("new config")
            raise RuntimeError("the weights could not be written")
    assert (old / "config.json").read_text() == "old config"
    assert (old / "model.safetensors").read_text() == "old weights"
    assert _siblings(old) == ["model"]


def test_a_symlinked_folder_is_replaced_where_it_points_and_the_link_stays(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "model.safetensors").write_text("old")
    (tmp_path / "link").symlink_to(real)
    with write_folder(tmp_path / "link") as tmp:
        (tmp / "model.safetensors").write_text("new")
    assert (tmp_path / "link").is_symlink() and (real / "model.safetensors").read_text() == "new"


def test_a_file_where_the_folder_should_be_is_one_sentence(tmp_path):
    (tmp_path / "model").write_text("not a folder")
    with pytest.raises(WriteError, match=r"is a file, not a folder; give a folder path") as info:
        with write_folder(tmp_path / "model"):
            pytest.fail("the block must not run")
    assert isinstance(info.value, InputError) and isinstance(info.value, OSError)
    assert (tmp_path / "model").read_text() == "not a folder"


def test_a_read_only_model_file_is_refused_before_anything_is_written(tmp_path):
    old = tmp_path / "model"
    old.mkdir()
    (old / "model.safetensors").write_text("protected weights")
    os.chmod(old / "model.safetensors", 0o444)
    ran = []
    with pytest.raises(WriteError, match=r"model.safetensors is read-only, so it is not replaced; make it writable"):
        with write_folder(old):
            ran.append(True)
    assert not ran and (old / "model.safetensors").read_text() == "protected weights"
    assert _siblings(old) == ["model"]


def test_a_read_only_folder_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    os.chmod(tmp_path / "model", 0o555)
    try:
        with pytest.raises(WriteError, match=r"model is read-only; make it writable"):
            with write_folder(tmp_path / "model"):
                pass
    finally:
        os.chmod(tmp_path / "model", 0o755)


def test_the_current_folder_is_not_swapped_away(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WriteError, match=r"is the current folder .* write into a subfolder"):
        with write_folder("."):
            pass


@pytest.mark.skipif(os.name != "posix", reason="process ids are checked with os.kill(pid, 0)")
def test_a_killed_writers_temporary_folder_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.{int(dead.stdout)}.abcd1234.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    alive = tmp_path / f".model.{os.getppid()}.abcd1234.tmp"  # a live process's: never touched
    alive.mkdir()
    with write_folder(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert not stale.exists() and alive.is_dir()


def test_same_path_and_is_inside_see_through_symlinks(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.safetensors").write_text("w")
    (tmp_path / "alias").symlink_to(tmp_path / "src")
    assert same_path(tmp_path / "alias", tmp_path / "src")
    assert is_inside(tmp_path / "src" / "model.safetensors", tmp_path / "alias")
    assert is_inside(tmp_path / "alias" / "sub", tmp_path / "src")
    assert not is_inside(tmp_path / "srcx", tmp_path / "src")


def test_permission_errors_become_one_sentence(tmp_path):
    error = fileio._write_error(tmp_path / "out.json", PermissionError(13, "Permission denied"))
    assert isinstance(error, WriteError) and str(error).endswith("write somewhere else.")
    assert str(error).count(". ") == 0  # one sentence
    other = OSError(5, "I/O error")
    assert fileio._write_error(tmp_path, other) is other  # nothing a user can fix: left as it is


def test_a_metrics_log_cut_short_by_a_kill_is_read_and_repaired(tmp_path):
    pytest.importorskip("torch")
    from efficientformer.training.metrics import MetricsLog

    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n{"kind": "train", "st')
    log = MetricsLog(tmp_path)
    log.log({"kind": "train", "step": 2})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


# ------------------------------------------------------------------- the model-folder writer
def test_write_model_folder_writes_config_weights_and_processor(tmp_path):
    from efficientformer import EfficientFormerConfig
    from efficientformer.checkpoints.folder import write_model_folder

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"stale")  # an older model's weights go
    (folder / "README.md").write_text("kept")  # other files stay
    config = EfficientFormerConfig(num_labels=3)
    out = write_model_folder(folder, config=config, weights={"model.safetensors": lambda p: Path(p).write_bytes(b"w")},
                             processor={"crop_size": {"height": 32, "width": 32}})
    assert out == str(folder)
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert EfficientFormerConfig.from_json_file(folder / "config.json") == config
    assert json.loads((folder / "preprocessor_config.json").read_text())["crop_size"] == {"height": 32, "width": 32}


def test_write_model_folder_plain_config_and_no_processor(tmp_path):
    from efficientformer.checkpoints.folder import write_model_folder

    folder = tmp_path / "timm"
    write_model_folder(folder, config={"architecture": "efficientformer_l1"},
                       weights={"model.safetensors": lambda p: Path(p).write_bytes(b"w")}, processor=None)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    assert json.loads((folder / "config.json").read_text()) == {"architecture": "efficientformer_l1"}


def test_write_model_folder_default_processor_is_the_released_one(tmp_path):
    from efficientformer.checkpoints.folder import write_model_folder
    from efficientformer.presets import RELEASED_PREPROCESSING

    write_model_folder(tmp_path / "m", config={}, weights={})
    saved = json.loads((tmp_path / "m" / "preprocessor_config.json").read_text())
    assert saved["crop_size"] == RELEASED_PREPROCESSING["crop_size"]


def test_write_model_folder_checks_before_writing(tmp_path):
    from efficientformer.checkpoints.folder import write_model_folder
    from efficientformer.errors import ConfigError

    folder = tmp_path / "m"
    with pytest.raises(ConfigError):
        write_model_folder(folder, config={}, weights={}, processor={"resample": 99})
    with pytest.raises(InputError, match="plain file name"):
        write_model_folder(folder, config={}, weights={"../x.bin": lambda p: None})
    assert not folder.exists()
