"""The training loop: loss and gradients, fresh-model initialisation, metrics, the CLI and its errors."""

import csv
import json
import math

import pytest
import torch
import yaml
from torch.nn import functional as F

from fastnnp.models.factory import build_model
from fastnnp.training.cli import main
from fastnnp.training.config import load_config
from fastnnp.training.data import collate
from fastnnp.training.trainer import Trainer, predict
from tests.helpers.training import periodic_config, tiny_config, tiny_settings

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_step_decreases_the_loss(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), progress=False)
    batch = collate(trainer.frames["train"], trainer.dtype)
    before = trainer.train_loss(batch)
    before.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    assert trainer.train_loss(batch).item() < before.item()


def test_force_and_stress_loss_gradients_match_finite_differences(tmp_path):
    trainer = Trainer(periodic_config(tmp_path), progress=False)
    model = trainer.model
    batch = collate(trainer.frames["train"], torch.float64)
    param = model.representation_model.linear.weight
    start, direction = param.detach().clone(), torch.randn_like(param)

    def loss_at(step: float) -> torch.Tensor:
        with torch.no_grad():
            param.copy_(start + step * direction)
        pred = predict(model, batch, derivative=True, charge=False, create_graph=True)
        return F.mse_loss(pred.neg_dy, batch.forces) + 1e3 * F.mse_loss(pred.stress, batch.stress)

    (grad,) = torch.autograd.grad(loss_at(0.0), param)
    analytic = (grad * direction).sum().item()
    h = 1e-5
    numeric = ((loss_at(h) - loss_at(-h)) / (2 * h)).item()
    assert analytic == pytest.approx(numeric, rel=1e-5)


def test_fresh_models_initialise_like_torchmdnet():
    """Per-parameter spread of a new model equals TorchMD-Net's (its reset_parameters), zero biases alike."""
    from torchmdnet.models.model import create_model

    for name, extra in (("tensornet", {}), ("equivariant-transformer", {"neighbor_embedding": True}),
                        ("graph-network", {"neighbor_embedding": True}),
                        ("tensornet2", {"q_dim": 4, "q_weights": [1.0, 1.0], "output_model": "ScalarPlusWeightedCoulomb",
                                        "coulomb_cutoff": 4.0, "repulsion": True})):
        hparams = {**load_config(None), "model": name, "embedding_dimension": 128, "num_layers": 1, "num_rbf": 32,
                   "max_z": 32, "derivative": True, "prior_model": None, **extra}
        theirs = dict(create_model(dict(hparams)).named_parameters())
        ours = dict(build_model(hparams).named_parameters())
        assert theirs.keys() == ours.keys()
        for key, value in theirs.items():
            mine = ours[key].detach()
            if value.numel() < 64:
                continue
            if value.detach().std() == 0:
                assert mine.std() == 0, f"{name} {key}: TorchMD-Net initialises it constant"
            else:
                assert mine.std().item() == pytest.approx(value.detach().std().item(), rel=0.2), f"{name} {key}"


def test_cli_trains_and_reports(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_settings("logs", num_epochs=1)))
    assert main([str(path), "--num-epochs", "2", "--gradient-clipping", "1.0", "--lr-warmup-steps", "2"]) == 0
    logs = tmp_path / "logs"
    assert {"best.ckpt", "last.ckpt", "epoch=0.ckpt", "epoch=1.ckpt", "metrics.csv", "splits.npz", "input.yaml",
            "test_metrics.json"} <= {p.name for p in logs.iterdir()}
    rows = list(csv.DictReader(open(logs / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for column in ("lr", "train_total_mse_loss", "val_total_mse_loss", "val_total_l1_loss", "val_energy_mae",
                   "val_energy_rmse", "val_forces_mae", "val_forces_rmse", "val_y_l1_loss", "val_neg_dy_l1_loss"):
        assert all(math.isfinite(float(r[column])) for r in rows), column
    assert rows[0]["test_forces_mae"] == "" and float(rows[1]["test_forces_mae"]) > 0  # test_interval 1: epoch > 0
    report = json.loads((logs / "test_metrics.json").read_text())
    assert {"test_energy_mae", "test_energy_rmse", "test_forces_mae", "test_forces_rmse", "test_y_l1_loss",
            "test_neg_dy_l1_loss", "test_total_l1_loss"} == report.keys()
    out = capsys.readouterr().out
    assert out.startswith(f"fastnnp train: writing to {logs}\n")
    best = torch.load(logs / "best.ckpt", weights_only=True)["epoch"]
    assert f"test set (best checkpoint, epoch {best}): " in out


def test_periodic_training_logs_stress(tmp_path):
    config = periodic_config(tmp_path, num_epochs=1, test_interval=-1)
    Trainer(config, progress=False).fit()
    (row,) = csv.DictReader(open(tmp_path / "metrics.csv"))
    assert float(row["val_stress_mae"]) > 0 and float(row["train_stress_mse_loss"]) > 0


def test_bad_config_key_is_an_error(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("model: tensornet\nlearning_rate: 0.1\n")
    assert main([str(path)]) == 2
    assert "learning_rate" in capsys.readouterr().err
    path.write_text("model: tensornet\n")
    assert main([str(path), "--num-epoch", "3"]) == 2
    assert "num_epoch" in capsys.readouterr().err


def test_unlogged_monitor_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_monitor"):
        Trainer(tiny_config(tmp_path, train_loss="l1_loss"), progress=False)


def test_early_stopping(tmp_path):
    """lr 0: the validation loss never improves after the first epoch, so patience 1 stops after two."""
    Trainer(tiny_config(tmp_path, lr=0.0, num_epochs=5, early_stopping_patience=1), progress=False).fit()
    assert [row["epoch"] for row in csv.DictReader(open(tmp_path / "metrics.csv"))] == ["0", "1"]
