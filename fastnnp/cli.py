"""The ``fastnnp`` command line."""

import argparse
import sys
from typing import Optional, Sequence

import torch

NOT_YET = {
    "train": "minimal trainer (planned: fastnnp train cfg.yaml)",
}


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
    return 0


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
    parser = argparse.ArgumentParser(prog="fastnnp", description="Fast TorchMD-Net potentials.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", help="throughput of fastnnp's backends beside TorchMD-Net's (fastnnp bench --help)")
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
    for name, text in NOT_YET.items():
        p = sub.add_parser(name, help=f"not yet: {text}")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args, text=text: _not_yet(args.command, text))
    args = parser.parse_args(argv)
    return args.func(args)


def _not_yet(command: str, text: str) -> int:
    print(f"fastnnp {command}: not yet: {text}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
