"""Tolerances for agreement with TorchMD-Net (the foundation issue's acceptance bounds), and the
shipped references' inputs."""

import numpy as np
import torch


def assert_matches(energy, forces, ref_energy, ref_forces, dtype: torch.dtype) -> None:
    """fp32: |ΔE| <= 1e-5·max(1,|E|), max|ΔF| <= 1e-4·max(1, max|F|); fp64: 1e-9 relative."""
    energy = np.asarray(energy.detach().cpu() if torch.is_tensor(energy) else energy, dtype=np.float64)
    forces = np.asarray(forces.detach().cpu() if torch.is_tensor(forces) else forces, dtype=np.float64)
    ref_energy = np.asarray(ref_energy, dtype=np.float64).reshape(energy.shape)
    ref_forces = np.asarray(ref_forces, dtype=np.float64).reshape(forces.shape)
    if dtype == torch.float64:
        e_tol = 1e-9 * np.maximum(1.0, np.abs(ref_energy))
        f_tol = 1e-9 * max(1.0, np.abs(ref_forces).max())
    else:
        e_tol = 1e-5 * np.maximum(1.0, np.abs(ref_energy))
        f_tol = 1e-4 * max(1.0, np.abs(ref_forces).max())
    e_err = np.abs(energy - ref_energy)
    f_err = np.abs(forces - ref_forces).max()
    assert (e_err <= e_tol).all(), f"energy differs by up to {e_err.max():.3e} (tolerance {e_tol.min():.1e})"
    assert f_err <= f_tol, f"forces differ by up to {f_err:.3e} (tolerance {f_tol:.1e})"


def evaluate_reference(model, ref, prefix: str, dtype: torch.dtype):
    """``model`` on the inputs of a ``reference.npz``: the molecules (prefix "") or the box ("pbc_")."""
    z = torch.as_tensor(ref[f"{prefix}z"])
    pos = torch.as_tensor(ref[f"{prefix}pos"], dtype=dtype)
    if prefix:
        batch = torch.zeros(len(z), dtype=torch.long)
        box = torch.as_tensor(ref["pbc_box"], dtype=dtype)
    else:
        batch = torch.as_tensor(ref["batch"])
        box = None
    return model(z, pos, batch, box=box)
