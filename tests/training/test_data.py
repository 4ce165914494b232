"""fastnnp.training.data: readers against TorchMD-Net, NumPy and ASE; checks; splits; batches."""

import glob
import shutil
import warnings

import ase.io
import h5py
import numpy as np
import pytest
from lightning_utilities.core.rank_zero import rank_zero_only
import torch

from fastnnp.training.config import TORCHMD_TRAIN_DEFAULTS
from fastnnp.training.data import collate, load_frames, make_splits

tmd_utils = pytest.importorskip("torchmdnet.utils")


@pytest.fixture
def root(data_dir):
    return data_dir / "training"


def custom_config(folder, **extra):
    config = {**TORCHMD_TRAIN_DEFAULTS, "dataset": "Custom", "derivative": True}
    for key, kind in (("coord_files", "coords"), ("embed_files", "embed"), ("energy_files", "energy"),
                      ("force_files", "forces")):
        config[key] = str(folder / f"*_{kind}.npy")
    config.update(extra)
    return config


def root_config(dataset, path, **extra):
    return {**TORCHMD_TRAIN_DEFAULTS, "dataset": dataset, "dataset_root": str(path), "derivative": True, **extra}


def copy_set(src, dst):
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def test_custom_matches_torchmdnet_and_numpy(root):
    from torchmdnet.datasets import Custom

    folder = root / "xtb-molecules"
    frames = load_frames(custom_config(folder))
    theirs = Custom(*(str(folder / f"*_{k}.npy") for k in ("coords", "embed", "energy", "forces")))
    assert len(frames) == len(theirs) == 8
    for frame, data in zip(frames, theirs, strict=True):
        np.testing.assert_array_equal(frame.z, data.z.numpy())
        np.testing.assert_array_equal(frame.pos, data.pos.numpy())
        np.testing.assert_array_equal(frame.forces, data.neg_dy.numpy())
        assert frame.energy == float(data.y)
        assert frame.cell is None and frame.stress is None and frame.charge == 0.0
        assert frame.z.dtype == np.int64 and frame.pos.dtype == np.float64
    first = sorted(glob.glob(str(folder / "*_coords.npy")))[0]
    np.testing.assert_array_equal(frames[1].pos, np.load(first)[1])
    assert frames[1].source == f"{first}:1"


def test_custom_with_cells_and_stresses(root):
    folder = root / "cuau-emt"
    arg = {"box_files": str(folder / "*_box.npy"), "stress_files": str(folder / "*_stress.npy")}
    frames = load_frames(custom_config(folder, dataset_arg=arg))
    boxes, voigt = np.load(folder / "cuau00_box.npy"), np.load(folder / "cuau00_stress.npy")
    assert len(frames) == 3
    for j, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.cell, boxes[j])
        xx, yy, zz, yz, xz, xy = voigt[j]
        np.testing.assert_array_equal(frame.stress, [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    reference = ase.io.read(root / "cuau.extxyz", 1)
    np.testing.assert_allclose(frames[1].stress, reference.get_stress(voigt=False), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(frames[1].pos, reference.positions, atol=1e-5)


@pytest.mark.parametrize("name", ["molecules.extxyz", "cuau.extxyz"])
def test_ase_matches_ase_io(root, name):
    frames = load_frames(root_config("ASE", root / name))
    images = ase.io.read(root / name, ":")
    assert len(frames) == len(images)
    for j, (frame, atoms) in enumerate(zip(frames, images, strict=True)):
        np.testing.assert_array_equal(frame.z, atoms.numbers)
        np.testing.assert_array_equal(frame.pos, atoms.positions)
        np.testing.assert_array_equal(frame.forces, atoms.get_forces())
        assert frame.energy == atoms.get_potential_energy()
        assert frame.source == f"{root / name}:{j}" and frame.charge == 0.0
        if atoms.pbc.all():
            np.testing.assert_array_equal(frame.cell, atoms.cell.array)
            np.testing.assert_array_equal(frame.stress, atoms.get_stress(voigt=False))
        else:
            assert frame.cell is None and frame.stress is None


def test_ase_charge_keys_and_index(root, tmp_path):
    images = ase.io.read(root / "molecules.extxyz", ":")
    for k, atoms in enumerate(images):
        atoms.info["charge"] = float(k - 1)
        atoms.info["ref_e"] = 10.0 * k
    path = tmp_path / "charged.extxyz"
    ase.io.write(path, images)
    frames = load_frames(root_config("ASE", path))
    assert [f.charge for f in frames] == [-1.0, 0.0, 1.0]
    picked = load_frames(root_config("ASE", f"{path};{path}", dataset_arg={"index": "::2", "energy_key": "ref_e"}))
    assert [f.energy for f in picked] == [0.0, 20.0, 0.0, 20.0]
    assert picked[1].source == f"{path}:1"


def test_hdf5_written_by_torchmdnet(root, tmp_path):
    from torchmdnet.datasets import HDF5

    folder = root / "xtb-molecules"
    files = {k: sorted(glob.glob(str(folder / f"*_{kind}.npy")))
             for k, kind in (("pos", "coords"), ("z", "embed"), ("y", "energy"), ("neg_dy", "forces"))}
    path = tmp_path / "set.h5"
    tmd_utils.write_as_hdf5(files, str(path))
    frames = load_frames(root_config("HDF5", path))
    custom = load_frames(custom_config(folder))
    theirs = HDF5(str(path))
    assert len(frames) == len(custom) == len(theirs)
    for frame, other, data in zip(frames, custom, theirs, strict=True):
        np.testing.assert_array_equal(frame.z, other.z)
        np.testing.assert_array_equal(frame.pos, other.pos)
        np.testing.assert_array_equal(frame.forces, data.neg_dy.numpy())
        assert frame.energy == other.energy == float(data.y)
    assert frames[5].source == f"{path}[1]:1"


def test_hdf5_shared_types_flat_energies_metadata_and_file_lists(root, tmp_path):
    pos = np.load(root / "xtb-molecules" / "C6H6_coords.npy")
    z = np.load(root / "xtb-molecules" / "C6H6_embed.npy")
    energy = np.load(root / "xtb-molecules" / "C6H6_energy.npy")[:, 0]
    paths = []
    for name in ("a.h5", "b.h5"):
        paths.append(tmp_path / name)
        with h5py.File(paths[-1], "w") as f:
            f.create_group("_metadata").create_dataset("atomref", data=np.zeros(10))
            group = f.create_group("benzene")
            group.create_dataset("pos", data=pos)
            group.create_dataset("types", data=z)
            group.create_dataset("energy", data=energy)
    frames = load_frames(root_config("HDF5", f"{paths[0]};{paths[1]}", derivative=False))
    assert len(frames) == 8 and frames[4].source == f"{paths[1]}[benzene]:0"
    assert [f.energy for f in frames] == [float(e) for e in np.concatenate([energy, energy])]
    assert all(f.forces is None for f in frames)
    np.testing.assert_array_equal(frames[7].z, z)


def bad_custom(root, tmp_path, kind, edit):
    folder = copy_set(root / "xtb-molecules", tmp_path / "set")
    path = folder / f"C6H6_{kind}.npy"
    np.save(path, edit(np.load(path)))
    return folder, str(path)


@pytest.mark.parametrize("kind, edit, message", [
    ("coords", lambda a: np.where(np.arange(4)[:, None, None] == 2, np.nan, a), ":2: positions contain NaN"),
    ("energy", lambda a: np.where(np.arange(4)[:, None] == 3, np.inf, a), ":3: energies contain NaN or inf"),
    ("forces", lambda a: np.where(np.arange(4)[:, None, None] == 1, np.nan, a), ":1: forces contain NaN"),
    ("forces", lambda a: a[:, :-1], r": forces have shape \(4, 11, 3\), expected \(4, 12, 3\)"),
    ("energy", lambda a: a[:3], r": energies have shape \(3, 1\), expected \(4, 1\)"),
    ("coords", lambda a: a[:, :, :2], r": coordinates have shape \(4, 12, 2\)"),
])
def test_custom_bad_data_names_file_and_frame(root, tmp_path, kind, edit, message):
    folder, path = bad_custom(root, tmp_path, kind, edit)
    with pytest.raises(ValueError, match=f"^{path}{message}"):
        load_frames(custom_config(folder))


def test_custom_atom_count_mismatch_names_both_files(root, tmp_path):
    folder, path = bad_custom(root, tmp_path, "embed", lambda a: a[:-1])
    with pytest.raises(ValueError, match=f"{path}: atomic numbers have shape \\(11,\\), but .*C6H6_coords.npy has 12"):
        load_frames(custom_config(folder))


def test_missing_labels(root, tmp_path):
    folder = root / "xtb-molecules"
    first = sorted(glob.glob(str(folder / "*_coords.npy")))[0]
    with pytest.raises(ValueError, match=f"^{first}:0: no energy, but y_weight > 0"):
        load_frames(custom_config(folder, energy_files=None))
    assert load_frames(custom_config(folder, energy_files=None, y_weight=0.0))[0].energy is None
    with pytest.raises(ValueError, match=f"^{first}:0: no forces, but derivative"):
        load_frames(custom_config(folder, force_files=None))
    assert load_frames(custom_config(folder, force_files=None, derivative=False))[0].forces is None
    with pytest.raises(ValueError, match="energy_files, force_files or both"):
        load_frames(custom_config(folder, force_files=None, energy_files=None))
    with pytest.raises(ValueError, match="coord_files: no file matches"):
        load_frames(custom_config(folder, coord_files=str(folder / "nothing*.npy")))


def test_ase_bad_data_names_file_and_frame(root, tmp_path):
    images = ase.io.read(root / "cuau.extxyz", ":")
    images[1].calc.results["forces"][5, 1] = np.nan
    path = tmp_path / "bad.extxyz"
    ase.io.write(path, images)
    with pytest.raises(ValueError, match=f"^{path}:1: forces contain NaN"):
        load_frames(root_config("ASE", path))
    images = ase.io.read(root / "molecules.extxyz", ":")
    images[2].calc = None
    ase.io.write(path, images)
    with pytest.raises(ValueError, match=f"^{path}:2: no energy"):
        load_frames(root_config("ASE", path))
    images = ase.io.read(root / "cuau.extxyz", ":")
    images[0].pbc = [True, True, False]
    ase.io.write(path, images)
    with pytest.raises(ValueError, match=f"^{path}:0: partly periodic"):
        load_frames(root_config("ASE", path))


def test_hdf5_bad_data_names_file_group_and_frame(tmp_path):
    path = tmp_path / "bad.h5"
    forces = np.zeros((3, 2, 3))
    forces[2, 1, 0] = np.inf
    with h5py.File(path, "w") as f:
        f.create_group("g").update(pos=np.zeros((3, 2, 3)), types=np.ones((3, 2), int), forces=forces)
        f.create_group("h").update(pos=np.zeros((3, 2, 3)), types=np.ones((3, 3), int), forces=forces)
    with pytest.raises(ValueError, match=rf"^{path}\[g\]:2: forces contain NaN or inf"):
        load_frames(root_config("HDF5", path, y_weight=0.0))
    with h5py.File(path, "a") as f:
        del f["g"]
    with pytest.raises(ValueError, match=rf"^{path}\[h\]: types have shape \(3, 3\)"):
        load_frames(root_config("HDF5", path, y_weight=0.0))


def test_unsupported_settings(root):
    with pytest.raises(ValueError, match="'QM9' is not supported"):
        load_frames(root_config("QM9", root))
    with pytest.raises(ValueError, match="remove_ref_energy"):
        load_frames(custom_config(root / "xtb-molecules", remove_ref_energy=True))


SPLIT_CASES = [
    (2000, 0.8, 0.1, 0.1, 1),
    (100, 0.8, 0.1, 0.1, 1),
    (57, None, 0.05, 0.1, 3),
    (57, 10, None, 5, 0),
    (57, 0.5, 0.25, None, 42),
    (10, 0.35, 0.35, 0.3, 7),
    (25, 20, 3, 2, 5),
    (101, 0.7, 0.15, 0.15, 12345),
    (100, 10, 10, 10, 2),
]


@pytest.mark.parametrize("n, train, val, test, seed", SPLIT_CASES)
def test_make_splits_equals_torchmdnet(n, train, val, test, seed, monkeypatch):
    # TorchMD-Net warns through Lightning's rank_zero_warn, which needs the process rank that a
    # Lightning trainer would set; without it the test would depend on which tests ran before.
    monkeypatch.setattr(rank_zero_only, "rank", getattr(rank_zero_only, "rank", 0), raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = make_splits(n, train, val, test, seed)
        theirs = tmd_utils.make_splits(n, train, val, test, seed)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == np.int64
        np.testing.assert_array_equal(a, b.numpy())


def test_make_splits_reproduces_torchmd_train_run_and_reads_files(root):
    written = np.load(root / "torchmd_train_splits.npz")
    ours = make_splits(2000, 0.8, 0.1, 0.1, 1)
    for a, key in zip(ours, ("idx_train", "idx_val", "idx_test"), strict=True):
        np.testing.assert_array_equal(a, written[key])
    from_file = make_splits(2000, None, None, None, 0, splits=root / "torchmd_train_splits.npz")
    for a, key in zip(from_file, ("idx_train", "idx_val", "idx_test"), strict=True):
        np.testing.assert_array_equal(a, written[key])
    with pytest.raises(ValueError, match="idx_train has indices outside the 100 frames"):
        make_splits(100, None, None, None, 0, splits=root / "torchmd_train_splits.npz")
    with pytest.raises(ValueError, match="only one of"):
        make_splits(10, None, None, 0.1, 0)
    with pytest.warns(UserWarning, match="70 samples were excluded"):
        make_splits(100, 10, 10, 10, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_collate_molecules_and_cells(root, dtype):
    molecules = load_frames(custom_config(root / "xtb-molecules"))
    batch = collate(molecules[2:6], dtype)
    n = sum(len(f.z) for f in molecules[2:6])
    assert batch.z.shape == (n,) and batch.z.dtype == torch.int64
    assert batch.pos.shape == (n, 3) and batch.pos.dtype == dtype
    assert batch.batch.tolist() == sum(([k] * len(f.z) for k, f in enumerate(molecules[2:6])), [])
    assert batch.q.shape == (4,) and batch.q.dtype == dtype
    assert batch.energy.shape == (4, 1) and batch.energy.dtype == dtype
    assert batch.forces.shape == (n, 3) and batch.box is None and batch.stress is None
    assert batch.energy[1, 0] == torch.tensor(molecules[3].energy, dtype=dtype)
    torch.testing.assert_close(batch.pos[: len(molecules[2].z)], torch.as_tensor(molecules[2].pos, dtype=dtype))

    cells = load_frames(root_config("ASE", root / "cuau.extxyz"))
    batch = collate(cells, dtype)
    assert batch.box.shape == (2, 3, 3) and batch.stress.shape == (2, 3, 3) and batch.box.dtype == dtype
    torch.testing.assert_close(batch.stress[1], torch.as_tensor(cells[1].stress, dtype=dtype))


def test_box_vecs_is_the_default_cell(root):
    box = [[20.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 20.0]]
    frames = load_frames(custom_config(root / "xtb-molecules", box_vecs=box))
    assert all(np.array_equal(f.cell, box) for f in frames)
    assert collate(frames, torch.float32).box.shape == (len(frames), 3, 3)


def test_collate_refuses_mixtures(root):
    molecule = load_frames(custom_config(root / "xtb-molecules"))[0]
    crystal = load_frames(root_config("ASE", root / "cuau.extxyz"))[0]
    with pytest.raises(ValueError, match=f"with and without cell: {crystal.source} has it, {molecule.source} not"):
        collate([crystal, molecule], torch.float32)
    with pytest.raises(ValueError, match="with and without energy"):
        collate([molecule, molecule._replace(energy=None)], torch.float32)
    with pytest.raises(ValueError, match="empty"):
        collate([], torch.float32)
