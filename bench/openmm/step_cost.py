"""What an OpenMM step through the fastnnp plugin costs over a bare fastnnp step, beside
openmm-ml's own ``torchmdnet`` potential; torch-sim batched vs one structure at a time. Prints
markdown tables (device, commit, threads).

    python bench/openmm/step_cost.py [--output DIR] [--quick] [--model CKPT] [--threads N]
                                     [--skip-torchmdnet]

Rows: ``bare``: :class:`fastnnp.step.EnergyStep.run` on device tensors; ``compute``: the
plugin's PythonForce callable on an OpenMM State (host copies and unit conversion included);
``openmm``: one VerletIntegrator step on the Reference platform (CPU) or CUDA. Systems: a
reference molecule (open) and a periodic water box of ~1 000 atoms (ase.build, nothing
downloaded).

Set-up rows, for ``MLPotential('fastnnp')`` and ``MLPotential('torchmdnet', modelPath=...)``
alike: seconds from ``createSystem`` through ``Context`` and the first energy to the end of the
first step (openmm-ml's route runs its model eagerly on the first call and ``torch.compile``\ s
it on the second, so its compile lands in the first step), then ms per OpenMM step. The
inductor cache is a fresh temporary folder, so each new system compiles as for a new user. The
energy check is the molecule's energy from both routes beside TorchMD-Net's ``load_model``.
"""

import argparse
import os
import pathlib
import statistics
import subprocess
import tempfile
import time
import warnings

import numpy as np
import openmm
import torch
import torch_sim as ts
from ase.build import molecule
from openmm import unit
from openmmml import MLPotential

from fastnnp.torchsim import FastNNPModel

ROOT = pathlib.Path(__file__).resolve().parents[2]


def water_box(n_side: int):
    from ase import Atoms
    water = molecule("H2O")
    spacing = 3.1  # Å, ~1 g/cm³
    cells = [water.positions + spacing * np.array([i, j, k]) for i in range(n_side) for j in range(n_side) for k in range(n_side)]
    atoms = Atoms(numbers=np.tile(water.numbers, n_side**3), positions=np.concatenate(cells),
                  cell=np.eye(3) * spacing * n_side, pbc=True)
    return atoms


def timed(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def openmm_rows(name, atoms, model, device, repeats):
    from fastnnp.openmm.compute import FastNNPForce
    from tests.openmm.systems import topology_of
    cell = atoms.cell.array if atoms.pbc.all() else None
    potential = MLPotential("fastnnp", modelPath=model, device=device)
    system = potential.createSystem(topology_of(atoms, cell=cell))
    integrator = openmm.VerletIntegrator(0.5 * unit.femtosecond)
    platform = "CUDA" if device == "cuda" else "Reference"
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(atoms.positions / 10)
    # the same callable addForces gives the PythonForce, timed on its own
    fn = FastNNPForce(potential._impl.spec, atoms.numbers, 0.0, cell is not None, potential._impl.members)
    state = context.getState(getPositions=True)
    fn(state)
    step = fn.steps[0]
    pos = torch.as_tensor(atoms.positions, dtype=fn.dtype, device=fn.device)
    box = torch.as_tensor(cell, dtype=fn.dtype, device=fn.device).reshape(1, 3, 3) if cell is not None else None
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    bare = timed(lambda: (step.run(pos, box), sync()), repeats)
    call = timed(lambda: fn(state), repeats)
    md = timed(lambda: integrator.step(1), repeats)
    return [(name, len(atoms), bare, call, md)]


def setup_and_step(name, atoms, potential_name, model, platform, repeats, **potential_kwargs):
    """(system, atoms, route, set-up s, OpenMM step ms, error): set-up from createSystem to the
    end of the first step; ``error`` is the exception text when the route fails (times None)."""
    from tests.openmm.systems import topology_of
    cell = atoms.cell.array if atoms.pbc.all() else None
    try:
        start = time.perf_counter()
        potential = MLPotential(potential_name, modelPath=model, **potential_kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchMD-Net's "Unknown hyperparameter" and old-layout warnings
            system = potential.createSystem(topology_of(atoms, cell=cell))
        integrator = openmm.VerletIntegrator(0.5 * unit.femtosecond)
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
        context.setPositions(atoms.positions / 10)
        context.getState(getEnergy=True)
        integrator.step(1)
        setup = time.perf_counter() - start
        md = timed(lambda: integrator.step(1), repeats)
    except Exception as error:  # the row records why the route does not run here
        return (name, len(atoms), potential_name, None, None, f"{type(error).__name__}: {error}".splitlines()[0])
    return (name, len(atoms), potential_name, setup, md, None)


def molecule_energies(atoms, model) -> list[tuple[str, float]]:
    """The molecule's energy (kJ/mol) from openmm-ml's ``torchmdnet`` route, the fastnnp plugin
    in float32 and TorchMD-Net's ``load_model`` (× openmm-ml's 96.4916 kJ/mol per eV), with and
    without the ``check_errors=False`` that openmm-ml passes."""
    from torchmdnet.models.model import load_model
    from tests.openmm.systems import KJ_PER_MOL_PER_EV, topology_of
    rows = []
    for name, kwargs in (("torchmdnet", {}), ("fastnnp", {"dtype": torch.float32, "device": "cpu"})):
        potential = MLPotential(name, modelPath=model, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            system = potential.createSystem(topology_of(atoms))
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(atoms.positions / 10)
        rows.append((f"MLPotential('{name}')", context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)))
    z = torch.as_tensor(atoms.numbers)
    pos = torch.as_tensor(atoms.positions, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown hyperparameter: check_errors" and the old-layout warning
        energy_ev = load_model(model, derivative=False)(z, pos)[0].item()
        as_openmm_ml_loads_ev = load_model(model, derivative=False, check_errors=False)(z, pos)[0].item()
    return rows + [
        ("load_model(ckpt) × 96.4916 (openmm-ml's kJ/mol per eV)", energy_ev * 96.4916),
        ("load_model(ckpt, check_errors=False) × 96.4916 (openmm-ml's kJ/mol per eV)", as_openmm_ml_loads_ev * 96.4916),
        (f"load_model(ckpt) × {KJ_PER_MOL_PER_EV:.4f} (ASE's, the plugin's)", energy_ev * KJ_PER_MOL_PER_EV),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "tests/data/tensornet/model.ckpt"))
    parser.add_argument("--output", default="openmm-bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every route")
    parser.add_argument("--skip-torchmdnet", action="store_true", help="leave out openmm-ml's torchmdnet route")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="step-cost-inductor-"))
    repeats = 5 if args.quick else 20
    from tests.helpers.calculator_systems import reference_molecule
    rows = openmm_rows("molecule", reference_molecule(0), args.model, args.device, repeats)
    rows += openmm_rows("water box", water_box(7), args.model, args.device, max(3, repeats // 4))
    systems = [("molecule", reference_molecule(0), repeats), ("water box", water_box(7), max(3, repeats // 4))]
    platform = "CUDA" if args.device == "cuda" else "Reference"
    setups = [setup_and_step(name, atoms, "fastnnp", args.model, platform, n, device=args.device)
              for name, atoms, n in systems]
    if not args.skip_torchmdnet:
        setups += [setup_and_step(name, atoms, "torchmdnet", args.model, platform, n) for name, atoms, n in systems]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = [f"device {args.device}, commit {commit} (+ working tree), {torch.get_num_threads()} threads", "",
             "| system | atoms | bare step ms | plugin call ms | OpenMM step ms | overhead over bare |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, n, bare, call, md in rows:
        lines.append(f"| {name} | {n} | {bare:.2f} | {call:.2f} | {md:.2f} | {md - bare:+.2f} ms ({md / bare - 1:+.0%}) |")
    lines += ["", "| system | atoms | route | set-up s (createSystem to end of first step) | OpenMM step ms |",
              "|---|---:|---|---:|---:|"]
    for name, n, route, setup, md, error in sorted(setups, key=lambda row: (row[1], row[2])):
        label = f"MLPotential('{route}')"
        if error is None:
            lines.append(f"| {name} | {n} | {label} | {setup:.1f} | {md:.2f} |")
        else:
            lines.append(f"| {name} | {n} | {label} | fails: {error} | |")
    if not args.skip_torchmdnet:
        lines += ["", "| molecule energy | kJ/mol |", "|---|---:|"]
        lines += [f"| {label} | {energy:.3f} |" for label, energy in molecule_energies(reference_molecule(0), args.model)]
    # torch-sim: 8 molecules batched vs one at a time
    model = FastNNPModel(args.model, device=args.device)
    images = [reference_molecule(k) for k in range(8)]
    batched = ts.io.atoms_to_state(images, torch.device(args.device), model.dtype)
    singles = [ts.io.atoms_to_state([a], torch.device(args.device), model.dtype) for a in images]
    t_batched = timed(lambda: model(batched), repeats)
    t_single = timed(lambda: [model(s) for s in singles], repeats)
    lines += ["", "| torch-sim, 8 molecules | ms per evaluation of all 8 | structures/s |", "|---|---:|---:|",
              f"| batched (one call) | {t_batched:.2f} | {8e3 / t_batched:.0f} |",
              f"| one at a time | {t_single:.2f} | {8e3 / t_single:.0f} |"]
    text = "\n".join(lines)
    print(text)
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_cost.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
