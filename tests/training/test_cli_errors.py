"""``fastnnp train``'s failures: every user mistake is one line and exit status 2, a diverged run
one line and exit status 1, and test metrics only ever of a checkpoint the run itself wrote."""

import csv
import json
import math
import os
import re
import shutil

import pytest
import torch
import yaml

from fastnnp.training.checkpoint_writer import load_checkpoint
from fastnnp.training.cli import main
from fastnnp.training.trainer import Trainer, TrainingDiverged
from tests.helpers.training import MOLECULES, tiny_config, tiny_settings

pytestmark = pytest.mark.usefixtures("one_thread")


def write_config(folder, **settings):
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_settings(str(settings.pop("log_dir", folder / "logs")), **settings)))
    return path


def run(capsys, *argv) -> tuple[int, str]:
    """``main(argv)``'s exit status and its stderr, which must be one line (warnings aside)."""
    status = main([str(a) for a in argv] + ["--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("fastnnp train: warning: ")]
    assert len(err) == 1, err
    return status, err[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """log_dir of a one-epoch run (best.ckpt, last.ckpt, ...) and its config settings."""
    log_dir = tmp_path_factory.mktemp("finished") / "logs"
    settings = dict(num_epochs=1, test_interval=-1, save_interval=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_thread fixture, which a module-scoped fixture precedes
    try:
        Trainer(tiny_config(log_dir, **settings), progress=False).fit()
    finally:
        torch.set_num_threads(threads)
    return log_dir, settings


def copy_run(finished_run, tmp_path):
    log_dir, settings = finished_run
    shutil.copytree(log_dir, tmp_path / "logs")
    return tmp_path / "logs", settings


def test_config_mistakes(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert run(capsys, missing) == (2, f"fastnnp train: error: config file {missing} does not exist")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: tensornet\nlr: [0.1\n")
    assert run(capsys, broken) == (2, f"fastnnp train: error: {broken}: not valid YAML: expected ',' or ']', "
                                      "but got '<stream end>' (line 3, column 1)")
    listing = tmp_path / "list.yaml"
    listing.write_text("- model\n")
    assert run(capsys, listing) == (2, f"fastnnp train: error: {listing}: a config file must hold a mapping of keys "
                                       "to values")
    path = write_config(tmp_path)
    assert run(capsys, path, "--num-epochs", "ten") == (
        2, "fastnnp train: error: config key num_epochs must be a number, got 'ten'")
    assert run(capsys, path, "--derivative", "maybe") == (
        2, "fastnnp train: error: config key derivative must be true or false, got 'maybe'")
    assert run(capsys, path, tmp_path / "other.yaml") == (
        2, f"fastnnp train: error: argument '{tmp_path / 'other.yaml'}' does not follow a --key (one config file is "
           "read; if the shell expanded a glob, quote it)")
    assert run(capsys) == (2, "fastnnp train: error: the following arguments are required: config "
                              "(see fastnnp train --help)")
    assert not (tmp_path / "logs").exists()
    assert run(capsys, path, "--resume") == (
        2, f"fastnnp train: error: --resume: no checkpoint to resume from at {tmp_path / 'logs' / 'last.ckpt'}")


def test_shell_expanded_glob_and_missing_files(tmp_path, capsys):
    path = write_config(tmp_path)
    expanded = sorted(str(p) for p in MOLECULES.glob("*_coords.npy"))
    assert run(capsys, path, "--coord-files", *expanded) == (
        2, f"fastnnp train: error: config key coord_files takes one path or glob pattern, got 2 values "
           f"({expanded[0]!r}, {expanded[1]!r}): if the shell expanded a glob, quote it "
           "(--coord-files 'data/*.npy')")
    nothing = str(tmp_path / "*_coords.npy")
    assert run(capsys, path, "--coord-files", nothing) == (
        2, f"fastnnp train: error: coord_files: no file matches {nothing!r}")
    weights = tmp_path / "gone.ckpt"
    assert run(capsys, path, "--load-model", weights) == (2, f"fastnnp train: error: checkpoint not found: {weights}")
    assert run(capsys, path, "--dataset", "HDF5", "--dataset-root", "null") == (
        2, "fastnnp train: error: dataset HDF5 needs dataset_root (a file, or several separated by ';')")
    assert run(capsys, path, "--dataset", "HDF5", "--dataset-root", tmp_path / "gone.h5") == (
        2, f"fastnnp train: error: dataset_root: HDF5 file {tmp_path / 'gone.h5'} does not exist")
    assert run(capsys, path, "--dataset", "ASE", "--dataset-root", tmp_path / "gone.extxyz") == (
        2, f"fastnnp train: error: {tmp_path / 'gone.extxyz'}: No such file or directory")
    assert run(capsys, path, "--dataset", "ASE", "--dataset-root", path) == (
        2, f"fastnnp train: error: {path}: ASE does not know the file format 'yaml'; name it with dataset_arg "
           "format (an ase.io format such as extxyz)")
    assert run(capsys, path, "--load-model", path) == (
        2, f"fastnnp train: error: load_model: {path} is not a PyTorch checkpoint (a torch.save zip archive)")


def test_log_dir_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    path = write_config(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert run(capsys, path, "--log-dir", a_file) == (
        2, f"fastnnp train: error: log_dir {a_file} exists and is not a folder")
    assert run(capsys, path, "--log-dir", a_file / "logs") == (
        2, f"fastnnp train: error: log_dir {a_file / 'logs'} cannot be created: Not a directory")
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the permission check see what another user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(read_only) else real_access(p, mode))
    assert run(capsys, path, "--log-dir", read_only) == (
        2, f"fastnnp train: error: log_dir {read_only} is not writable")
    assert os.listdir(read_only) == []


def test_an_earlier_run_is_never_overwritten_nor_reused(finished_run, tmp_path, capsys):
    log_dir, settings = copy_run(finished_run, tmp_path)
    before = {p.name: p.read_bytes() for p in log_dir.iterdir()}
    path = write_config(tmp_path, log_dir=log_dir, **settings)
    assert run(capsys, path) == (
        2, f"fastnnp train: error: log_dir {log_dir} holds the outputs of an earlier run (best.ckpt, last.ckpt, "
           "metrics.csv, test_metrics.json); continue that run with --resume, or choose another log_dir (files "
           "there are never overwritten)")
    assert {p.name: p.read_bytes() for p in log_dir.iterdir()} == before


def test_resume_with_a_changed_config_or_a_corrupt_checkpoint(finished_run, tmp_path, capsys):
    log_dir, settings = copy_run(finished_run, tmp_path)
    path = write_config(tmp_path, log_dir=log_dir, **dict(settings, num_epochs=2))
    last = log_dir / "last.ckpt"
    assert run(capsys, path, "--resume", "--embedding-dimension", "32", "--lr", "0.01") == (
        2, f"fastnnp train: error: --resume: the config changes what {last} fixes (embedding_dimension 16 -> 32; "
           "lr 0.001 -> 0.01); resume with that run's settings (its input.yaml), or start a new run in another "
           "log_dir with load_weights")
    last.write_bytes(last.read_bytes()[:1000])
    status, line = run(capsys, path, "--resume")
    assert status == 2
    assert line.startswith(f"fastnnp train: error: --resume: {last} is not a readable checkpoint (corrupt or "
                           "truncated): ")
    last.write_text("not a checkpoint")
    assert run(capsys, path, "--resume") == (
        2, f"fastnnp train: error: --resume: {last} is not a PyTorch checkpoint (a torch.save zip archive)")


def test_a_diverged_run_stops_with_status_1_and_no_test_metrics(tmp_path, capsys):
    path = write_config(tmp_path, lr=1e30)
    logs = tmp_path / "logs"
    assert run(capsys, path) == (
        1, "fastnnp train: error: training diverged in epoch 0 (step 2): train_total_mse_loss = nan, "
           "val_total_l1_loss = nan, val_total_mse_loss = nan; no checkpoint was written; the test set was not "
           "evaluated; try a lower lr, gradient_clipping or lr_warmup_steps")
    assert sorted(p.name for p in logs.iterdir()) == ["input.yaml", "metrics.csv", "splits.npz"]
    (row,) = csv.DictReader(open(logs / "metrics.csv"))
    assert math.isnan(float(row["train_total_mse_loss"]))


def test_divergence_after_a_good_epoch_keeps_its_checkpoints(tmp_path):
    """NaN weights from the first step of epoch 1: epoch 0's last.ckpt and best.ckpt stay, no test."""
    trainer = Trainer(tiny_config(tmp_path, num_epochs=3, test_interval=-1, save_interval=0), progress=False)

    def poison(step: int) -> None:
        if step == 3:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(math.nan)

    trainer.on_step = poison
    with pytest.raises(TrainingDiverged, match=r"^training diverged in epoch 1 \(step 4\): train_total_mse_loss = "
                                               r"nan, .*; last.ckpt holds epoch 0, best.ckpt epoch 0; the test set "
                                               r"was not evaluated"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == load_checkpoint(tmp_path / "best.ckpt")["epoch"] == 0
    assert not (tmp_path / "test_metrics.json").exists()
    assert [row["epoch"] for row in csv.DictReader(open(tmp_path / "metrics.csv"))] == ["0", "1"]


def test_test_metrics_come_from_the_best_checkpoint_this_run_wrote(tmp_path, capsys):
    path = write_config(tmp_path, num_epochs=1, test_interval=-1)
    assert main([str(path), "--num-epochs", "0"]) == 0
    out = capsys.readouterr().out
    assert "test set (initial weights): " in out
    assert not (tmp_path / "logs" / "best.ckpt").exists()
    report = json.loads((tmp_path / "logs" / "test_metrics.json").read_text())
    assert math.isfinite(report["test_forces_mae"])


def test_weights_that_do_not_fit_the_model(finished_run, tmp_path, capsys):
    log_dir, settings = finished_run
    path = write_config(tmp_path, **settings)
    status, line = run(capsys, path, "--load-weights", log_dir / "best.ckpt", "--embedding-dimension", "32")
    assert status == 2
    assert line.startswith(f"fastnnp train: error: the weights of {log_dir / 'best.ckpt'} do not fit the model the "
                           "config describes: size mismatch for representation_model.")


def test_a_best_checkpoint_replaced_during_the_run_is_not_tested(tmp_path):
    """lr 0: epoch 1 does not improve, so best.ckpt stays epoch 0's; replaced by another, the test refuses it."""
    trainer = Trainer(tiny_config(tmp_path, lr=0.0, num_epochs=2, test_interval=-1, save_interval=0), progress=False)
    best = tmp_path / "best.ckpt"

    def replace_best(step: int) -> None:
        if step == 4:
            other = load_checkpoint(best)
            other["epoch"] = 7
            torch.save(other, best)

    trainer.on_step = replace_best
    message = f"{best} holds epoch 7, but this run wrote it at epoch 0: it was replaced while the run went on"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        trainer.fit()
    assert not (tmp_path / "test_metrics.json").exists()
