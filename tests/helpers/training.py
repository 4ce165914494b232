"""Tiny torchmd-train configurations on the test data (a few frames, a few seconds per epoch)."""

import warnings

from fastnnp.training.config import load_config

from . import DATA

TRAINING = DATA / "training"
MOLECULES = TRAINING / "xtb-molecules"


def tiny_settings(log_dir, molecules: str = "*", **settings) -> dict:
    """torchmd-train settings for a tiny TensorNet on the test molecules (4 train, 2 val, 2 test frames)."""
    config = {
        "model": "tensornet", "embedding_dimension": 16, "num_layers": 1, "num_rbf": 8, "max_z": 10,
        "cutoff_upper": 4.5, "derivative": True, "dataset": "Custom",
        "coord_files": f"{MOLECULES}/{molecules}_coords.npy", "embed_files": f"{MOLECULES}/{molecules}_embed.npy",
        "energy_files": f"{MOLECULES}/{molecules}_energy.npy", "force_files": f"{MOLECULES}/{molecules}_forces.npy",
        "train_size": 4, "val_size": 2, "test_size": 2, "batch_size": 2, "inference_batch_size": 4, "num_epochs": 2,
        "num_workers": 0, "y_weight": 0.2, "neg_dy_weight": 0.8, "lr": 1e-3, "log_dir": str(log_dir),
        "test_interval": 1, "save_interval": 1,
    }
    config.update(settings)
    return config


def tiny_config(log_dir, molecules: str = "*", **settings) -> dict:
    """:func:`tiny_settings` on top of torchmd-train's defaults."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {**load_config(None), **tiny_settings(log_dir, molecules, **settings)}


def periodic_config(log_dir, **settings) -> dict:
    """Tiny float64 TensorNet on the three Cu/Au cells with stress (2 train, 1 val)."""
    folder = TRAINING / "cuau-emt"
    return tiny_config(
        log_dir, coord_files=f"{folder}/*_coords.npy", embed_files=f"{folder}/*_embed.npy",
        energy_files=f"{folder}/*_energy.npy", force_files=f"{folder}/*_forces.npy",
        dataset_arg={"box_files": f"{folder}/*_box.npy", "stress_files": f"{folder}/*_stress.npy"},
        embedding_dimension=8, max_z=80, cutoff_upper=3.0, train_size=2, val_size=1, test_size=0,
        precision=64, stress_weight=1.0, **settings,
    )


# Total charges given to the eight test molecules (none neutral), in frame order.
TOTAL_CHARGES = (1.0, -1.0, 2.0, -2.0, 1.0, -1.0, 2.0, -2.0)
# A tiny TensorNet2 with the Coulomb head: 2 charge channels, per-channel weights on the layer's prediction.
TENSORNET2 = {"model": "tensornet2", "q_dim": 2, "q_weights": [1.0, [0.5, 1.5]],
              "output_model": "ScalarPlusWeightedCoulomb", "coulomb_cutoff": None, "charge": True}


def write_charged_molecules(path) -> list:
    """The eight test molecules as extended XYZ at ``path``, with :data:`TOTAL_CHARGES`; returns the frames."""
    import ase.io
    import numpy as np
    from ase import Atoms

    images = []
    for name in ("C6H6", "CH3CH2OH"):
        coords, z = np.load(MOLECULES / f"{name}_coords.npy"), np.load(MOLECULES / f"{name}_embed.npy")
        energy, forces = np.load(MOLECULES / f"{name}_energy.npy"), np.load(MOLECULES / f"{name}_forces.npy")
        for j in range(len(coords)):
            atoms = Atoms(numbers=z, positions=coords[j])
            atoms.info["energy"], atoms.arrays["forces"] = float(energy[j].item()), forces[j].astype(np.float64)
            images.append(atoms)
    for atoms, charge in zip(images, TOTAL_CHARGES, strict=True):
        atoms.info["charge"] = charge
    ase.io.write(path, images, format="extxyz")
    return images


def charged_config(log_dir, data_path, **settings) -> dict:
    """:func:`tiny_config` for a TensorNet2 (:data:`TENSORNET2`) on :func:`write_charged_molecules`'s file."""
    custom = dict.fromkeys(("coord_files", "embed_files", "energy_files", "force_files"))
    return tiny_config(log_dir, dataset="ASE", dataset_root=str(data_path), **custom, **{**TENSORNET2, **settings})
