"""What compiled kernels use on the GPU they were compiled for, found without one, and its report.

ptxas's figures (registers per thread, spill stores and loads, stack frame) are not in
Triton's metadata, so :func:`ptxas_figures` runs Triton's own cubin step again on a compiled
kernel's PTX with Triton's ptxas log switched on (``knobs.nvidia.dump_ptxas_log``): the same
bundled ptxas with the same options, checked by comparing the two cubins byte for byte.
:func:`write_report` writes ``kernel_resources.json`` and ``kernel_resources.md``: those
figures, shared memory, num_warps, num_stages and the theoretical occupancy (:mod:`.occupancy`).
"""

import contextlib
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import make_backend

from .occupancy import SM90, Occupancy, SmLimits, occupancy

_REGISTERS = re.compile(r"Used (\d+) registers")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_CHECKOUT = Path(__file__).resolve().parents[3]


class PtxasFigures(NamedTuple):
    """Per thread: registers, and bytes of spill stores, spill loads and stack frame."""

    registers: int
    spill_stores: int
    spill_loads: int
    stack_frame: int


class KernelResources(NamedTuple):
    """One compile case's resources: ``kernel`` ("module.function"), the feature width
    ``channels`` it was compiled at, its constexprs, ptxas's figures, dynamic shared memory
    per block (bytes) and the occupancy on the report's SM."""

    kernel: str
    channels: int
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    ptxas: PtxasFigures
    shared: int
    occupancy: Occupancy


def parse_ptxas_log(log: str) -> PtxasFigures:
    """The figures of ``ptxas -v``'s log of one kernel."""
    registers, frame = _REGISTERS.search(log), _FRAME.search(log)
    if registers is None or frame is None:
        raise ValueError(f"no register or stack frame line in the ptxas log:\n{log}")
    stack, stores, loads = (int(x) for x in frame.groups())
    return PtxasFigures(int(registers.group(1)), stores, loads, stack)


def ptxas_figures(kernel: Any, target: GPUTarget) -> PtxasFigures:
    """ptxas's figures for a kernel returned by ``triton.compile(..., target=target)``."""
    backend = make_backend(target)
    metadata = kernel.metadata._asdict()
    options = backend.parse_options(dict(metadata))
    log = io.StringIO()
    with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.nvidia.dump_ptxas_log = True
        cubin = backend.make_cubin(kernel.asm["ptx"], dict(metadata), options, target.arch)
    if cubin != kernel.asm["cubin"]:
        raise RuntimeError(f"{metadata['name']}: ptxas run again made another cubin, so its log is not this kernel's")
    return parse_ptxas_log(log.getvalue())


def kernel_resources(
    name: str, channels: int, constexprs: dict[str, Any], kernel: Any, target: GPUTarget, limits: SmLimits = SM90
) -> KernelResources:
    """The resources of one compiled case (``kernel`` from ``triton.compile``)."""
    figures = ptxas_figures(kernel, target)
    num_warps, num_stages, shared = kernel.metadata.num_warps, kernel.metadata.num_stages, kernel.metadata.shared
    return KernelResources(
        name, channels, dict(constexprs), num_warps, num_stages, figures, shared,
        occupancy(figures.registers, shared, num_warps, limits),
    )


def source_commit() -> str:
    """HEAD of the git checkout fastnnp is imported from, with " + uncommitted changes" when
    fastnnp/ differs from it; "unknown" outside a checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=_CHECKOUT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head, changes = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", "fastnnp")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if changes else "")


def _record(row: KernelResources) -> dict:
    return {
        "kernel": row.kernel, "channels": row.channels, "constexprs": row.constexprs, "num_warps": row.num_warps,
        "num_stages": row.num_stages, **row.ptxas._asdict(), "shared": row.shared, "blocks_per_sm": row.occupancy.blocks,
        "active_warps": row.occupancy.warps, "occupancy": row.occupancy.fraction,
        "limited_by": list(row.occupancy.limited_by),
    }


def _markdown(rows: list[KernelResources], header: dict, limits: SmLimits) -> str:
    lines = [
        f"# Kernel resources on {header['target']}",
        "",
        f"Every compile case (`compile_cases` of the modules under `fastnnp/kernels`) compiled for "
        f"{header['target']} by Triton {header['triton']} with {header['num_rbf']} radial functions, at commit "
        f"`{header['commit']}`; written by `{header['command']}`.",
        "",
        "Registers per thread and the spill stores, spill loads and stack frame (bytes per thread) are "
        "ptxas's (Triton's cubin step run again with its ptxas log on); shared memory is Triton's dynamic "
        "shared memory per block. num_warps is the compiled one (Triton's default 4 unless the case sets it): "
        "a launch with another num_warps has other figures. stages is the compiled num_stages (software "
        "pipelining of loads in loops; Triton's default 3 unless the case sets it).",
        "",
        f"Occupancy = resident blocks x num_warps / {limits.warps}, the blocks being the fewest that each "
        f"limit allows: {limits.registers} registers per SM in units of {limits.register_granularity} per warp, "
        f"{limits.shared} B of shared memory per SM in units of {limits.shared_granularity} B with "
        f"{limits.reserved_shared} B reserved per block ({limits.shared_per_block} B at most per block), "
        f"{limits.threads} threads and {limits.blocks} blocks per SM.",
        "",
        "| kernel | F | warps | stages | registers | spill stores (B) | spill loads (B) | stack frame (B) | shared (B) "
        "| blocks/SM | occupancy | limited by | constexprs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        figures, occ = row.ptxas, row.occupancy
        constexprs = " ".join(f"{k}={v}" for k, v in row.constexprs.items())
        lines.append(
            f"| {row.kernel} | {row.channels} | {row.num_warps} | {row.num_stages} | {figures.registers} | {figures.spill_stores} "
            f"| {figures.spill_loads} | {figures.stack_frame} | {row.shared} | {occ.blocks} | {occ.fraction:.1%} "
            f"| {', '.join(occ.limited_by)} | {constexprs} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    rows: list[KernelResources], directory: Path, target: str, num_rbf: int, command: str, limits: SmLimits = SM90
) -> tuple[Path, Path]:
    """Write ``kernel_resources.json`` and ``.md`` into ``directory`` (made if missing) for
    kernels compiled for ``target`` (e.g. "sm_90") by ``command``; returns their paths."""
    header = {"commit": source_commit(), "triton": triton.__version__, "target": target, "num_rbf": num_rbf,
              "command": command}
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "kernel_resources.json", directory / "kernel_resources.md"
    report = {**header, "limits": limits._asdict(), "kernels": [_record(row) for row in rows]}
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(_markdown(rows, header, limits))
    return json_path, md_path
