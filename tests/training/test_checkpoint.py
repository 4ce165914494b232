"""Training checkpoints: TorchMD-Net loads them, resuming is exact, and ``best`` is never half-written."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fastnnp
from fastnnp.training.checkpoint_writer import load_checkpoint
from fastnnp.training.data import collate
from fastnnp.training.trainer import Trainer, train
from tests.helpers.parity import assert_matches
from tests.helpers.training import tiny_config

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the child process imports tests.helpers from it
ZBL = {"ZBL": {"cutoff_distance": 2.0, "max_num_neighbors": 32, "atomic_number": list(range(10)),
               "distance_scale": 1e-10, "energy_scale": 1.602176634e-19}}
ARCHITECTURES = {
    "tensornet": {"model": "tensornet"},
    "equivariant-transformer": {"model": "equivariant-transformer", "num_heads": 2, "neighbor_embedding": True},
    "graph-network": {"model": "graph-network", "neighbor_embedding": True},
    "tensornet+ZBL": {"model": "tensornet", "prior_model": ZBL},
}


pytestmark = pytest.mark.usefixtures("one_thread")


class Interrupted(Exception):
    pass


def interrupt_at(step: int):
    def hook(current: int) -> None:
        if current == step:
            raise Interrupted

    return hook


def weights(checkpoint: dict) -> dict:
    return checkpoint["state_dict"]


def metric_rows(log_dir) -> list[dict]:
    rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
    for row in rows:
        del row["epoch_time_s"]
    return rows


@pytest.mark.parametrize("variant", ARCHITECTURES)
def test_torchmdnet_and_fastnnp_load_the_checkpoint_alike(tmp_path, variant):
    from torchmdnet.models.model import load_model as torchmdnet_load_model

    settings = ARCHITECTURES[variant]
    trainer = Trainer(tiny_config(tmp_path, num_epochs=1, test_interval=-1, **settings), progress=False)
    trainer.fit()
    path = str(tmp_path / "best.ckpt")
    checkpoint = load_checkpoint(path)  # weights_only=True
    hparams = checkpoint["hyper_parameters"]
    assert hparams["model"] == settings["model"]
    assert hparams["prior_args"] == ([ZBL["ZBL"]] if "prior_model" in settings else [])
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 2
    batch = collate(trainer.frames["train"] + trainer.frames["val"] + trainer.frames["test"], torch.float32)
    theirs = torchmdnet_load_model(path, derivative=True)
    ours = fastnnp.load_model(path)
    energy, forces = theirs(batch.z, batch.pos, batch.batch)
    assert_matches(*ours(batch.z, batch.pos, batch.batch), energy.detach(), forces.detach(), torch.float32)


def test_resume_after_interruption_is_bit_identical(tmp_path):
    settings = dict(num_epochs=3, lr_warmup_steps=3, gradient_clipping=0.5, ema_alpha_y=0.5, ema_alpha_neg_dy=0.7,
                    weight_ema_decay=0.9, lr_patience=0, lr_factor=0.5)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    expected = train(tiny_config(straight, **settings), progress=False)
    with pytest.raises(Interrupted):  # mid-epoch: 2 steps per epoch, step 5 is the first of the third epoch
        train(tiny_config(interrupted, **settings), on_step=interrupt_at(5), progress=False)
    assert load_checkpoint(interrupted / "last.ckpt")["epoch"] == 1
    assert train(tiny_config(interrupted, **settings), resume=True, progress=False) == expected
    a, b = load_checkpoint(straight / "last.ckpt"), load_checkpoint(interrupted / "last.ckpt")
    assert all(torch.equal(weights(a)[k], weights(b)[k]) for k in weights(a))
    raw_a, raw_b = a["fastnnp"]["raw_weights"], b["fastnnp"]["raw_weights"]
    assert all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a)
    assert a["fastnnp"]["optimizer"]["state"][0]["exp_avg"].equal(b["fastnnp"]["optimizer"]["state"][0]["exp_avg"])
    assert metric_rows(straight) == metric_rows(interrupted)
    assert len(metric_rows(straight)) == 3


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        Trainer(tiny_config(tmp_path), resume=True, progress=False)


def test_killed_while_writing_best_leaves_the_old_best(tmp_path):
    """SIGKILL in the middle of writing the second best checkpoint: best.ckpt stays the first one,
    intact; resuming cleans up and ends where an uninterrupted run ends."""
    settings = dict(num_epochs=3, lr=3e-3)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from tests.helpers.training import tiny_config
        from fastnnp.training.trainer import train

        real_save = torch.save
        best_writes = []

        def dying_save(obj, f, *args, **kwargs):
            if "fastnnp" not in obj:  # best.ckpt carries no resume state
                best_writes.append(1)
                if len(best_writes) == 2:
                    f.write(b"PK half a checkpoint")
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            real_save(obj, f, *args, **kwargs)

        torch.save = dying_save
        train(tiny_config({str(killed)!r}, **{settings!r}), progress=False)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == -9, result.stderr
    strays = [p for p in os.listdir(killed) if p.endswith(".tmp")]
    assert len(strays) == 1 and strays[0].startswith(".best.ckpt.")
    best = load_checkpoint(killed / "best.ckpt")
    assert best["epoch"] == 0
    fastnnp.load_model(str(killed / "best.ckpt"))

    expected = train(tiny_config(straight, **settings), progress=False)
    assert train(tiny_config(killed, **settings), resume=True, progress=False) == expected
    assert not [p for p in os.listdir(killed) if p.endswith(".tmp")]
    a, b = load_checkpoint(straight / "best.ckpt"), load_checkpoint(killed / "best.ckpt")
    assert a["epoch"] == b["epoch"] > 0
    assert all(torch.equal(weights(a)[k], weights(b)[k]) for k in weights(a))
    assert json.loads((killed / "test_metrics.json").read_text()) == expected


def test_load_model_starts_from_a_torchmdnet_checkpoint(tmp_path, data_dir):
    """A Lightning checkpoint written by torchmd-train (no fastnnp state): its weights, epoch 0, a
    warning; trained with the exact radial filters (no tables, though the model is float32)."""
    from fastnnp.checkpoint import read_checkpoint
    from fastnnp.models.common.radial_table import radial_tables

    path = data_dir / "tensornet" / "model.ckpt"
    hparams = read_checkpoint(path).hparams
    architecture = {k: hparams[k] for k in ("embedding_dimension", "num_layers", "num_rbf", "max_z", "cutoff_upper")}
    with pytest.warns(UserWarning, match="no fastnnp training state"):
        trainer = Trainer(tiny_config(tmp_path, load_model=str(path), **architecture), progress=False)
    expected = read_checkpoint(path).state_dict
    assert trainer.epoch == 0
    assert all(torch.equal(expected[k], v) for k, v in trainer.model.state_dict().items())
    assert radial_tables(trainer.model) == []
    assert all(m.radial_table is None for m in trainer.model.modules() if hasattr(m, "radial_table"))
