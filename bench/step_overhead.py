"""Per-call overhead of a steady-state Triton energy+forces call, counted on CPU under Triton's
interpreter (ops issued by the interpreter itself not counted): aten ops, device→host syncs,
kernel launches (fastnnp's registered ops) and glue bytes per atom (inputs + outputs of the
aten ops that are not views), for the plain model call and for :class:`fastnnp.step.EnergyStep`
(energy and forces: an MD step; and with the stress).

    TRITON_INTERPRET=1 python bench/step_overhead.py [--output bench/results --name step_overhead]
"""

import argparse
import json
import os
import subprocess
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

import fastnnp  # noqa: E402
from fastnnp.bench.models import write_preset_checkpoint  # noqa: E402
from fastnnp.bench.op_count import OpCounter  # noqa: E402
from fastnnp.bench.systems import build  # noqa: E402
from fastnnp.step import EnergyStep  # noqa: E402

# water-999 at F=128 (the case) takes too long under the interpreter on 2 cores; op counts do not depend on N
CASES = (("tensornet-64", "water-48"), ("tensornet-128", "water-48"))


def _count(call) -> dict:
    with OpCounter() as counter:
        call()
    return dict(aten_ops=counter.ops, syncs=len(counter.syncs), kernel_ops=sum(counter.kernels.values()),
                glue_bytes=counter.bytes)


def measure(preset: str, system_name: str, folder: str) -> dict:
    model = fastnnp.load_model(write_preset_checkpoint(preset, os.path.join(folder, f"{preset}.ckpt"), 0), backend="triton")
    system = build(system_name)
    z = torch.as_tensor(system.atoms.numbers)
    pos = torch.as_tensor(system.atoms.positions, dtype=torch.float32)
    box = torch.as_tensor(system.atoms.cell.array, dtype=torch.float32)[None] if system.atoms.pbc.any() else None
    batch = torch.as_tensor(system.batch)
    step = EnergyStep(model, z, pos, batch, box)
    stress_step = EnergyStep(model, z, pos, batch, box, properties=("energy", "forces", "stress"))
    for _ in range(2):
        model(z, pos, batch, box=box)
        step.run(pos, box)
        stress_step.run(pos, box)
    rows = {"model call": _count(lambda: model(z, pos, batch, box=box)), "EnergyStep": _count(lambda: step(pos, box)),
            "EnergyStep + stress": _count(lambda: stress_step(pos, box))}
    for row in rows.values():
        row["glue_bytes_per_atom"] = row.pop("glue_bytes") / len(z)
    return dict(model=preset, system=system_name, atoms=len(z), rows=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench/results")
    parser.add_argument("--name", default="step_overhead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = [measure(preset, system, folder) for preset, system in CASES]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = dict(commit=commit, device="cpu (Triton interpreter)", torch=torch.__version__, cases=results)
    with open(os.path.join(args.output, f"{args.name}.json"), "w") as f:
        json.dump(record, f, indent=1)
    lines = [f"# Per-call overhead, steady state (commit {commit}, CPU, Triton interpreter; forward + backward)", "",
             "| model | system | call | aten ops | syncs | kernel ops | glue kB/atom |", "|---|---|---|---|---|---|---|"]
    for case in results:
        for call, row in case["rows"].items():
            lines.append(f"| {case['model']} | {case['system']} | {call} | {row['aten_ops']} | {row['syncs']} | "
                         f"{row['kernel_ops']} | {row['glue_bytes_per_atom'] / 1e3:.0f} |")
    with open(os.path.join(args.output, f"{args.name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
