"""The training loop of ``fastnnp train``: torchmd-train's semantics on fastnnp's pure-torch models.

As TorchMD-Net's LNNP and ``torchmd-train`` (3.1.0), with the config keys of the same names:

- train loss per batch: ``y_weight * L(E) + neg_dy_weight * L(F)`` with ``L`` = ``train_loss``
  (``mse_loss``, ``l1_loss`` or ``huber_loss``, with ``train_loss_arg``), each term smoothed
  by ``ema_alpha_y`` / ``ema_alpha_neg_dy``; validation logs L1 and ``train_loss``, the test
  set L1. Logged values are means over batches, named ``{stage}_{y|neg_dy|total}_{loss}``.
- AdamW (``lr``, ``weight_decay``; torch's fused implementation); linear warm-up over
  ``lr_warmup_steps`` optimizer steps; ReduceLROnPlateau (``lr_factor``, ``lr_patience``,
  ``lr_min``) on ``{lr_metric}_total_{train_loss}`` after every epoch; ``gradient_clipping``
  (global norm); ``early_stopping_patience`` epochs on ``early_stopping_monitor``; the test set
  every ``test_interval`` epochs and, at the end, with the best checkpoint's weights;
  ``standardize``, ``seed``, ``precision`` 32/64.

Total charges (``Batch.q``) reach the model with ``charge: true``, as in TorchMD-Net; a model
that reads them (TensorNet2) refuses charged data with ``charge: false``.

fastnnp additions (not torchmd-train keys, read with ``config.get``): ``stress_weight`` adds
``stress_weight * L(stress)`` for periodic frames with stress labels (default 0);
``weight_ema_decay`` keeps an exponential moving average of the weights that validation, test
and checkpoints use (default off; see :mod:`fastnnp.training.ema`).

Divergence: an epoch whose mean training or validation loss (any ``train_total_*`` or
``val_total_*``) is NaN or infinite ends the run with :class:`TrainingDiverged`; that epoch's row
is added to ``metrics.csv``, but no checkpoint is written for it (``last.ckpt`` and ``best.ckpt``
stay those of the last finite epoch, if any) and the test set is not evaluated.

A fresh run (no ``resume``) refuses a ``log_dir`` that holds another run's outputs (checkpoints,
``metrics.csv``, ``test_metrics.json``; see :data:`RUN_OUTPUTS`): nothing is overwritten or reused,
and test metrics are only ever of a checkpoint this run wrote. ``resume`` refuses a config that
changes what the checkpoint fixes (:data:`FIXED_ON_RESUME`: the model, the optimizer's and
scheduler's settings, the splits).

Outputs in ``log_dir``: ``metrics.csv`` (one row per epoch: lr, step, epoch time, the losses
above, and exact MAE/RMSE over all validation samples of energy, force components and stress
components), ``best.ckpt`` (replaced only after a validation improved ``checkpoint_monitor``),
``last.ckpt`` (every epoch), ``epoch={n}.ckpt`` every ``save_interval`` epochs, ``splits.npz``,
``input.yaml`` and ``test_metrics.json``. Checkpoints load in TorchMD-Net's and fastnnp's
``load_model``; ``resume`` continues from ``last.ckpt`` and ends bit-identical to an
uninterrupted run (per-epoch seeded data order, every state restored, and on CPU torch's
deterministic kernels; on GPU, atomic additions make runs differ in the last bits).

Several processes: launch with ``torchrun``; each process trains on its shard of every batch
order (``DistributedSampler``, ``batch_size`` per process) in DistributedDataParallel (gloo on
CPU, NCCL on GPU); metrics are reduced over processes and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import glob
import io
import json
import math
import os
import random
import time
import warnings
from typing import Callable, Iterator, NamedTuple, Optional

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from ..checkpoint import CheckpointError, read_checkpoint
from ..derivatives import energy_derivatives
from ..models.factory import build_model, model_dtype
from ..models.potential import NeuralPotential
from ..models.registry import canonical_name
from .checkpoint_writer import (
    ForeignCheckpoint,
    build_checkpoint,
    load_checkpoint,
    model_state_from,
    remove_stale_temporaries,
    rng_state,
    save_atomic,
    set_rng_state,
)
from .config import MODEL_KEYS
from .data import Batch, Frame, collate, load_frames, make_splits
from .ema import LossEMA, weight_ema

LOSS_FUNCTIONS: dict[str, Callable[..., Tensor]] = {
    "mse_loss": F.mse_loss, "l1_loss": F.l1_loss, "huber_loss": F.huber_loss,
}
_LEADING_COLUMNS = ("epoch", "lr", "step", "epoch_time_s")
# Loss kinds: TorchMD-Net's names for energy and forces, and stress.
_KINDS = ("y", "neg_dy", "stress")
_ERROR_NAMES = {"y": "energy", "neg_dy": "forces", "stress": "stress"}
# Files a run writes in log_dir that another run must not overwrite or mistake for its own (globs).
RUN_OUTPUTS = ("best.ckpt", "last.ckpt", "epoch=*.ckpt", "metrics.csv", "test_metrics.json")
# Config keys a resumed run cannot change: the model's, and those the restored optimizer,
# scheduler and splits hold.
FIXED_ON_RESUME = (*MODEL_KEYS, "precision", "lr", "weight_decay", "lr_factor", "lr_patience", "lr_min",
                   "train_size", "val_size", "test_size", "splits")
# Architectures whose energy depends on the total charge (TorchMD-Net passes it only with charge: true).
_READS_TOTAL_CHARGE = ("tensornet2",)


class TrainingDiverged(RuntimeError):
    """An epoch's training or validation loss was not finite; the message says which, and what was kept."""


class Prediction(NamedTuple):
    """Model outputs for a batch: energy [S, 1], forces [N, 3] and stress [S, 3, 3] (None when not computed)."""

    y: Tensor
    neg_dy: Optional[Tensor]
    stress: Optional[Tensor]


def predict(model: NeuralPotential, batch: Batch, derivative: bool, charge: bool, create_graph: bool) -> Prediction:
    """Energy and, with ``derivative``, forces and (for periodic batches) stress = dE/dε / volume."""
    q = batch.q if charge else None
    if not derivative:
        energy = model.energy_terms(batch.z, batch.pos, batch.batch, batch.box, q)[0]
        return Prediction(energy if create_graph else energy.detach(), None, None)
    energy, _, forces, stress = energy_derivatives(
        model, batch.z, batch.pos, batch.batch, batch.box, q, create_graph=create_graph
    )
    return Prediction(energy, forces, stress)


class _Predictor(nn.Module):
    """:func:`predict` with the graph kept, as a module so that DistributedDataParallel can wrap it."""

    def __init__(self, model: NeuralPotential, derivative: bool, charge: bool):
        super().__init__()
        self.model = model
        self.derivative = derivative
        self.charge = charge

    def forward(self, batch: Batch) -> Prediction:
        return predict(self.model, batch, self.derivative, self.charge, create_graph=True)


def _targets(batch: Batch) -> dict[str, Optional[Tensor]]:
    """The labels of ``batch`` under the names of :class:`Prediction`'s fields."""
    return {"y": batch.energy, "neg_dy": batch.forces, "stress": batch.stress}


class _Meter:
    """Per-epoch sums, reduced over processes by :meth:`result`: batch losses (reported as their
    mean over batches) and per-sample errors (reported as MAE and RMSE over all samples)."""

    _SIZES = {"loss": 2, "error": 3}

    def __init__(self):
        self.sums: dict[tuple[str, str], Tensor] = {}

    def _add(self, key: tuple[str, str], entry: Tensor) -> None:
        self.sums[key] = self.sums[key] + entry if key in self.sums else entry

    def loss(self, name: str, value: Tensor) -> None:
        value = value.detach().double()
        self._add(("loss", name), torch.stack([value, torch.ones_like(value)]))

    def errors(self, name: str, pred: Tensor, target: Tensor) -> None:
        diff = (pred.detach() - target).double()
        self._add(("error", name), torch.stack([diff.abs().sum(), diff.square().sum(), diff.new_tensor(diff.numel())]))

    def result(self, world_size: int) -> dict[str, float]:
        keys = set(self.sums)
        device = torch.device("cpu")
        if world_size > 1:
            gathered: list = [None] * world_size
            dist.all_gather_object(gathered, sorted(keys))
            keys = set().union(*map(set, gathered))
            device = _collective_device()
        keys = sorted(keys)
        if not keys:
            return {}
        flat = torch.cat([self.sums[k].to(device) if k in self.sums
                          else torch.zeros(self._SIZES[k[0]], dtype=torch.float64, device=device) for k in keys])
        if world_size > 1:
            dist.all_reduce(flat)
        values, out = iter(flat.tolist()), {}
        for kind, name in keys:
            if kind == "loss":
                total, count = next(values), next(values)
                out[name] = total / count if count else math.nan
            else:
                total_abs, total_sq, count = next(values), next(values), next(values)
                out[f"{name}_mae"] = total_abs / count if count else math.nan
                out[f"{name}_rmse"] = math.sqrt(total_sq / count) if count else math.nan
        return out


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class _Distributed(NamedTuple):
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool


def _init_distributed(config: dict) -> _Distributed:
    """Join the process group torchrun describes (WORLD_SIZE > 1); pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and config.get("ngpus", -1) != 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    owns_group = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns_group = True
    rank = dist.get_rank() if world_size > 1 else 0
    return _Distributed(rank, world_size, device, owns_group)


@contextlib.contextmanager
def _deterministic_on_cpu(device: torch.device) -> Iterator[None]:
    """On CPU, torch's deterministic kernels for the duration (the default ones sum in an order that
    depends on thread timing when several threads run on a busy machine, and at no measurable gain
    here); that is what makes a resumed run bit-identical. The previous setting is restored after."""
    if device.type != "cpu":
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One training run as ``config`` (a :func:`fastnnp.training.load_config` dict) describes.

    ``resume`` continues from ``log_dir/last.ckpt``; ``on_step(step)`` is called after every
    optimizer step (tests use it to interrupt a run); ``progress`` shows tqdm bars on rank 0.
    """

    def __init__(
        self,
        config: dict,
        resume: bool = False,
        on_step: Optional[Callable[[int], None]] = None,
        progress: bool = True,
    ):
        self.config = dict(config)
        self.on_step = on_step
        self.dist = _init_distributed(self.config)
        self.is_main = self.dist.rank == 0
        self.progress = progress and self.is_main
        self.dtype = model_dtype(self.config)
        self.derivative = bool(self.config["derivative"])
        self.log_dir = os.path.abspath(self.config["log_dir"])
        self.weights = {
            "y": float(self.config["y_weight"]),
            "neg_dy": float(self.config["neg_dy_weight"]),
            "stress": float(self.config.get("stress_weight") or 0.0),
        }
        self.train_loss_name = self.config["train_loss"]
        if self.train_loss_name not in LOSS_FUNCTIONS:
            raise ValueError(f"train_loss {self.train_loss_name!r} is not supported; choose one of {', '.join(LOSS_FUNCTIONS)}")
        self._check_monitors()
        if self.weights["stress"] > 0 and not self.derivative:
            raise ValueError("stress_weight > 0 needs derivative: true (stress is a derivative of the energy)")
        if self.is_main:
            self._prepare_log_dir(resume)

        _seed_everything(int(self.config["seed"]))
        frames = load_frames(self.config)
        self._check_charges(frames)
        checkpoint, state = self._resume_source(resume)
        self.splits = self._splits(len(frames), state)
        self.frames = {name: [frames[i] for i in idx] for name, idx in self.splits.items()}

        self.model = self._build_model()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=float(self.config["lr"]), weight_decay=float(self.config["weight_decay"]),
            fused=True,
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, "min", factor=float(self.config["lr_factor"]), patience=int(self.config["lr_patience"]),
            min_lr=float(self.config["lr_min"]),
        )
        self.weight_ema = weight_ema(self.model, self.config.get("weight_ema_decay"))
        self.loss_ema = LossEMA(self.config["ema_alpha_y"], self.config["ema_alpha_neg_dy"])
        self.epoch, self.step = 0, 0
        self.best = math.inf
        self.best_epoch: Optional[int] = None  # the epoch of the best.ckpt this run wrote
        self.early_stopping = {"best": math.inf, "wait": 0, "stopped": False}
        self.history: list[dict] = []
        if state is not None:
            self._restore(checkpoint, state)

        predictor = _Predictor(self.model, self.derivative, bool(self.config["charge"]))
        self.predictor: nn.Module = predictor
        if self.dist.world_size > 1:
            device_ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            self.predictor = DistributedDataParallel(predictor, device_ids=device_ids)
        self.sampler = DistributedSampler(
            self.frames["train"], num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True,
            seed=int(self.config["seed"]),
        )
        self.train_loader = DataLoader(
            self.frames["train"], batch_size=int(self.config["batch_size"]), sampler=self.sampler,
            collate_fn=self._collate,
        )

    # -- set-up ---------------------------------------------------------------------------------

    def _prepare_log_dir(self, resume: bool) -> None:
        """Create ``log_dir``; ValueError when it cannot be written or, for a fresh run, holds
        another run's outputs. Removes temporaries an interrupted checkpoint write left."""
        path = self.log_dir
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"log_dir {path} exists and is not a folder")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise ValueError(f"log_dir {path} cannot be created: {error.strerror}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"log_dir {path} is not writable")
        if not resume:
            found = sorted({os.path.basename(f) for pattern in RUN_OUTPUTS for f in glob.glob(os.path.join(path, pattern))})
            if found:
                shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
                raise ValueError(f"log_dir {path} holds the outputs of an earlier run ({shown}); continue that run "
                                 "with --resume, or choose another log_dir (files there are never overwritten)")
        remove_stale_temporaries(path)

    def _check_charges(self, frames: list[Frame]) -> None:
        """A model that reads total charges must get them: charged data with ``charge: false`` is an error."""
        if self.config["charge"] or canonical_name(self.config["model"]) not in _READS_TOTAL_CHARGE:
            return
        charged = next((f for f in frames if f.charge != 0), None)
        if charged is not None:
            raise ValueError(f"{charged.source} has total charge {charged.charge:g}, but charge is false, so "
                             f"{self.config['model']} would be trained as if every system were neutral; set charge: true")

    def _check_monitors(self) -> None:
        loss = self.train_loss_name
        known = {f"train_total_{loss}", f"val_total_{loss}", "val_total_l1_loss"}
        monitors = {
            "checkpoint_monitor": self.config["checkpoint_monitor"],
            "early_stopping_monitor": self.config["early_stopping_monitor"],
            "lr_metric": f"{self.config['lr_metric']}_total_{loss}",
        }
        for key, name in monitors.items():
            if name not in known:
                raise ValueError(f"{key} names {name!r}, which is not logged; logged totals: {', '.join(sorted(known))}")

    def _resume_source(self, resume: bool) -> tuple[Optional[dict], Optional[dict]]:
        """The checkpoint to continue from and its resume state: ``log_dir/last.ckpt`` with
        ``resume``, else ``load_model`` unless ``reset_trainer`` (then only its weights are used)."""
        if resume:
            path = os.path.join(self.log_dir, "last.ckpt")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--resume: no checkpoint to resume from at {path}")
        elif self.config.get("load_model") and not self.config["reset_trainer"]:
            path = self.config["load_model"]
        else:
            return None, None
        try:
            checkpoint = load_checkpoint(path)
        except ForeignCheckpoint as error:
            if resume:
                raise ForeignCheckpoint(f"--resume: {error}") from None
            checkpoint = {}  # not fastnnp's: _build_model reads its weights (or says why it cannot)
        except CheckpointError as error:
            raise CheckpointError(f"--resume: {error}" if resume else f"load_model: {error}") from None
        if "fastnnp" not in checkpoint:
            if resume:
                raise ValueError(f"--resume: {path} holds no fastnnp training state to resume from")
            warnings.warn(f"load_model: {path} has no fastnnp training state; training starts from its weights "
                          "at epoch 0 with a fresh optimizer", stacklevel=3)
            return None, None
        if resume:
            self._check_unchanged(checkpoint["hyper_parameters"], path)
        return checkpoint, checkpoint["fastnnp"]

    def _check_unchanged(self, saved: dict, path: str) -> None:
        """ValueError naming the keys of :data:`FIXED_ON_RESUME` the config changes from ``saved``."""
        changed = [f"{k} {saved.get(k)!r} -> {self.config.get(k)!r}" for k in FIXED_ON_RESUME
                   if saved.get(k) != self.config.get(k)]
        if changed:
            raise ValueError(f"--resume: the config changes what {path} fixes ({'; '.join(changed)}); resume with "
                             "that run's settings (its input.yaml), or start a new run in another log_dir with "
                             "load_weights")

    def _splits(self, n_frames: int, state: Optional[dict]) -> dict[str, np.ndarray]:
        if state is not None:
            idx = tuple(state["splits"][k].numpy() for k in ("train", "val", "test"))
            if max((part.max() for part in idx if part.size), default=-1) >= n_frames:
                raise ValueError(f"the checkpoint's splits index beyond the {n_frames} frames of the data set")
        else:
            idx = make_splits(n_frames, self.config["train_size"], self.config["val_size"], self.config["test_size"],
                              int(self.config["seed"]), self.config["splits"])
        if len(idx[0]) == 0:
            raise ValueError("the training split is empty")
        monitors = (self.config["checkpoint_monitor"], self.config["early_stopping_monitor"], self.config["lr_metric"])
        if len(idx[1]) == 0 and any(m.startswith("val") for m in monitors):
            raise ValueError("the validation split is empty, but checkpoint_monitor, early_stopping_monitor or "
                             "lr_metric needs it")
        if self.is_main:
            np.savez(os.path.join(self.log_dir, "splits.npz"), idx_train=idx[0], idx_val=idx[1], idx_test=idx[2])
        return dict(zip(("train", "val", "test"), idx, strict=True))

    def _new_model(self) -> NeuralPotential:
        """A freshly initialised model of the config's architecture, on the CPU."""
        hparams = dict(self.config, output_mlp_num_layers=0)
        box = hparams.get("box_vecs")
        return build_model(hparams, derivative=self.derivative,
                           default_box=None if box is None else torch.as_tensor(box, dtype=torch.float64))

    def _build_model(self) -> NeuralPotential:
        if int(self.config.get("output_mlp_num_layers") or 0) != 0:
            warnings.warn(
                "output_mlp_num_layers is ignored: TorchMD-Net builds the output head without hidden layers "
                "whatever it says (TorchMD-Net issue #343), and so does fastnnp, so that its checkpoints load there",
                stacklevel=3,
            )
        model = self._new_model()
        weights = self.config.get("load_weights") or self.config.get("load_model")
        if weights:
            try:
                model.load_state_dict(read_checkpoint(weights).state_dict)
            except RuntimeError as error:  # load_state_dict: missing, unexpected or differently shaped tensors
                details = " ".join(line.strip() for line in str(error).splitlines()[1:3])
                details = details if len(details) <= 300 else details[:300] + " ..."
                raise ValueError(f"the weights of {weights} do not fit the model the config describes: {details}") from None
        elif self.config["standardize"]:
            energies = torch.tensor([f.energy for f in self.frames["train"] if f.energy is not None], dtype=torch.float64)
            if len(energies) > 1:
                model.mean.fill_(energies.mean().item())
                model.std.fill_(energies.std().item())
        return model.to(self.dist.device)

    def _restore(self, checkpoint: dict, state: dict) -> None:
        self.model.load_state_dict(state["raw_weights"] if state.get("raw_weights") is not None
                                   else model_state_from(checkpoint))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.weight_ema is not None:
            if state.get("weight_ema") is None:
                raise ValueError("weight_ema_decay is set, but the checkpoint to resume from has no weight EMA")
            self.weight_ema.load_state_dict(state["weight_ema"])
        self.loss_ema.load_state_dict(state["loss_ema"], self.dist.device)
        self.epoch, self.step = int(state["epoch"]) + 1, int(state["step"])
        self.best = float(state["best"])
        self.best_epoch = state.get("best_epoch")
        self.early_stopping = dict(state["early_stopping"])
        self.history = [dict(row) for row in state["history"]]
        set_rng_state(state["rng"])

    def _collate(self, frames: list[Frame]) -> Batch:
        return collate(frames, self.dtype)

    def _to_device(self, batch: Batch) -> Batch:
        if self.dist.device.type == "cpu":
            return batch
        return Batch(*(t.to(self.dist.device, non_blocking=True) if t is not None else None for t in batch))

    def _eval_loader(self, name: str) -> DataLoader:
        shard = self.frames[name][self.dist.rank::self.dist.world_size]
        return DataLoader(shard, batch_size=int(self.config["inference_batch_size"]), collate_fn=self._collate)

    # -- losses -----------------------------------------------------------------------------------

    def _losses(self, pred: Prediction, batch: Batch, loss_fns: list[tuple[str, Callable[..., Tensor]]],
                stage: str, meter: _Meter) -> Tensor:
        """Record every loss of ``loss_fns`` in ``meter``; return the weighted total of the last one."""
        targets = _targets(batch)
        for name, fn in loss_fns:
            # 0 * energy: every parameter takes part in the loss (DistributedDataParallel needs it)
            total = 0 * pred.y.sum()
            for kind in _KINDS:
                predicted, target = getattr(pred, kind), targets[kind]
                value = pred.y.new_zeros(())
                if predicted is not None and target is not None:
                    value = self.loss_ema(stage, kind, name, fn(predicted, target))
                    total = total + self.weights[kind] * value
                if self.weights[kind] > 0:
                    meter.loss(f"{stage}_{kind}_{name}", value)
            meter.loss(f"{stage}_total_{name}", total)
        return total

    def _loss_fns(self, stage: str) -> list[tuple[str, Callable[..., Tensor]]]:
        l1 = ("l1_loss", F.l1_loss)
        if stage == "test":
            return [l1]
        arg = self.config.get("train_loss_arg") or {}
        fn = LOSS_FUNCTIONS[self.train_loss_name]
        train = (self.train_loss_name, lambda p, t: fn(p, t, **arg))
        return [train] if stage == "train" else [l1, train]

    def train_loss(self, batch: Batch, meter: Optional[_Meter] = None) -> Tensor:
        """The weighted training loss of ``batch`` (on this process's device), graph kept for backward."""
        return self._losses(self.predictor(batch), batch, self._loss_fns("train"), "train", meter or _Meter())

    # -- epochs -----------------------------------------------------------------------------------

    def _train_epoch(self, meter: _Meter) -> None:
        self.sampler.set_epoch(self.epoch)
        self.predictor.train()
        warmup, lr = int(self.config["lr_warmup_steps"]), float(self.config["lr"])
        clip = float(self.config["gradient_clipping"] or 0.0)
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch}", leave=False, disable=not self.progress,
                   dynamic_ncols=True)
        for batch in bar:
            if self.step < warmup:
                for group in self.optimizer.param_groups:
                    group["lr"] = min(1.0, (self.step + 1) / warmup) * lr
            batch = self._to_device(batch)
            loss = self.train_loss(batch, meter)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.weight_ema is not None:
                self.weight_ema.update_parameters(self.model)
            self.step += 1
            if self.progress and self.step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.4g}")
            if self.on_step is not None:
                self.on_step(self.step)

    def eval_model(self) -> NeuralPotential:
        """The weights validation, test and checkpoints use: the weight EMA if enabled, else the model."""
        return self.weight_ema.module if self.weight_ema is not None else self.model

    def evaluate(self, name: str, meter: _Meter, model: Optional[NeuralPotential] = None) -> None:
        """Losses and errors of split ``name`` ("val" or "test") into ``meter``."""
        model = model or self.eval_model()
        model.eval()
        loss_fns = self._loss_fns(name)
        for batch in self._eval_loader(name):
            batch = self._to_device(batch)
            pred = predict(model, batch, self.derivative, bool(self.config["charge"]), create_graph=False)
            self._losses(pred, batch, loss_fns, name, meter)
            for kind, target in _targets(batch).items():
                if getattr(pred, kind) is not None and target is not None:
                    meter.errors(f"{name}_{_ERROR_NAMES[kind]}", getattr(pred, kind), target)

    def _end_epoch(self, metrics: dict[str, float]) -> bool:
        """Scheduler, early stopping and checkpoints after an epoch; True when training should stop."""
        self.scheduler.step(metrics[f"{self.config['lr_metric']}_total_{self.train_loss_name}"])
        stop_value, state = metrics[self.config["early_stopping_monitor"]], self.early_stopping
        if stop_value < state["best"]:
            state.update(best=stop_value, wait=0)
        else:
            state["wait"] += 1
        state["stopped"] = state["wait"] >= int(self.config["early_stopping_patience"])
        monitored = metrics[self.config["checkpoint_monitor"]]
        improved = monitored < self.best
        if improved:
            self.best, self.best_epoch = monitored, self.epoch
        self.history.append(metrics)
        if self.is_main:
            self._write_outputs(improved)
        if self.dist.world_size > 1:
            dist.barrier()
        return state["stopped"]

    def _resume_state(self) -> dict:
        splits = {k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in self.splits.items()}
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weight_ema": None if self.weight_ema is None else self.weight_ema.state_dict(),
            "raw_weights": None if self.weight_ema is None else self.model.state_dict(),
            "loss_ema": self.loss_ema.state_dict(),
            "rng": rng_state(),
            "splits": splits,
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "early_stopping": dict(self.early_stopping),
            "history": [dict(row) for row in self.history],
        }

    def _write_outputs(self, improved: bool) -> None:
        self._write_csv()
        model = self.eval_model()
        if improved:
            save_atomic(build_checkpoint(model, self.config, self.epoch, self.step), os.path.join(self.log_dir, "best.ckpt"))
        last = build_checkpoint(model, self.config, self.epoch, self.step, self._resume_state())
        save_atomic(last, os.path.join(self.log_dir, "last.ckpt"))
        interval = int(self.config["save_interval"] or 0)
        if interval > 0 and (self.epoch + 1) % interval == 0:
            save_atomic(last, os.path.join(self.log_dir, f"epoch={self.epoch}.ckpt"))

    def _write_csv(self) -> None:
        columns = list(_LEADING_COLUMNS)
        columns += sorted({k for row in self.history for k in row} - set(columns))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.history)
        path = os.path.join(self.log_dir, "metrics.csv")
        with open(path + ".tmp", "w") as f:
            f.write(text.getvalue())
        os.replace(path + ".tmp", path)

    # -- the run ------------------------------------------------------------------------------------

    def fit(self) -> dict[str, float]:
        """Train for the remaining epochs, then test the best weights; returns the test metrics."""
        if self.is_main:
            with open(os.path.join(self.log_dir, "input.yaml"), "w") as f:
                yaml.safe_dump(self.config, f)
        stopped = self.early_stopping["stopped"]
        try:
            with _deterministic_on_cpu(self.dist.device):
                while self.epoch < int(self.config["num_epochs"]) and not stopped:
                    stopped = self._epoch()
                return self.test()
        finally:
            if self.dist.owns_group:
                self._leave_group()

    def _leave_group(self) -> None:
        """Drop the DistributedDataParallel wrapper, then the process group. The wrapper's reducer
        holds the group; left to the interpreter's exit, its gloo threads are torn down after the group
        and the process aborts ("terminate called without an active exception")."""
        self.predictor = self.predictor.module
        gc.collect()
        dist.destroy_process_group()

    def _epoch(self) -> bool:
        """Train one epoch, validate (and test every ``test_interval``), log and checkpoint; True: stop."""
        start = time.perf_counter()
        meter = _Meter()
        self._train_epoch(meter)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.splits["val"].size:
            self.evaluate("val", meter)
        interval = int(self.config["test_interval"])
        if self.splits["test"].size and interval > 0 and self.epoch > 0 and self.epoch % interval == 0:
            self.evaluate("test", meter)
        metrics = {"epoch": self.epoch, "lr": lr, "step": self.step, **meter.result(self.dist.world_size)}
        metrics["epoch_time_s"] = time.perf_counter() - start
        self._check_finite(metrics)
        stopped = self._end_epoch(metrics)
        self._report_epoch(metrics)
        self.epoch += 1
        return stopped

    def _check_finite(self, metrics: dict[str, float]) -> None:
        """:class:`TrainingDiverged` when a training or validation loss of the epoch is not finite
        (after logging the epoch's row; no checkpoint is written for it)."""
        bad = [k for k, v in metrics.items() if k.startswith(("train_total_", "val_total_")) and not math.isfinite(v)]
        if not bad:
            return
        self.history.append(metrics)
        if self.is_main:
            self._write_csv()
        kept = "no checkpoint was written"
        if self.epoch > 0:
            best = f"best.ckpt epoch {self.best_epoch}" if self.best_epoch is not None else "no best.ckpt"
            kept = f"last.ckpt holds epoch {self.epoch - 1}, {best}"
        raise TrainingDiverged(
            f"training diverged in epoch {self.epoch} (step {self.step}): {', '.join(f'{k} = {metrics[k]}' for k in bad)}; "
            f"{kept}; the test set was not evaluated; try a lower lr, gradient_clipping or lr_warmup_steps"
        )

    def _report_epoch(self, metrics: dict[str, float]) -> None:
        if not self.progress:
            return
        shown = ["train_total_" + self.train_loss_name, "val_total_" + self.train_loss_name, "val_energy_mae",
                 "val_forces_mae", "val_stress_mae"]
        parts = [f"{k} {metrics[k]:.4g}" for k in shown if k in metrics]
        tqdm.write(f"epoch {metrics['epoch']}: " + ", ".join(parts) + f", lr {metrics['lr']:.3g} "
                   f"({metrics['epoch_time_s']:.1f} s)")

    def test(self) -> dict[str, float]:
        """Test-set metrics of the best checkpoint this run wrote (the current weights when it wrote
        none, e.g. with no epochs to train); rank 0 prints them and writes ``test_metrics.json``."""
        if not self.splits["test"].size:
            return {}
        model = self._new_model().to(self.dist.device)
        model.load_state_dict(self.eval_model().state_dict())
        source = f"weights after epoch {self.epoch - 1}, no best checkpoint" if self.epoch else "initial weights"
        if self.best_epoch is not None:
            best = os.path.join(self.log_dir, "best.ckpt")
            checkpoint = load_checkpoint(best)
            if checkpoint["epoch"] != self.best_epoch:
                raise ValueError(f"{best} holds epoch {checkpoint['epoch']}, but this run wrote it at epoch "
                                 f"{self.best_epoch}: it was replaced while the run went on")
            model.load_state_dict(model_state_from(checkpoint))
            source = f"best checkpoint, epoch {self.best_epoch}"
        meter = _Meter()
        self.evaluate("test", meter, model)
        metrics = meter.result(self.dist.world_size)
        if self.is_main:
            with open(os.path.join(self.log_dir, "test_metrics.json"), "w") as f:
                json.dump(metrics, f, indent=2, sort_keys=True)
            if self.progress:
                tqdm.write(f"test set ({source}): " + ", ".join(f"{k} {v:.5g}" for k, v in sorted(metrics.items())))
        return metrics


def train(
    config: dict,
    resume: bool = False,
    on_step: Optional[Callable[[int], None]] = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train as ``config`` says (see :class:`Trainer`); returns the test metrics of the best weights."""
    return Trainer(config, resume=resume, on_step=on_step, progress=progress).fit()
