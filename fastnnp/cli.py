"""The ``fastnnp`` command line.

A user's mistake (a missing or unreadable file, an unsupported element, ...) is one line on
stderr, ``fastnnp COMMAND: error: ...``, and exit status 2; no traceback. Warnings (e.g. an
assumed checkpoint layout) are one line each, ``fastnnp COMMAND: warning: ...``.
"""

import argparse
import os
import sys
import warnings
from typing import Optional, Sequence

import torch

from .lammps.cli import HELP as LAMMPS_EXPORT_HELP
from .lammps.cli import add_arguments as lammps_export_arguments
from .lammps.cli import run as lammps_export
from .memory import CallTooLarge

# What a subcommand raises for bad input: reported in one line, exit status 2.
USER_ERRORS = (OSError, ValueError, CallTooLarge)
USAGE_ERROR = 2


class StructureFileError(ValueError):
    """A structure file ASE cannot read, or a frame of it the model cannot take."""


def _info(args: argparse.Namespace) -> int:
    from .checkpoint import read_checkpoint
    from .models.factory import build_model

    ckpt = read_checkpoint(args.checkpoint, layout=args.layout, trust_checkpoint=args.trust_checkpoint)
    hp = ckpt.hparams
    model = build_model(hp, list(ckpt.state_dict), default_box=ckpt.default_box)
    n_params = sum(p.numel() for p in model.parameters())

    def get(key: str, default="?"):  # a foreign checkpoint may lack any key
        return hp.get(key, default)

    print(f"checkpoint    {args.checkpoint}")
    print(f"model         {get('model')} ({get('equivariance_invariance_group', '-')})")
    print(f"features      {get('embedding_dimension')} x {get('num_layers')} layers, {get('num_rbf')} {get('rbf_type')} rbf")
    print(f"cutoff        {get('cutoff_lower')} .. {get('cutoff_upper')}")
    print(f"output        {get('output_model')} (reduce {get('reduce_op', 'add')}), priors {get('prior_model', None)}")
    print(f"precision     {get('precision', 32)}, max_z {get('max_z')}, parameters {n_params}")
    _print_tables(args)
    return 0


def _print_tables(args: argparse.Namespace) -> None:
    """The radial tables a float32 model of the checkpoint uses (``radial="auto"``)."""
    from .loading import load_model
    from .models.common.radial_table import radial_tables

    model = load_model(args.checkpoint, layout=args.layout, trust_checkpoint=args.trust_checkpoint,
                       dtype=torch.float32, radial="table")
    tables = radial_tables(model)
    if not tables:
        print("radial tables none (exact filters)")
    for table in tables:
        size = table.coefficients.numel() * table.coefficients.element_size() / 1024
        print(f"radial table  {table.name}: {table.pieces} cubic pieces x {table.channels} channels, "
              f"{size:.0f} KiB (float32), bound {table.bound:.1e}")


def _energy(args: argparse.Namespace) -> int:
    """Per frame of each structure file: atoms, energy (eV) and largest force (eV/Å) from the
    model, through the ASE calculator (units converted from ``--energy-unit``/``--length-unit``),
    and the energy the file stores, when it has one, beside it. Several files (a shell glob):
    each line starts with ``FILE:FRAME`` instead of ``FRAME``."""
    from .calculator import FastNNPCalculator

    for path in args.structures:  # every file exists before the model loads
        _check_structure_file(path)
    calc = None
    for path in args.structures:
        frames = 0
        for index, atoms in enumerate(_frames(path)):
            if calc is None:  # after the first frame parsed: an unreadable file fails before the model loads
                calc = FastNNPCalculator(args.checkpoint, energy_unit=args.energy_unit, length_unit=args.length_unit,
                                         layout=args.layout, trust_checkpoint=args.trust_checkpoint)
            stored = _stored_energy(atoms)
            atoms.calc = calc
            try:
                energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            except (ValueError, CallTooLarge) as error:  # bad atoms or too many: name the frame
                raise StructureFileError(f"{path}, frame {index}: {error}") from error
            label = f"{path}:{index}" if len(args.structures) > 1 else str(index)
            line = (f"{label}\t{len(atoms)} atoms\tenergy {energy:.6f} eV\t"
                    f"max |force| {float((forces**2).sum(1).max() ** 0.5):.6f} eV/Å")
            if stored is not None:
                line += f"\tfile energy {stored:.6f} eV\tdifference {energy - stored:+.6f} eV"
            print(line)
            frames += 1
        if not frames:
            raise StructureFileError(f"{path} holds no structures")
    return 0


def _check_structure_file(path: str) -> None:
    if os.path.isdir(path):
        raise IsADirectoryError(f"structure file {path} is a directory, not a file ASE reads")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"structure file not found: {path}")


def _frames(path: str):
    """The structures of ``path`` one by one; any failure of ASE's readers is a StructureFileError
    naming the file (they raise all kinds of errors on files they cannot parse)."""
    import ase.io

    frames = ase.io.iread(path)
    index = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001 (a parser's failure on a file it cannot read)
            text = (str(error).strip().splitlines() or [""])[0][:200]
            raise StructureFileError(f"cannot read frame {index} of {path} as a structure file: "
                                     f"{type(error).__name__}: {text}") from error
        yield atoms
        index += 1


def _stored_energy(atoms) -> Optional[float]:
    """The energy a structure file stores for a frame (eV, as ASE reads it), or None."""
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    energy = results.get("energy", atoms.info.get("energy"))
    try:
        return None if energy is None else float(energy)
    except (TypeError, ValueError):
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser: every option after "bench" is the benchmark's
        from .bench.cli import main as bench

        return bench(argv[1:], prog="fastnnp bench")
    if argv[:1] == ["train"]:  # likewise: any torchmd-train key may follow as --key value
        from .training.cli import main as train

        return train(argv[1:])
    parser = argparse.ArgumentParser(prog="fastnnp", description="Fast TorchMD-Net potentials.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", help="throughput of fastnnp's backends beside TorchMD-Net's (fastnnp bench --help)")
    sub.add_parser("train", help="train from a torchmd-train YAML config (fastnnp train --help)")
    for name, func, help_text in (
        ("info", _info, "describe a TorchMD-Net checkpoint"),
        ("energy", _energy, "energies and forces of structures in any file ASE reads"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("checkpoint")
        if name == "energy":
            p.add_argument("structures", nargs="+", help="files ASE reads (all their frames)")
            p.add_argument("--energy-unit", default="eV", help="the model's energy unit (eV, meV, kcal/mol, kJ/mol, Hartree)")
            p.add_argument("--length-unit", default="Å", help="the model's length unit (Å, nm, Bohr)")
        p.add_argument("--layout", default="auto", choices=["auto", "legacy", "current"])
        p.add_argument("--trust-checkpoint", action="store_true", help="allow arbitrary unpickling")
        p.set_defaults(func=func)
    p = sub.add_parser("lammps-export", help=LAMMPS_EXPORT_HELP)
    lammps_export_arguments(p)
    p.set_defaults(func=lammps_export)
    args = parser.parse_args(argv)
    prefix = f"fastnnp {args.command}"
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_: print(f"{prefix}: warning: {_one_line(message)}", file=sys.stderr)
        try:
            return args.func(args)
        except USER_ERRORS as error:
            print(f"{prefix}: error: {_one_line(error)}", file=sys.stderr)
            return USAGE_ERROR


def _one_line(error: BaseException) -> str:
    """An error's message on one line (OSError without a message: its type and file)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
