"""fastnnp.training.config against torchmd-train 3.1.0's own argument parsing."""

import os
import warnings

import pytest
import yaml

from fastnnp.training.config import (
    APPLIED,
    IGNORED,
    KEY_HANDLING,
    NOT_APPLICABLE,
    TORCHMD_TRAIN_DEFAULTS,
    _HARMLESS,
    ConfigWarning,
    load_config,
)

torchmd_train = pytest.importorskip("torchmdnet.scripts.train")

PATH_KEYS = ("coord_files", "embed_files", "energy_files", "force_files", "log_dir", "dataset_root")


@pytest.fixture(scope="module")
def parser():
    return torchmd_train.get_argparse()


@pytest.fixture
def input_yaml(data_dir):
    return data_dir / "training" / "input.yaml"


def write_yaml(path, content: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content))
    return path


def quiet_load(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        return load_config(*args, **kwargs)


def test_defaults_are_torchmd_train_argparse(parser):
    actions = {a.dest: a.default for a in parser._actions if a.dest != "help"}
    assert set(TORCHMD_TRAIN_DEFAULTS) == set(actions)
    for key, default in actions.items():
        assert TORCHMD_TRAIN_DEFAULTS[key] == default and type(TORCHMD_TRAIN_DEFAULTS[key]) is type(default), key


def test_every_key_has_a_handling():
    assert set(KEY_HANDLING) == set(TORCHMD_TRAIN_DEFAULTS)
    assert {status for status, _ in KEY_HANDLING.values()} <= {APPLIED, IGNORED, NOT_APPLICABLE}
    assert {k for k, (status, _) in KEY_HANDLING.items() if status == IGNORED} == set(_HARMLESS)


def test_defaults_alone_warn_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        config = load_config(None)
    assert config == {**TORCHMD_TRAIN_DEFAULTS, "inference_batch_size": 32}


def test_real_input_yaml_matches_torchmd_train(parser, input_yaml):
    overrides = ["--lr", "1e-4", "--num-epochs", "3"]
    ours = quiet_load(input_yaml, overrides)
    theirs = vars(parser.parse_args(["--conf", str(input_yaml), *overrides]))
    theirs["inference_batch_size"] = theirs["inference_batch_size"] or theirs["batch_size"]
    for key in TORCHMD_TRAIN_DEFAULTS:
        if key == "conf":
            continue
        if key in PATH_KEYS and theirs[key] is not None and not os.path.isabs(os.path.expanduser(theirs[key])):
            assert ours[key] == os.path.join(str(input_yaml.parent), theirs[key]), key
        elif key == "dataset_root":
            assert ours[key] == os.path.expanduser(theirs[key])
        else:
            assert ours[key] == theirs[key] and type(ours[key]) is type(theirs[key]), key
    assert (ours["lr"], ours["num_epochs"], ours["model"], ours["y_weight"]) == (1e-4, 3, "tensornet", 0.05)


def test_unknown_keys_name_the_closest(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"lr": 1e-3, "num_epoch": 3})
    with pytest.raises(ValueError, match=r"'num_epoch'.*c\.yaml.*did you mean 'num_epochs'"):
        load_config(path)
    with pytest.raises(ValueError, match=r"'stress_weigth'.*did you mean 'stress_weight'"):
        load_config(None, ["--stress_weigth", "1"])
    with pytest.raises(ValueError, match=r"'learning_rate'.*overrides"):
        load_config(None, ["--learning_rate", "1"])
    with pytest.raises(ValueError, match="'zzzz'"):
        load_config(None, ["--zzzz", "1"])


def test_override_parsing():
    config = load_config(None, [
        "--lr", "1e-4", "--num-epochs", "3", "--derivative=false", "--remove-ref-energy",
        "--prior_model", "Atomref", "ZBL", "--box_vecs", "[[10, 0, 0], [0, 10, 0], [0, 0, 10]]",
        "--train_size", "null", "--val_size", "0.2", "--test_size", "5", "--dataset_arg", "{index: '::2'}",
        "--cutoff-upper", "4", "--ngpus", "-1",
    ])
    assert config["lr"] == 1e-4 and isinstance(config["lr"], float)
    assert config["num_epochs"] == 3 and isinstance(config["num_epochs"], int)
    assert config["derivative"] is False and config["remove_ref_energy"] is True
    assert config["prior_model"] == ["Atomref", "ZBL"]
    assert config["box_vecs"] == [[10, 0, 0], [0, 10, 0], [0, 0, 10]]
    assert (config["train_size"], config["val_size"], config["test_size"]) == (None, 0.2, 5)
    assert isinstance(config["test_size"], int) and config["dataset_arg"] == {"index": "::2"}
    assert config["cutoff_upper"] == 4 and config["ngpus"] == -1
    with pytest.raises(ValueError, match="--lr needs a value"):
        load_config(None, ["--lr"])
    with pytest.raises(ValueError, match="'3' does not follow"):
        load_config(None, ["3"])


def test_numbers_written_as_strings_in_yaml(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"lr": "1e-4", "lr_min": "1e-7", "model": "tensornet"})
    config = load_config(path)
    assert (config["lr"], config["lr_min"], config["model"]) == (1e-4, 1e-7, "tensornet")


@pytest.mark.parametrize("key, value", [
    ("num_workers", 4), ("redirect", True), ("wandb_use", True), ("wandb_name", "x"),
    ("wandb_resume_from_id", "abc"), ("tensorboard_use", True), ("dataset_preload_limit", 10),
    ("static_shapes", True),
])
def test_ignored_keys_warn_when_they_would_matter(tmp_path, key, value):
    path = write_yaml(tmp_path / "c.yaml", {key: value})
    with pytest.warns(ConfigWarning, match=f"{key}={value!r} is ignored"):
        load_config(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        load_config(write_yaml(tmp_path / "d.yaml", {key: TORCHMD_TRAIN_DEFAULTS[key] if key != "num_workers" else 0}))


def test_devices_and_fastnnp_only_settings_warn(monkeypatch):
    import torch

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(ConfigWarning, match="ngpus=1 is ignored: no GPU"):
        load_config(None, ["--ngpus", "1"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.warns(ConfigWarning, match="ngpus=2.*torchrun"):
        load_config(None, ["--ngpus", "2"])
    with pytest.warns(ConfigWarning, match="num_nodes=2.*torchrun"):
        load_config(None, ["--num_nodes", "2"])
    monkeypatch.setenv("WORLD_SIZE", "4")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        load_config(None, ["--ngpus", "2", "--num_nodes", "2"])
    with pytest.warns(ConfigWarning, match="stress_weight is fastnnp-only"):
        config = load_config(None, ["--stress_weight", "1e-2"])
    assert config["stress_weight"] == 0.01 and "weight_ema_decay" not in config
    with pytest.warns(ConfigWarning, match="'ASE' is fastnnp-only"):
        load_config(None, ["--dataset", "ASE", "--dataset_root", "x.extxyz"])
    with pytest.warns(ConfigWarning, match="box_files.*fastnnp-only"):
        load_config(None, ["--dataset", "Custom", "--dataset_arg", "{box_files: b.npy}"])


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path):
    folder = tmp_path / "run"
    path = write_yaml(folder / "c.yaml", {
        "coord_files": "data/*_coords.npy", "embed_files": "/abs/*_embed.npy", "log_dir": "logs",
        "splits": "splits.npz", "load_weights": "~/w.ckpt", "dataset_root": "a.h5;/abs/b.h5",
        "dataset_arg": {"box_files": "data/*_box.npy", "index": ":"}, "dataset": "Custom",
    })
    config = quiet_load(path, ["--energy_files", "e/*.npy"])
    assert config["coord_files"] == str(folder / "data/*_coords.npy")
    assert config["embed_files"] == "/abs/*_embed.npy"
    assert config["log_dir"] == str(folder / "logs") and config["splits"] == str(folder / "splits.npz")
    assert config["load_weights"] == os.path.expanduser("~/w.ckpt")
    assert config["dataset_root"] == f"{folder / 'a.h5'};/abs/b.h5"
    assert config["dataset_arg"] == {"box_files": str(folder / "data/*_box.npy"), "index": ":"}
    assert config["energy_files"] == "e/*.npy"
