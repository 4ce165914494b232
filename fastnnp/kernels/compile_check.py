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

``--channels 64 128`` compiles at each width in turn. ``--report DIR`` also writes
``kernel_resources.md`` and ``.json`` there (:mod:`fastnnp.kernels.common.resources`): registers,
spills, stack, shared memory, num_warps, num_stages and the theoretical sm_90 occupancy of every case.
"""

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import fastnnp.kernels  # noqa: E402
from fastnnp.kernels.common.compile_case import CompileCase  # noqa: E402
from fastnnp.kernels.common.occupancy import SM90  # noqa: E402
from fastnnp.kernels.common.resources import kernel_resources, write_report  # noqa: E402

# Dynamic shared memory one program may use on the H100 (227 KiB).
SHARED_LIMIT = SM90.shared_per_block


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


def _name(case: CompileCase) -> str:
    """"module.function" of a case, as printed and reported."""
    return f"{case.fn.__module__.rsplit('.', 1)[-1]}.{case.fn.__name__}"


def _compile(case: CompileCase, target: GPUTarget):
    """Compile one case and print its line; the compiled kernel, or None when it fails to
    compile or exceeds the shared-memory limit."""
    fn = case.fn
    source = ASTSource(
        fn=fn, signature=_signature(case),
        constexprs={(fn.arg_names.index(k),): v for k, v in case.constexprs.items()},
    )
    try:
        options = {"num_warps": case.num_warps}
        if case.num_stages is not None:
            options["num_stages"] = case.num_stages
        kernel = triton.compile(source, target=target, options=options)
    except Exception as error:  # report every kernel, then fail
        print(f"FAIL {_name(case)}: {type(error).__name__}: {error}")
        return None
    shared = kernel.metadata.shared
    verdict = "ok" if shared <= SHARED_LIMIT else f"EXCEEDS {SHARED_LIMIT}"
    print(f"{_name(case)}: shared memory {shared} B ({verdict})")
    return kernel if shared <= SHARED_LIMIT else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for H100")
    parser.add_argument("--channels", type=int, nargs="+", default=[128], help="feature widths F, one pass each")
    parser.add_argument("--num-rbf", type=int, default=32)
    parser.add_argument("--report", type=Path, metavar="DIR", help="write kernel_resources.md/.json here (sm_90)")
    args = parser.parse_args(argv)
    if args.report is not None and args.arch != 90:
        parser.error("--report knows the occupancy limits of sm_90 only")
    target = GPUTarget("cuda", args.arch, 32)
    failed = False
    rows = []
    for channels in args.channels:
        print(f"F={channels}, {args.num_rbf} radial functions, sm_{args.arch}:")
        for case in compile_cases(channels, args.num_rbf):
            kernel = _compile(case, target)
            failed |= kernel is None
            if kernel is not None and args.report is not None:
                rows.append(kernel_resources(_name(case), channels, case.constexprs, kernel, target))
    if args.report is not None and not failed:
        command = " ".join(["python -m fastnnp.kernels.compile_check", *(sys.argv[1:] if argv is None else argv)])
        for path in write_report(rows, args.report, f"sm_{args.arch}", args.num_rbf, command):
            print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
