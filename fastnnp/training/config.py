"""Training configuration with torchmd-train 3.1.0's keys and defaults.

``load_config`` builds one dict: torchmd-train's defaults, then a YAML file (as written by
``torchmd-train`` or by hand), then command-line style overrides. Every key torchmd-train
accepts is accepted; any other key is an error. How each key is handled here:

- applied: it has the effect it has in torchmd-train (in this package's data loading, or in the
  trainer that reads the config);
- ignored: torchmd-train would act on it but fastnnp does not; a ``ConfigWarning`` names the key
  when it is given with a value that would make a difference;
- not-applicable: it has no effect in torchmd-train either, or it names the config file itself.

``KEY_HANDLING`` below is that table, one entry per key. Differences from torchmd-train:

- Relative paths in the YAML file resolve against the file's folder (torchmd-train resolves them
  against the working directory); paths in overrides stay relative to the working directory;
  ``~`` is expanded in both.
- Override values are parsed with ``yaml.safe_load``, so ``--derivative false`` is False
  (torchmd-train's ``type=bool`` turns any non-empty string into True). Numeric keys given as
  strings such as ``1e-4`` (which YAML 1.1 reads as a string) become numbers, as torchmd-train's
  ``type=float`` and ``number`` make them (``1`` is a count of samples, ``1.0`` a fraction).
- ``inference_batch_size: null`` becomes ``batch_size``, as in torchmd-train's ``get_args``.
- ``dataset: ASE`` and the Custom ``dataset_arg`` keys ``box_files``/``stress_files`` are
  fastnnp-only (see ``fastnnp.training.data``), as are the keys of ``FASTNNP_KEYS``; they are
  accepted with a warning that torchmd-train cannot read such a config. A fastnnp key appears in
  the returned dict only when given (read it with ``config.get``).
- ``CREATE_MODEL_KEYS`` (TensorNet2's ``q_dim``, ``q_weights``, ``coulomb_*``, ``repulsion``) and
  the values ``model: tensornet2`` and ``output_model: ScalarPlusWeightedCoulomb`` are read by
  TorchMD-Net's ``create_model`` and ``load_model`` but not offered by ``torchmd-train``'s command
  line; they are accepted with the same warning and, like fastnnp keys, appear only when given.
- Values are checked: numeric keys must be numbers, boolean keys booleans, path and glob keys
  one string (a list, such as a glob the shell expanded, is an error); a YAML syntax error is
  a ValueError naming the file, line and column.
"""

from __future__ import annotations

import difflib
import os
import warnings
from typing import Any, Sequence

import torch
import yaml

# Every destination of ``torchmdnet.scripts.train.get_argparse()`` (3.1.0), in its order, with its default.
TORCHMD_TRAIN_DEFAULTS: dict[str, Any] = {
    "load_model": None,
    "conf": None,
    "num_epochs": 300,
    "batch_size": 32,
    "inference_batch_size": None,
    "lr": 1e-4,
    "lr_patience": 10,
    "lr_metric": "val",
    "lr_min": 1e-6,
    "lr_factor": 0.8,
    "lr_warmup_steps": 0,
    "early_stopping_patience": 30,
    "early_stopping_monitor": "val_total_mse_loss",
    "reset_trainer": False,
    "weight_decay": 0.0,
    "ema_alpha_y": 1.0,
    "ema_alpha_neg_dy": 1.0,
    "ngpus": -1,
    "num_nodes": 1,
    "precision": 32,
    "log_dir": "/tmp/logs",
    "splits": None,
    "train_size": None,
    "val_size": 0.05,
    "test_size": 0.1,
    "test_interval": -1,
    "save_interval": 10,
    "seed": 1,
    "num_workers": 4,
    "redirect": False,
    "gradient_clipping": 0.0,
    "remove_ref_energy": False,
    "checkpoint_monitor": "val_total_mse_loss",
    "load_weights": None,
    "dataset": None,
    "dataset_root": "~/data",
    "dataset_arg": None,
    "coord_files": None,
    "embed_files": None,
    "energy_files": None,
    "force_files": None,
    "dataset_preload_limit": 1024,
    "y_weight": 1.0,
    "neg_dy_weight": 1.0,
    "train_loss": "mse_loss",
    "train_loss_arg": None,
    "model": "graph-network",
    "output_model": "Scalar",
    "output_mlp_num_layers": 0,
    "prior_model": None,
    "charge": False,
    "spin": False,
    "embedding_dimension": 256,
    "num_layers": 6,
    "num_rbf": 64,
    "activation": "silu",
    "rbf_type": "expnorm",
    "trainable_rbf": False,
    "neighbor_embedding": False,
    "aggr": "add",
    "distance_influence": "both",
    "attn_activation": "silu",
    "num_heads": 8,
    "vector_cutoff": False,
    "equivariance_invariance_group": "O(3)",
    "box_vecs": None,
    "static_shapes": False,
    "derivative": False,
    "cutoff_lower": 0.0,
    "cutoff_upper": 5.0,
    "atom_filter": -1,
    "max_z": 100,
    "max_num_neighbors": 32,
    "standardize": False,
    "reduce_op": "add",
    "wandb_use": False,
    "wandb_name": "training",
    "wandb_project": "training_",
    "wandb_resume_from_id": None,
    "tensorboard_use": False,
}

APPLIED, IGNORED, NOT_APPLICABLE = "applied", "ignored", "not-applicable"

_TRAINER = "trainer"
_MODEL = "model hyper-parameter"
# key: (handling, where or why)
KEY_HANDLING: dict[str, tuple[str, str]] = {
    "load_model": (APPLIED, f"{_TRAINER}: resume from this checkpoint; path resolved"),
    "conf": (NOT_APPLICABLE, "the YAML file is load_config's `path`"),
    "num_epochs": (APPLIED, _TRAINER),
    "batch_size": (APPLIED, _TRAINER),
    "inference_batch_size": (APPLIED, f"{_TRAINER}; null -> batch_size"),
    "lr": (APPLIED, _TRAINER),
    "lr_patience": (APPLIED, _TRAINER),
    "lr_metric": (APPLIED, _TRAINER),
    "lr_min": (APPLIED, _TRAINER),
    "lr_factor": (APPLIED, _TRAINER),
    "lr_warmup_steps": (APPLIED, _TRAINER),
    "early_stopping_patience": (APPLIED, _TRAINER),
    "early_stopping_monitor": (APPLIED, _TRAINER),
    "reset_trainer": (APPLIED, _TRAINER),
    "weight_decay": (APPLIED, _TRAINER),
    "ema_alpha_y": (APPLIED, _TRAINER),
    "ema_alpha_neg_dy": (APPLIED, _TRAINER),
    "ngpus": (APPLIED, f"{_TRAINER}; warns when GPUs are asked for but none is visible, or >1 without torchrun"),
    "num_nodes": (APPLIED, f"{_TRAINER}; warns when >1 without torchrun"),
    "precision": (APPLIED, f"{_TRAINER}: 32 -> float32, 64 -> float64"),
    "log_dir": (APPLIED, f"{_TRAINER}; path resolved"),
    "splits": (APPLIED, "data.make_splits; path resolved"),
    "train_size": (APPLIED, "data.make_splits"),
    "val_size": (APPLIED, "data.make_splits"),
    "test_size": (APPLIED, "data.make_splits"),
    "test_interval": (APPLIED, _TRAINER),
    "save_interval": (APPLIED, _TRAINER),
    "seed": (APPLIED, f"data.make_splits and {_TRAINER}"),
    "num_workers": (IGNORED, "the data set is held in memory and batches are built in the main process"),
    "redirect": (IGNORED, "stdout and stderr are not redirected to log_dir/log"),
    "gradient_clipping": (APPLIED, _TRAINER),
    "remove_ref_energy": (APPLIED, "data.load_frames: an error, as no supported data set has reference energies"),
    "checkpoint_monitor": (APPLIED, _TRAINER),
    "load_weights": (APPLIED, f"{_TRAINER}; path resolved"),
    "dataset": (APPLIED, "data.load_frames: Custom, HDF5, or ASE (fastnnp-only)"),
    "dataset_root": (APPLIED, "data.load_frames (HDF5, ASE); path(s) resolved"),
    "dataset_arg": (APPLIED, "data.load_frames (HDF5, ASE, fastnnp-only Custom extras)"),
    "coord_files": (APPLIED, "data.load_frames (Custom); glob resolved"),
    "embed_files": (APPLIED, "data.load_frames (Custom); glob resolved"),
    "energy_files": (APPLIED, "data.load_frames (Custom); glob resolved"),
    "force_files": (APPLIED, "data.load_frames (Custom); glob resolved"),
    "dataset_preload_limit": (IGNORED, "the whole data set is always loaded into memory"),
    "y_weight": (APPLIED, f"{_TRAINER}; data.load_frames requires energies when > 0"),
    "neg_dy_weight": (APPLIED, f"{_TRAINER}; data.load_frames requires forces when > 0 with derivative"),
    "train_loss": (APPLIED, _TRAINER),
    "train_loss_arg": (APPLIED, _TRAINER),
    "model": (APPLIED, _MODEL),
    "output_model": (APPLIED, _MODEL),
    "output_mlp_num_layers": (APPLIED, _MODEL),
    "prior_model": (APPLIED, _MODEL),
    "charge": (APPLIED, _MODEL),
    "spin": (APPLIED, _MODEL),
    "embedding_dimension": (APPLIED, _MODEL),
    "num_layers": (APPLIED, _MODEL),
    "num_rbf": (APPLIED, _MODEL),
    "activation": (APPLIED, _MODEL),
    "rbf_type": (APPLIED, _MODEL),
    "trainable_rbf": (APPLIED, _MODEL),
    "neighbor_embedding": (APPLIED, _MODEL),
    "aggr": (APPLIED, _MODEL),
    "distance_influence": (APPLIED, _MODEL),
    "attn_activation": (APPLIED, _MODEL),
    "num_heads": (APPLIED, _MODEL),
    "vector_cutoff": (APPLIED, _MODEL),
    "equivariance_invariance_group": (APPLIED, _MODEL),
    "box_vecs": (APPLIED, f"{_MODEL}; data.load_frames: the cell of every frame without one"),
    "static_shapes": (IGNORED, "TorchMD-Net's CUDA-graph shapes; fastnnp's kernels size their own buffers"),
    "derivative": (APPLIED, _MODEL),
    "cutoff_lower": (APPLIED, _MODEL),
    "cutoff_upper": (APPLIED, _MODEL),
    "atom_filter": (APPLIED, _MODEL),
    "max_z": (APPLIED, _MODEL),
    "max_num_neighbors": (APPLIED, _MODEL),
    "standardize": (APPLIED, _TRAINER),
    "reduce_op": (APPLIED, _MODEL),
    "wandb_use": (IGNORED, "no Weights & Biases logging"),
    "wandb_name": (IGNORED, "no Weights & Biases logging"),
    "wandb_project": (IGNORED, "no Weights & Biases logging"),
    "wandb_resume_from_id": (IGNORED, "no Weights & Biases logging"),
    "tensorboard_use": (IGNORED, "no TensorBoard logging"),
}

# Values of ignored keys under which torchmd-train behaves as fastnnp does (no warning).
_HARMLESS: dict[str, tuple[Any, ...]] = {
    "num_workers": (0,),
    "redirect": (False,),
    "dataset_preload_limit": (TORCHMD_TRAIN_DEFAULTS["dataset_preload_limit"],),
    "static_shapes": (False,),
    "wandb_use": (False,),
    "wandb_name": (TORCHMD_TRAIN_DEFAULTS["wandb_name"],),
    "wandb_project": (TORCHMD_TRAIN_DEFAULTS["wandb_project"],),
    "wandb_resume_from_id": (None,),
    "tensorboard_use": (False,),
}

# Keys torchmd-train does not know that fastnnp's trainer reads: key -> what it does.
FASTNNP_KEYS: dict[str, str] = {
    "stress_weight": "trainer: weight of the stress loss on periodic frames with stress labels",
    "weight_ema_decay": "trainer: decay of an exponential moving average of the weights",
}

# Keys TorchMD-Net's create_model reads (with ``args.get``) that torchmd-train's parser lacks:
# key -> what it does. All belong to TensorNet2 and its ScalarPlusWeightedCoulomb head.
CREATE_MODEL_KEYS: dict[str, str] = {
    "q_dim": "TensorNet2: charge channels per prediction (0: no charges)",
    "q_weights": "ScalarPlusWeightedCoulomb: one weight (or q_dim weights) per charge prediction, num_layers + 1",
    "coulomb_cutoff": "ScalarPlusWeightedCoulomb: reaction-field cutoff in Å (null: all pairs, open systems only)",
    "coulomb_max_num_neighbors": "ScalarPlusWeightedCoulomb: TorchMD-Net's Coulomb neighbour-list capacity",
    "coulomb_neighbor_strategy": "ScalarPlusWeightedCoulomb: TorchMD-Net's Coulomb neighbour-list strategy",
    "repulsion": "TensorNet2: add the in-model ZBL repulsion to the energy",
}
# Values torchmd-train's --model / --output-model choices lack (create_model builds them).
_CREATE_MODEL_VALUES = {"model": ("tensornet2", "tensornetv2_alt", "tensornet-nqe"),
                        "output_model": ("ScalarPlusWeightedCoulomb",)}
# The key whose value decides whether a CREATE_MODEL_KEYS key is read (by TorchMD-Net and fastnnp).
_READ_WITH = {"q_dim": "model", "repulsion": "model", "q_weights": "output_model", "coulomb_cutoff": "output_model",
              "coulomb_max_num_neighbors": "output_model", "coulomb_neighbor_strategy": "output_model"}
_EXTRA_KEYS = {**FASTNNP_KEYS, **CREATE_MODEL_KEYS}
# Every key that describes the model (what a checkpoint's weights belong to).
MODEL_KEYS = (*[k for k, (_, where) in KEY_HANDLING.items() if where.startswith(_MODEL)], *CREATE_MODEL_KEYS)

_PATH_KEYS = ("load_model", "log_dir", "splits", "load_weights", "coord_files", "embed_files",
              "energy_files", "force_files")
_CUSTOM_EXTRA_FILES = ("box_files", "stress_files")
_NUMERIC_KEYS = frozenset(
    [k for k, v in TORCHMD_TRAIN_DEFAULTS.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    + ["inference_batch_size", "train_size", *FASTNNP_KEYS, "q_dim", "coulomb_cutoff", "coulomb_max_num_neighbors"]
)
_BOOLEAN_KEYS = frozenset([k for k, v in TORCHMD_TRAIN_DEFAULTS.items() if isinstance(v, bool)] + ["repulsion"])
# Keys that may be null beside those whose default is null (a null split size is "the rest"; the
# trainer reads the others' null as "off"; the data readers that need dataset_root say so);
# precision is checked by model_dtype.
_NULLABLE = frozenset([k for k, v in TORCHMD_TRAIN_DEFAULTS.items() if v is None]
                      + ["val_size", "test_size", "gradient_clipping", "save_interval", "dataset_root", *_EXTRA_KEYS])
FASTNNP_DATASETS = ("ASE",)


class ConfigWarning(UserWarning):
    """A config key is accepted but has no effect here, or makes the config fastnnp-only."""


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> dict:
    """Return torchmd-train's defaults updated by the YAML file at ``path`` and by ``overrides``.

    ``overrides`` are command-line tokens, e.g. ``["--lr", "1e-4", "--num-epochs", "3"]``
    (``--key=value`` and dashes for underscores work too; several values make a list; a bare
    boolean key means True). Raises ValueError for a key that is neither torchmd-train's nor in
    ``FASTNNP_KEYS`` or ``CREATE_MODEL_KEYS``, for a value of the wrong type and for YAML that
    does not parse; FileNotFoundError for a missing ``path``; warns (``ConfigWarning``) about
    keys that do nothing here or that torchmd-train cannot read.
    """
    config = dict(TORCHMD_TRAIN_DEFAULTS)
    given: set[str] = set()
    if path is not None:
        from_file = _read_yaml(path)
        given |= from_file.keys()
        config.update(_resolve_paths(from_file, os.path.dirname(os.path.abspath(path))))
    from_cli = _parse_overrides(overrides)
    given |= from_cli.keys()
    config.update(_resolve_paths(from_cli, None))
    _check_types(config)
    _check_tensornet2(config, given)
    if config["inference_batch_size"] is None:
        config["inference_batch_size"] = config["batch_size"]
    for message in _inapplicable(config, given):
        warnings.warn(message, ConfigWarning, stacklevel=2)
    return config


def _check_known(keys, where: str) -> None:
    for key in keys:
        if key not in TORCHMD_TRAIN_DEFAULTS and key not in _EXTRA_KEYS:
            close = difflib.get_close_matches(key, [*TORCHMD_TRAIN_DEFAULTS, *_EXTRA_KEYS], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown config key {key!r} in {where}: neither torchmd-train nor fastnnp "
                             f"accepts it{hint}")


def _check_types(config: dict) -> None:
    """ValueError naming the first key whose value has the wrong type."""
    for key, value in config.items():
        if value is None and key in _NULLABLE:
            continue
        if key in _PATH_KEYS or key == "dataset_root":
            if not isinstance(value, str):
                raise ValueError(_path_problem(key, value))
        elif key in _BOOLEAN_KEYS and not isinstance(value, bool):
            raise ValueError(f"config key {key} must be true or false, got {value!r}")
        elif key in _NUMERIC_KEYS and key != "precision" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"config key {key} must be a number, got {value!r}")


def _check_tensornet2(config: dict, given: set[str]) -> None:
    """ValueError for a TensorNet2 key given to a model or head that does not read it, and for the
    Coulomb head without TensorNet2's charges."""
    for key in sorted(given & CREATE_MODEL_KEYS.keys()):
        decider = _READ_WITH[key]
        if config[decider] not in _CREATE_MODEL_VALUES[decider]:
            raise ValueError(f"config key {key} is read only with {decider} {' or '.join(_CREATE_MODEL_VALUES[decider])}, "
                             f"but {decider} is {config[decider]!r}")
    if config["output_model"] in _CREATE_MODEL_VALUES["output_model"] and not (config.get("q_dim") or 0) > 0:
        raise ValueError(f"output_model {config['output_model']} needs the charges of model tensornet2 with q_dim > 0 "
                         f"(model is {config['model']!r}, q_dim {config.get('q_dim')!r})")


def _path_problem(key: str, value: Any) -> str:
    if isinstance(value, list):
        shown = ", ".join(map(repr, value[:3])) + (", ..." if len(value) > 3 else "")
        return (f"config key {key} takes one path or glob pattern, got {len(value)} values ({shown}): if the "
                f"shell expanded a glob, quote it (--{key.replace('_', '-')} 'data/*.npy')")
    return f"config key {key} takes a path or glob pattern, got {value!r}"


def _read_yaml(path) -> dict:
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise FileNotFoundError(f"config file {os.fspath(path)} {what}")
    with open(path) as f:
        try:
            content = yaml.safe_load(f)
        except yaml.YAMLError as error:
            raise ValueError(f"{os.fspath(path)}: not valid YAML: {_yaml_problem(error)}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of keys to values")
    _check_known(content, os.fspath(path))
    return {k: _coerce(k, v) for k, v in content.items()}


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line for a YAML parse error: what and where (1-based line and column)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return problem if mark is None else f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


def _parse_overrides(tokens: Sequence[str]) -> dict:
    raw: dict[str, list[str]] = {}
    key = None
    for token in tokens:
        if token.startswith("--"):
            key, sep, value = token[2:].partition("=")
            key = key.replace("-", "_")
            _check_known([key], "overrides")
            raw[key] = [value] if sep else []
        elif key is None:
            raise ValueError(f"argument {token!r} does not follow a --key (one config file is read; if the shell "
                             "expanded a glob, quote it)")
        else:
            raw[key].append(token)
    parsed = {}
    for key, values in raw.items():
        if not values:
            if key not in _BOOLEAN_KEYS:
                raise ValueError(f"override --{key} needs a value")
            parsed[key] = True
        else:
            items = [_coerce(key, yaml.safe_load(v)) for v in values]
            parsed[key] = items[0] if len(items) == 1 else items
    return parsed


def _coerce(key: str, value: Any) -> Any:
    """Numbers written as strings YAML 1.1 does not read as numbers (``1e-4``) for numeric keys."""
    if key not in _NUMERIC_KEYS or not isinstance(value, str):
        return value
    if value == "None":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _resolve_paths(values: dict, base: str | None) -> dict:
    """Expand ``~`` in path values and, for a YAML file, join relative ones to its folder."""

    def resolve(p: str) -> str:
        p = os.path.expanduser(p)
        return p if base is None or os.path.isabs(p) else os.path.join(base, p)

    out = dict(values)
    for key in _PATH_KEYS:
        if isinstance(out.get(key), str):
            out[key] = resolve(out[key])
    if isinstance(out.get("dataset_root"), str):
        out["dataset_root"] = ";".join(resolve(p) for p in out["dataset_root"].split(";"))
    arg = out.get("dataset_arg")
    if isinstance(arg, str):
        arg = yaml.safe_load(arg)
        out["dataset_arg"] = arg
    if isinstance(arg, dict):
        out["dataset_arg"] = {k: resolve(v) if k in _CUSTOM_EXTRA_FILES and isinstance(v, str) else v
                              for k, v in arg.items()}
    return out


def _inapplicable(config: dict, given: set[str]) -> list[str]:
    """Messages for given keys that do nothing here, and for fastnnp-only settings."""
    messages = []
    for key, harmless in _HARMLESS.items():
        if key in given and config[key] not in harmless:
            messages.append(f"config key {key}={config[key]!r} is ignored: {KEY_HANDLING[key][1]}")
    under_torchrun = "WORLD_SIZE" in os.environ
    ngpus = config["ngpus"]
    if isinstance(ngpus, int) and ngpus > 0 and not _cuda_available():
        messages.append(f"config key ngpus={ngpus} is ignored: no GPU is visible, training runs on the CPU")
    elif isinstance(ngpus, int) and ngpus > 1 and not under_torchrun:
        messages.append(f"config key ngpus={ngpus}: fastnnp trains on one GPU per process; "
                        "launch with torchrun to use more")
    if config["num_nodes"] != 1 and not under_torchrun:
        messages.append(f"config key num_nodes={config['num_nodes']} is ignored: launch with torchrun "
                        "for multi-node training")
    for key in sorted(given & FASTNNP_KEYS.keys()):
        messages.append(f"config key {key} is fastnnp-only: torchmd-train cannot read this config")
    unoffered = [f"{key}={config[key]!r}" for key, values in _CREATE_MODEL_VALUES.items() if config[key] in values]
    unoffered += sorted(given & CREATE_MODEL_KEYS.keys())
    if unoffered:
        messages.append(f"TorchMD-Net's create_model reads {', '.join(unoffered)}, but torchmd-train does not offer "
                        "them: torchmd-train cannot read this config (TorchMD-Net's load_model reads its checkpoints)")
    if config["dataset"] in FASTNNP_DATASETS:
        messages.append(f"dataset={config['dataset']!r} is fastnnp-only: torchmd-train cannot read this config")
    arg = config["dataset_arg"]
    if config["dataset"] == "Custom" and isinstance(arg, dict):
        extra = [k for k in _CUSTOM_EXTRA_FILES if arg.get(k) is not None]
        if extra:
            messages.append(f"dataset_arg {', '.join(extra)} for a Custom data set is fastnnp-only: "
                            "torchmd-train ignores dataset_arg for Custom and would train without them")
    return messages


def _cuda_available() -> bool:
    return torch.cuda.is_available()
