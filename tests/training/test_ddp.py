"""Two processes under torchrun (DistributedDataParallel over gloo) train as one process with the global batch."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from fastnnp.training.checkpoint_writer import load_checkpoint
from fastnnp.training.trainer import train
from tests.helpers.training import tiny_config, tiny_settings

# Ethanol frames only: equal atom counts, so the mean over processes of per-process means is the global mean.
SETTINGS = dict(molecules="CH3CH2OH", train_size=2, val_size=1, test_size=1, num_epochs=2, test_interval=1)


def test_two_processes_match_one(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = train(tiny_config(single, batch_size=2, **SETTINGS), progress=False)
    finally:
        torch.set_num_threads(threads)

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_settings(str(ddp), batch_size=1, **SETTINGS)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "fastnnp.training.cli", str(path), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    a, b = load_checkpoint(single / "last.ckpt"), load_checkpoint(ddp / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 2
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    rows_single = list(csv.DictReader(open(single / "metrics.csv")))
    rows_ddp = list(csv.DictReader(open(ddp / "metrics.csv")))
    for one, two in zip(rows_single, rows_ddp, strict=True):
        for column in ("train_total_mse_loss", "val_total_mse_loss", "val_forces_mae", "val_energy_mae"):
            assert float(two[column]) == pytest.approx(float(one[column]), rel=1e-4), column
    report = json.loads((ddp / "test_metrics.json").read_text())
    assert report.keys() == expected.keys()
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, rel=1e-4), key
