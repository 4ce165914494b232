"""What an OpenMM step through the fastnnp plugin costs over a bare fastnnp step; torch-sim
batched vs one structure at a time. Prints a markdown table (device, commit, threads).

    python bench/openmm/step_cost.py [--output DIR] [--quick] [--model CKPT]

Rows: ``bare``: :class:`fastnnp.step.EnergyStep.run` on device tensors; ``compute``: the
plugin's PythonForce callable on an OpenMM State (host copies and unit conversion included);
``openmm``: one VerletIntegrator step on the Reference platform (CPU) or CUDA. Systems: a
reference molecule (open) and a periodic water box of ~1 000 atoms (ase.build, nothing
downloaded). Not measured here: openmm-ml's ``torchmdnet`` potential.
"""

import argparse
import pathlib
import statistics
import subprocess
import time

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "tests/data/tensornet/model.ckpt"))
    parser.add_argument("--output", default="openmm-bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    repeats = 5 if args.quick else 20
    from tests.helpers.calculator_systems import reference_molecule
    rows = openmm_rows("molecule", reference_molecule(0), args.model, args.device, repeats)
    rows += openmm_rows("water box", water_box(7), args.model, args.device, max(3, repeats // 4))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = [f"device {args.device}, commit {commit} (+ working tree), {torch.get_num_threads()} threads", "",
             "| system | atoms | bare step ms | plugin call ms | OpenMM step ms | overhead over bare |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, n, bare, call, md in rows:
        lines.append(f"| {name} | {n} | {bare:.2f} | {call:.2f} | {md:.2f} | {md - bare:+.2f} ms ({md / bare - 1:+.0%}) |")
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
