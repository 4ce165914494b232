"""Bad input gets a clear error that names the problem."""


import numpy as np
import pytest
import torch

import fastnnp
from fastnnp import CheckpointError
from fastnnp.models.factory import build_model


@pytest.fixture(scope="module")
def model(data_dir):
    return fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", radial="exact")  # no tables to fit: faster


@pytest.fixture(scope="module")
def water():
    z = torch.tensor([8, 1, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    return z, pos


@pytest.mark.parametrize("bad_z, message", [
    (torch.tensor([8, 1, 40]), r"atomic number 40 of atom 2 is not supported: this model handles 1\.\.31"),
    (torch.tensor([8, 0, 1]), r"atomic number 0 of atom 1 is not supported"),
    (torch.tensor([8, -3, 1]), r"atomic number -3 of atom 1"),
])
def test_unsupported_atomic_numbers(model, water, bad_z, message):
    with pytest.raises(ValueError, match=message):
        model(bad_z, water[1])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_positions(model, water, value):
    pos = water[1].clone()
    pos[1, 2] = value
    with pytest.raises(ValueError, match="position of atom 1 is not finite"):
        model(water[0], pos)


def test_wrong_shapes_and_dtypes(model, water):
    z, pos = water
    with pytest.raises(ValueError, match=r"pos must have shape \[n_atoms, 3\] = \[3, 3\], got \(3, 2\)"):
        model(z, pos[:, :2])
    with pytest.raises(ValueError, match=r"z must have shape \[n_atoms\]"):
        model(z[None], pos)
    with pytest.raises(TypeError, match="z must hold integer atomic numbers, got dtype torch.float32"):
        model(z.float(), pos)
    with pytest.raises(TypeError, match="pos has dtype torch.float64 but the model runs in torch.float32"):
        model(z, pos.double())
    with pytest.raises(ValueError, match=r"batch must have shape \[n_atoms\]"):
        model(z, pos, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="no atoms: z is empty"):
        model(z[:0], pos[:0])
    with pytest.raises(ValueError, match=r"q \(total charge\) must have shape \[n_systems\] = \[1\]"):
        model(z, pos, q=torch.zeros(2))


def test_batch_must_be_sorted(model, water):
    z, pos = water
    with pytest.raises(ValueError, match="batch must be sorted"):
        model(torch.cat([z, z]), torch.cat([pos, pos + 10]), torch.tensor([0, 1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match="batch skips a system index"):
        model(torch.cat([z, z]), torch.cat([pos, pos + 10]), torch.tensor([0, 0, 0, 2, 2, 2]))


def test_singular_and_malformed_boxes(model, water):
    z, pos = water
    flat = torch.tensor([[10.0, 0, 0], [0, 10.0, 0], [5.0, 5.0, 0]])
    with pytest.raises(ValueError, match="box of system 0 is singular"):
        model(z, pos, box=flat)
    with pytest.raises(ValueError, match="box of system 0 is singular"):
        model(z, pos, box=torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"box must have shape \[3, 3\] or \[n_systems, 3, 3\]"):
        model(z, pos, box=torch.eye(2))
    with pytest.raises(ValueError, match="box is not finite"):
        model(z, pos, box=torch.eye(3) * float("nan"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nothing.ckpt"):
        fastnnp.load_model(tmp_path / "nothing.ckpt")


def test_corrupt_file(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"garbage.ckpt is not a PyTorch checkpoint \(a torch.save zip archive\): "
                                              "it is no format fastnnp knows"):
        fastnnp.load_model(path)


def test_truncated_checkpoint(tmp_path, data_dir):
    data = (data_dir / "tensornet" / "model.ckpt").read_bytes()
    path = tmp_path / "half.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="half.ckpt is truncated or damaged: its zip directory cannot be read"):
        fastnnp.load_model(path)


def test_foreign_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="is not a TorchMD-Net checkpoint: expected 'state_dict' and 'hyper_parameters'"):
        fastnnp.load_model(path)


class _Payload:
    """Stands for any object whose unpickling would run code."""


def test_arbitrary_unpickling_needs_opt_in(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _Payload()}, path)
    with pytest.raises(CheckpointError, match="needs arbitrary unpickling .it stores a tests.test_bad_input._Payload object.*trust_checkpoint=True"):
        fastnnp.load_model(path)


def test_weights_that_do_not_fit(tmp_path, data_dir):
    ckpt = torch.load(data_dir / "tensornet" / "model.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["embedding_dimension"] = 32
    path = tmp_path / "mismatch.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="weights do not fit the architecture"):
        fastnnp.load_model(path)


@pytest.mark.parametrize("name, message", [
    ("foo", "unknown model 'foo'; supported: tensornet, equivariant-transformer, graph-network"),
    ("transformer", "model 'transformer' .the deprecated TorchMD-T transformer. is not supported"),
])
def test_unknown_model_name(data_dir, name, message):
    ckpt = torch.load(data_dir / "tensornet" / "model.ckpt", weights_only=True)
    with pytest.raises(ValueError, match=message):
        build_model(dict(ckpt["hyper_parameters"], model=name))


def test_unsupported_precision_and_layout(data_dir):
    ckpt = torch.load(data_dir / "tensornet" / "model.ckpt", weights_only=True)
    with pytest.raises(ValueError, match="unsupported precision 16"):
        build_model(dict(ckpt["hyper_parameters"], precision=16))
    with pytest.raises(ValueError, match="unknown layout 'sideways'"):
        fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", layout="sideways")


# --- the calculator's and the step's arguments, each named, before anything loads or runs ---

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda")])
def test_calculator_on_cuda_without_a_gpu_says_so(device):
    """Before: an AssertionError from inside torch. Checked before the checkpoint is read."""
    from fastnnp.calculator import FastNNPCalculator

    with pytest.raises(ValueError, match=r"device=.*cuda.* but torch sees no CUDA device \(torch.cuda.is_available\(\) "
                                         r"is False\); use device='cpu' or 'auto'"):
        FastNNPCalculator("no/such/file.ckpt", device=device)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(skin="big"), TypeError, "skin must be a finite number of Å >= 0 or None, got str 'big'"),
    (dict(skin=float("nan")), ValueError, "skin must be a finite number of Å >= 0 or None, got nan"),
    (dict(charge="neutral"), TypeError, "charge must be a finite number of elementary charges or None, got str 'neutral'"),
    (dict(charge=True), TypeError, "charge must be a finite number of elementary charges or None, got bool True"),
    (dict(dtype=torch.float16), TypeError, "dtype must be torch.float32, torch.float64 or None"),
    (dict(dtype="float32"), TypeError, "dtype must be torch.float32, torch.float64 or None .the checkpoint's., got 'float32'"),
    (dict(energy_unit=None), TypeError, "energy_unit must be a unit name or a positive number, got None"),
    (dict(length_unit="furlong"), ValueError, "unknown length unit 'furlong'"),
    (dict(device="tpu"), ValueError, "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got 'tpu'"),
    (dict(device=0), TypeError, "device must be 'auto', a device name such as 'cpu' or 'cuda:0', or a torch.device, got int 0"),
    (dict(model=42), TypeError, "model must be a checkpoint path, a list of paths, a .zip or a model from fastnnp.load_model, "
                                "got 42"),
    (dict(model=[]), TypeError, "model must be a checkpoint path"),
])
def test_calculator_arguments_are_named(kwargs, error, message):
    from fastnnp.calculator import FastNNPCalculator

    kwargs = dict({"model": "no/such/file.ckpt"}, **kwargs)  # every check runs before the file is looked for
    with pytest.raises(error, match=message):
        FastNNPCalculator(**kwargs)


def test_a_loaded_model_on_another_device_is_named(model):
    from fastnnp.calculator import FastNNPCalculator

    with pytest.raises(ValueError, match="dtype and loading options apply to checkpoint paths, not to an already loaded model"):
        FastNNPCalculator(model, dtype=torch.float64)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' but torch sees no CUDA device"):
            FastNNPCalculator(model, device="cuda")


@pytest.fixture(scope="module")
def calculator(model):
    from fastnnp.calculator import FastNNPCalculator

    return FastNNPCalculator(model)


def water_atoms():
    from ase import Atoms

    return Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


@pytest.mark.parametrize("images, kwargs, error, message", [
    ("list", {}, TypeError, r"images\[1\] is a str, not an ase.Atoms"),
    ("atoms", {}, TypeError, "images must be a sequence of ase.Atoms; for one structure use atoms.calc = calculator"),
    ("dict", {}, TypeError, r"images\[0\] is a dict, not an ase.Atoms"),
    ("one", dict(properties=("energy", "dipole")), ValueError, r"properties must be a collection of \['charges', 'energies', "
                                                               r"'energy', 'forces', 'free_energy', 'stress'\], got \('energy', 'dipole'\)"),
    ("one", dict(properties="energy"), ValueError, "properties must be a collection of"),
    ("one", dict(max_atoms=0), ValueError, "max_atoms must be a positive int, got 0"),
    ("one", dict(max_atoms=10.5), ValueError, "max_atoms must be a positive int, got 10.5"),
], ids=["str-item", "atoms", "dict-item", "property", "property-str", "max_atoms-0", "max_atoms-float"])
def test_calculate_batch_arguments_are_named(calculator, images, kwargs, error, message):
    """Before: AttributeError from inside the batching for a non-Atoms item."""
    water = water_atoms()
    chosen = {"list": [water, "water.xyz"], "atoms": water, "dict": [{"numbers": [8, 1, 1]}], "one": [water]}[images]
    with pytest.raises(error, match=message):
        calculator.calculate_batch(chosen, progress=False, **kwargs)


@pytest.mark.parametrize("change, message", [
    (dict(z=np.array([8, 1, 1])), r"z must be a torch.Tensor of atomic numbers \[n_atoms\], got numpy.ndarray .* "
                                  r"\(use torch.as_tensor\)"),
    (dict(q=1.0), r"q must be a torch.Tensor of total charges \[n_systems\], got float 1.0"),
    (dict(pos=[[0.0, 0.0, 0.0]] * 3), r"pos must be a torch.Tensor of positions \[n_atoms, 3\], got list"),
    (dict(batch=0), r"batch must be a torch.Tensor of system indices \[n_atoms\], got int 0"),
    (dict(model="model.ckpt"), r"model must be a fastnnp potential \(fastnnp.load_model\), got str"),
    (dict(properties="energy"), r"properties must be a collection of names such as \('energy', 'forces'\), got 'energy'"),
], ids=["z-numpy", "q-float", "pos-list", "batch-int", "model-path", "properties-str"])
def test_energy_step_arguments_are_named(model, water, change, message):
    """Before: operator TypeErrors and AttributeErrors from inside the step."""
    from fastnnp.step import EnergyStep

    args = dict(model=model, z=water[0], pos=water[1])
    args.update(change)
    with pytest.raises(TypeError, match=message):
        EnergyStep(**args)


def test_model_call_with_numpy_z_and_float_q_is_named(model, water):
    """The same mistakes at the model's own call (TorchMD-Net's signature; more in test_forward_contract.py)."""
    z, pos = water
    with pytest.raises(TypeError, match="z must be a torch.Tensor of integer atomic numbers .*use torch.as_tensor"):
        model(z.numpy(), pos)
    with pytest.raises(TypeError, match=r"q must be a torch.Tensor of total charges \[n_systems\], got float 1.0"):
        model(z, pos, q=1.0)
