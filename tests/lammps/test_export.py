"""``fastnnp lammps-export`` (its :func:`add_arguments` and :func:`run`, as the main CLI calls
them) and what the ML-IAP model refuses."""

import argparse

import numpy as np
import pytest
import torch

from fastnnp.lammps import FastNNPUnified, load_unified
from fastnnp.lammps.cli import add_arguments, run
from tests.helpers import DATA
from tests.lammps.emulator import ELEMENTS, PlainData, split_domains
from tests.lammps.models import triclinic_box

CKPT = DATA / "tensornet" / "model.ckpt"


def main(argv: list) -> int:
    """What ``fastnnp lammps-export ARGV`` runs."""
    parser = argparse.ArgumentParser(prog="fastnnp lammps-export")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def test_export_writes_a_loadable_model(tmp_path, capsys):
    out = tmp_path / "model-mliap.pt"
    assert main([str(CKPT), str(out), "--elements", "H", "C", "N", "O", "--dtype", "float64"]) == 0
    printed = capsys.readouterr().out
    assert f"    pair_style mliap unified {out} 0\n    pair_coeff * * H C N O\n" in printed  # KOKKOS, exchange
    assert f"    pair_style mliap unified {out} 1\n    pair_coeff * * H C N O\n" in printed  # ghost shell
    assert "a ghost shell of 3 hops x 4.5" in printed and "comm_modify cutoff 15.5  # 13.5 + the neighbor skin" in printed
    unified = load_unified(out)
    assert isinstance(unified, FastNNPUnified)
    assert unified.element_types == ELEMENTS and unified.rcutfac == 2.25
    assert (unified.ndescriptors, unified.nparams, unified.model.dtype) == (1, 1, torch.float64)
    assert unified.atomic_numbers.tolist() == [1, 6, 7, 8]
    assert not any(p.requires_grad for p in unified.model.parameters())


def test_export_default_dtype_is_the_checkpoints(tmp_path):
    out = tmp_path / "model.pt"
    main([str(CKPT), str(out), "--elements", "C", "H", "--radial", "exact"])
    unified = load_unified(out)
    assert unified.model.dtype == torch.float32 and unified.atomic_numbers.tolist() == [6, 1]


@pytest.mark.parametrize("elements, message", [
    (["H", "Xx"], "unknown chemical symbol 'Xx'"),
    (["H", "Kr"], r"element Kr \(Z=36\) is outside the model's range \(Z < 32\)"),
    (["H", "C", "H"], "elements repeated: H"),
])
def test_export_refuses_bad_elements(tmp_path, elements, message):
    with pytest.raises(ValueError, match=message):
        main([str(CKPT), str(tmp_path / "model.pt"), "--elements", *elements, "--dtype", "float64"])
    assert not (tmp_path / "model.pt").exists()


def test_export_refuses_other_file_names(tmp_path):
    with pytest.raises(ValueError, match=r"only from \.pt or \.pth files, got .*model\.pickle"):
        main([str(CKPT), str(tmp_path / "model.pickle"), "--elements", "H"])
    assert list(tmp_path.iterdir()) == []


def test_export_needs_elements(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(CKPT), str(tmp_path / "model.pt")])
    assert "the following arguments are required: --elements" in capsys.readouterr().err


def test_ensemble_refused(tmp_path):
    with pytest.raises(ValueError, match=r"LAMMPS runs one model: give one \.ckpt file, not an ensemble"):
        main([str(tmp_path / "models.zip"), str(tmp_path / "model.pt"), "--elements", "H"])
    assert list(tmp_path.iterdir()) == []


def test_triton_backend_refused():
    from fastnnp.lammps import build_unified

    with pytest.raises(ValueError, match=r"LAMMPS pair lists run on the torch backend only \(backend='torch'\)"):
        build_unified(CKPT, ["H"], backend="triton")


def test_model_with_zbl_refused(tmp_path):
    from fastnnp.lammps import build_unified
    from tests.helpers.variants import priors_hparams
    from tests.lammps.models import tiny_checkpoint

    path = tiny_checkpoint(tmp_path, "tn", **priors_hparams("ZBL"))
    with pytest.raises(ValueError, match=r"LAMMPS needs per-atom energies: .* no priors acting after the reduction"):
        build_unified(path, ["H", "C"])


def test_unmapped_type_refused(tmp_path):
    """A LAMMPS type mapped to NULL (element index -1) or beyond the list is an error, not a guess."""
    main([str(CKPT), str(tmp_path / "m.pt"), "--elements", *ELEMENTS, "--dtype", "float64"])
    unified = load_unified(tmp_path / "m.pt")
    box = triclinic_box(n_atoms=8)
    domain = split_domains(box, (1, 1, 1), unified.cutoff, unified.cutoff, ghost_lists=True)[0]
    data = PlainData(domain)
    data.elems = np.where(np.arange(len(data.elems)) == 3, -1, data.elems).astype(np.int32)
    with pytest.raises(ValueError, match=r"element indices must lie in 0..3 \(H C N O\); map every atom type"):
        unified.compute_forces(data)


def test_fastnnp_lammps_export_command(tmp_path, capsys):
    from fastnnp.cli import main

    out = tmp_path / "model-mliap.pt"
    assert main(["lammps-export", str(DATA / "tensornet" / "model.ckpt"), str(out), "--elements", "H", "C", "N", "O"]) == 0
    assert f"pair_style mliap unified {out} 0" in capsys.readouterr().out
    assert isinstance(load_unified(out), FastNNPUnified)
    assert main(["lammps-export", str(DATA / "tensornet" / "model.ckpt"), str(out), "--elements", "Xx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastnnp lammps-export: error:") and "Xx" in err and len(err.splitlines()) == 1
