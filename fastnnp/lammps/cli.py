"""``fastnnp lammps-export model.ckpt model-mliap.pt --elements H C N O``.

The main CLI adds the subcommand with :func:`add_arguments` and runs it with :func:`run`.
"""

import argparse

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}
METAL_SKIN = 2.0  # Å, LAMMPS's default neighbor skin in units metal
HELP = "write a checkpoint as a LAMMPS ML-IAP unified model (pair_style mliap unified)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's arguments, added to ``parser``."""
    parser.add_argument("checkpoint", help="the TorchMD-Net .ckpt file (one model)")
    parser.add_argument("output", help="the model file to write (.pt or .pth)")
    parser.add_argument("--elements", nargs="+", required=True,
                        help="chemical symbols of LAMMPS's element names, in pair_coeff order (pair_coeff * * H C N O)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: the checkpoint's precision")
    parser.add_argument("--device", default="cpu", help="where the model runs in LAMMPS: cpu, or cuda with KOKKOS GPUs")
    parser.add_argument("--radial", choices=("auto", "table", "exact"), default="auto",
                        help="radial filters, as load_model's radial= (default: tables for float32)")
    parser.add_argument("--layout", default="auto", choices=("auto", "legacy", "current"),
                        help="TensorNet weight layout, as load_model's layout=")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow checkpoints that need full unpickling")


def run(args: argparse.Namespace) -> int:
    """Export as :func:`add_arguments`'s ``args`` say, print the LAMMPS input lines; 0 on success.
    ValueError / OSError for bad input, before the file is written."""
    from .export import build_unified, check_model_path, save_unified

    check_model_path(args.output)
    unified = build_unified(
        args.checkpoint, args.elements, dtype=DTYPES[args.dtype] if args.dtype else None, device=args.device,
        radial=args.radial, layout=args.layout, trust_checkpoint=args.trust_checkpoint,
    )
    save_unified(unified, args.output)
    print(f"wrote {args.output}: {unified}")
    print("LAMMPS (units metal, newton on), KOKKOS with forward_exchange (LAMMPS 2025+):")
    print(f"    pair_style mliap unified {args.output} 0")
    print(f"    pair_coeff * * {' '.join(unified.element_types)}")
    if unified.hops > 1:
        print(f"without KOKKOS (a ghost shell of {unified.hops} hops x {unified.cutoff:g}):")
        print(f"    pair_style mliap unified {args.output} 1")
        print(f"    pair_coeff * * {' '.join(unified.element_types)}")
        print(f"    comm_modify cutoff {unified.ghost_cutoff + METAL_SKIN:g}  # {unified.ghost_cutoff:g} + the neighbor skin")
    if unified.energy_offset != 0.0:
        print(f"note: the model's per-system mean {unified.energy_offset:g} is left out of LAMMPS's energies")
    return 0
