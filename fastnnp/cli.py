"""The ``fastnnp`` command line."""

import argparse
import sys
from typing import Optional, Sequence

import torch

def _info(args: argparse.Namespace) -> int:
    from .checkpoint import read_checkpoint
    from .models.factory import build_model

    ckpt = read_checkpoint(args.checkpoint, layout=args.layout, trust_checkpoint=args.trust_checkpoint)
    hp = ckpt.hparams
    model = build_model(hp, list(ckpt.state_dict), default_box=ckpt.default_box)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"checkpoint    {args.checkpoint}")
    print(f"model         {hp['model']} ({hp.get('equivariance_invariance_group', '-')})")
    print(f"features      {hp['embedding_dimension']} x {hp['num_layers']} layers, {hp['num_rbf']} {hp['rbf_type']} rbf")
    print(f"cutoff        {hp['cutoff_lower']} .. {hp['cutoff_upper']}")
    print(f"output        {hp['output_model']} (reduce {hp.get('reduce_op', 'add')}), priors {hp.get('prior_model')}")
    print(f"precision     {hp.get('precision', 32)}, max_z {hp['max_z']}, parameters {n_params}")
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
    import ase.io

    from .loading import load_model

    model = load_model(args.checkpoint, layout=args.layout, trust_checkpoint=args.trust_checkpoint)
    for index, atoms in enumerate(ase.io.iread(args.structures)):
        z = torch.as_tensor(atoms.numbers, dtype=torch.long)
        pos = torch.as_tensor(atoms.positions, dtype=model.dtype)
        if atoms.pbc.any() and not atoms.pbc.all():
            raise SystemExit(f"frame {index}: mixed periodicity {atoms.pbc.tolist()} is not supported here")
        box = torch.as_tensor(atoms.cell.array, dtype=model.dtype) if atoms.pbc.all() else None
        charge = torch.tensor([float(atoms.info.get("charge", 0.0))], dtype=model.dtype)
        energy, neg_dy = model(z, pos, box=box, q=charge)
        fmax = neg_dy.norm(dim=1).max().item()
        print(f"{index}\t{len(atoms)} atoms\tenergy {energy.item():.6f}\tmax |force| {fmax:.6f}")
    return 0


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
            p.add_argument("structures")
        p.add_argument("--layout", default="auto", choices=["auto", "legacy", "current"])
        p.add_argument("--trust-checkpoint", action="store_true", help="allow arbitrary unpickling")
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
