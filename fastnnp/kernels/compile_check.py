"""Compile every kernel for an NVIDIA GPU without one: ``python -m fastnnp.kernels.compile_check``.

The interpreter runs kernels as Python, so it cannot see what only the GPU compiler rejects
(type changes of loop-carried values, unsupported constructs) or a kernel that needs more
shared memory than the device has. This compiles every kernel at production shape (F=128,
32 radial functions, the GPU tile) down to a cubin with Triton's bundled ptxas, for sm_90
(H100) by default, and prints the shared memory each program needs. Kernels are found by
themselves: every module under :mod:`fastnnp.kernels` with a ``compile_cases`` function
(:mod:`fastnnp.kernels.common.compile_case`). Needs ``TRITON_INTERPRET`` unset (it sets it
to 0 itself when run as a module). Exits 1 when a kernel fails to compile or exceeds the
shared-memory limit.
"""

import argparse
import importlib
import os
import pkgutil
import sys

os.environ["TRITON_INTERPRET"] = "0"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import fastnnp.kernels  # noqa: E402
from fastnnp.kernels.common.compile_case import CompileCase  # noqa: E402

# Dynamic shared memory one program may use on the H100 (227 KiB).
SHARED_LIMIT = 232448


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """The cases every kernel module under :mod:`fastnnp.kernels` declares, in module order."""
    cases = []
    for info in pkgutil.walk_packages(fastnnp.kernels.__path__, "fastnnp.kernels."):
        if info.ispkg or info.name == "fastnnp.kernels.compile_check":
            continue
        module = importlib.import_module(info.name)
        if hasattr(module, "compile_cases"):
            cases += module.compile_cases(channels, num_rbf)
    return cases


def _signature(case: CompileCase) -> dict:
    signature = {}
    for name in case.fn.arg_names:
        if name in case.constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = case.pointers.get(name, "*fp32")
        else:
            signature[name] = "fp32" if name in case.floats else "i32"
    return signature


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for H100")
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--num-rbf", type=int, default=32)
    args = parser.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    failed = False
    for case in compile_cases(args.channels, args.num_rbf):
        fn = case.fn
        name = f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}"
        source = ASTSource(
            fn=fn, signature=_signature(case),
            constexprs={(fn.arg_names.index(k),): v for k, v in case.constexprs.items()},
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
