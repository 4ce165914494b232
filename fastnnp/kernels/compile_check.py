"""Compile every kernel for an NVIDIA GPU without one: ``python -m fastnnp.kernels.compile_check``.

The interpreter runs kernels as Python, so it cannot see what only the GPU compiler rejects
(type changes of loop-carried values, unsupported constructs) or a kernel that needs more
shared memory than the device has. This compiles each kernel at TensorNet's production shape
(F=128, 32 radial functions, the GPU tile) down to a cubin with Triton's bundled ptxas, for
sm_90 (H100) by default, and prints the shared memory each program needs. Needs
``TRITON_INTERPRET`` unset (it sets it to 0 itself when run as a module). Exits 1 when a
kernel fails to compile or exceeds the shared-memory limit.
"""

import argparse
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from .common import edge_math, neighbor_search  # noqa: E402
from .tensornet import embedding_messages, interaction_messages, interaction_update  # noqa: E402

# Dynamic shared memory one program may use on the H100 (227 KiB).
SHARED_LIMIT = 232448
FLOAT_SCALARS = ("alpha", "lower", "upper")
INT_POINTERS = ("nbr_ptr", "counts_ptr")
NEIGHBOR_POINTERS = {
    "atom_ptr": "*i32", "bin_ptr": "*i64", "shift_ptr": "*i32", "sys_ptr": "*i32", "nbins_ptr": "*i64",
    "reach_ptr": "*i64", "base_ptr": "*i64", "bin_start_ptr": "*i64", "nbr_ptr": "*i32", "img_ptr": "*i32",
    "count_ptr": "*i32",
}


def _signature(fn, constexprs: dict, pointer_types: dict) -> dict:
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = pointer_types.get(name, "*fp32")
        else:
            signature[name] = "fp32" if name in FLOAT_SCALARS else "i32"
    return signature


def _cases(F: int, R: int) -> list:
    rows, slots = edge_math.GPU_TILE
    block = dict(BR=max(16, triton.next_power_of_2(R)), BF=triton.next_power_of_2(F), ROWS=rows, SLOTS=slots)
    ints = {name: "*i32" for name in INT_POINTERS}
    cases = []
    for fn in (interaction_messages._forward_kernel, interaction_messages._backward_kernel):
        meta = dict(RBF=0, ACT=0, HAS_LOWER=False, PRECISION="ieee", KC=interaction_messages.HIDDEN_CHUNK, **block)
        cases.append((fn, meta, ints))
    for fn in (embedding_messages._forward_kernel, embedding_messages._backward_kernel):
        cases.append((fn, dict(RBF=0, HAS_LOWER=False, PRECISION="ieee", **block), ints))
    atom_block = dict(BN=interaction_update.GPU_BLOCK_ATOMS, BF=interaction_update.BLOCK_CHANNELS)
    for fn in (interaction_update._products_forward, interaction_update._products_backward):
        cases.append((fn, dict(O3=True, **atom_block), {}))
    for fn in (interaction_update._residual_forward, interaction_update._residual_backward):
        cases.append((fn, atom_block, {}))
    cases.append((neighbor_search._neighbor_kernel, dict(PERIODIC=True, BLOCK=neighbor_search._BLOCK),
                  NEIGHBOR_POINTERS))
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for H100")
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--num-rbf", type=int, default=32)
    args = parser.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    failed = False
    for fn, constexprs, pointer_types in _cases(args.channels, args.num_rbf):
        name = f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}"
        source = ASTSource(
            fn=fn, signature=_signature(fn, constexprs, pointer_types),
            constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()},
        )
        try:
            kernel = triton.compile(source, target=target)
        except Exception as error:  # report every kernel, then fail
            print(f"FAIL {name}: {type(error).__name__}: {error}")
            failed = True
            continue
        shared = kernel.metadata.shared
        verdict = "ok" if shared <= SHARED_LIMIT else f"EXCEEDS {SHARED_LIMIT}"
        failed |= shared > SHARED_LIMIT
        print(f"{name}: shared memory {shared} B ({verdict})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
