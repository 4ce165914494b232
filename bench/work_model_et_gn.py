"""Work model of the Equivariant Transformer's and the Graph Network's Triton kernels: FLOPs and
minimum bytes per atom of each kernel launch of an energy + forces call, and the H200 floor.

Per-edge counts are the kernels' own, counted line by line in their docstrings
(``fastnnp/kernels/et/attention_messages.py``, ``fastnnp/kernels/common/cfconv.py``); the
conventions (FLOPs, "matmul" = ``tl.dot``, minimum DRAM bytes = each array once, "gathered" =
other atoms' rows and table rows loaded per edge, the floor of a step and of the call) are
:mod:`work_model`'s, whose ``Step`` this uses. The neighbour search and the edge-vector glue are
those of TensorNet's model (same kernels). The per-atom torch linears between the kernels
(projections, ``combine``, ``lin1``/``lin2``/``lin``) are counted as GEMMs, their output
arrays written and read once; layer norms and activations are left out (a few F FLOPs and one
pass over [N, F] each).

Shapes: the bench presets ``et-128`` (6 layers, 32 expnorm functions, 8 heads, "both", neighbour
embedding) and ``gn-128`` (6 layers, 50 functions, hidden width F, "add", neighbour embedding),
water at 5 Å (53.9 directed neighbours per atom, table width K = 80), each with exact filters
("mlp") and with radial tables ("table"; ``table_pieces`` pieces of 4 x C floats read once per
launch as "fixed" bytes).

    python bench/work_model_et_gn.py        # writes bench/results/work_model_et_gn.{md,json}
"""

import argparse
from pathlib import Path
from typing import NamedTuple

from work_model import (
    ATOMS, BANDWIDTH, FP32_RATE, TF32_RATE, Shape, Step, edge_glue, neighbor_search, step_table, summary, write_report,
)

from fastnnp.bench.environment import commit, source_digest

OUT = Path(__file__).resolve().parent / "results" / "work_model_et_gn"


class Model(NamedTuple):
    name: str
    channels: int  # F (ET: H heads x D; GN: hidden = filters = F)
    layers: int
    num_rbf: int
    edges: float = 53.9
    table_pieces: int = 2048

    @property
    def capacity(self) -> int:
        return Shape(channels=self.channels, edges=self.edges).capacity


def gemm(name: str, rows_in: int, rows_out: int, F: int, count: int, vectors: int = 1) -> list[Step]:
    """A torch linear F*rows_in -> F*rows_out on ``vectors`` rows per atom, forward and backward
    (the input gradient only: parameters are constants)."""
    flops = 2 * vectors * rows_in * F * rows_out * F
    moved = 4 * vectors * F * (rows_in + rows_out)
    return [Step(name, "forward", "torch", flops, 0, moved, count=count),
            Step(name, "backward", "torch", flops, 0, moved, count=count)]


def cfconv(m: Model, filter_kind: str, count: int, name: str) -> list[Step]:
    """One ``fastnnp::cfconv`` launch ("add") and its backward, per the kernel's docstring."""
    F, R, E, K = m.channels, m.num_rbf, m.edges, m.capacity
    H = F
    if filter_kind == "two":
        forward = (2 * R * H + 2 * H * F, 15 * R + 5 * H + 3 * F)
        backward = (4 * R * H + 4 * H * F, 10 * H + 10 * F)
        weights = 4 * (R * H + H * F + H + F)
    elif filter_kind == "one":
        forward = (2 * R * F, 15 * R + 3 * F)
        backward = (4 * R * F, 15 * R + 10 * F)
        weights = 4 * (R * F + F)
    else:  # table
        forward, backward, weights = (0, 10 + 8 * F), (0, 10 + 20 * F), 0
    table_rows = 16 * F if filter_kind == "table" else 0
    fixed = m.table_pieces * 4 * F * 4 if filter_kind == "table" else 0
    slots = 16 * K  # neighbour index and edge vector per slot
    return [
        # h read, out written per atom; per edge the sender's h row (and the piece's rows) gathered.
        Step(name, "forward", "kernel", E * forward[0], E * forward[1], slots + 8 * F,
             E * (16 + 4 * F + table_rows) + E * weights / 16, fixed, count),
        # g and h read, grad_h written per atom, grad_vec written per slot.
        Step(name, "backward", "kernel", E * backward[0], E * backward[1], slots + 12 * K + 12 * F,
             E * (16 + 12 * F + table_rows) + E * weights / 16, fixed, count),
    ]


def et_attention(m: Model, table: bool) -> list[Step]:
    """``fastnnp::et_attention`` and its two backward kernels per layer, per the kernel's docstring
    ("both"; the exact projections as rank-one FMA updates, not tl.dot: all "other" FLOPs)."""
    F, R, E, K, L = m.channels, m.num_rbf, m.edges, m.capacity, m.layers
    if table:
        flops = (45 * F, 100 * F, 70 * F)
        table_rows, weights, fixed = 64 * F, 0, m.table_pieces * 4 * 4 * F * 4
    else:
        flops = (8 * R * F + 37 * F + 15 * R, 16 * R * F + 74 * F, 8 * R * F + 60 * F)
        table_rows, weights, fixed = 0, 4 * R * 4 * F / 4, 0  # [R, 4F] weights per 4-slot step
    slots = 16 * K
    return [
        # q, k [F], v [3F], vec [3F] read, m [F], mvec [3F] written per atom.
        Step("et_attention", "forward", "kernel", 0, E * flops[0], slots + 48 * F,
             E * (16 + 28 * F + table_rows + weights), fixed, L),
        # receiver: q, k, v, vec, dm, dmvec read, dq written; grad_vec per slot.
        Step("et_attention receiver", "backward", "kernel", 0, E * flops[1], slots + 12 * K + 64 * F,
             E * (28 * F + table_rows + weights), fixed, L),
        # sender: q, k, v, vec, dm, dmvec read, dk, dv, dvec written.
        Step("et_attention sender", "backward", "kernel", 0, E * flops[2], slots + 88 * F,
             E * (20 * F + table_rows + weights), fixed, L),
    ]


def et_steps(m: Model, table: bool) -> list[Step]:
    F, L = m.channels, m.layers
    s = Shape(channels=F, layers=L, num_rbf=m.num_rbf, edges=m.edges)
    steps = [neighbor_search(s), *edge_glue(s), *cfconv(m, "table" if table else "one", 1, "cfconv (neighbour embedding)"),
             *gemm("combine", 2, 1, F, 1), *et_attention(m, table),
             # q, k, v projections (F -> 5F), vec_proj on 3 vectors (F -> 3F), o_proj (F -> 3F)
             *gemm("q, k, v", 1, 5, F, L), *gemm("vec_proj", 1, 3, F, L, vectors=3), *gemm("o_proj", 1, 3, F, L)]
    return _ordered(steps)


def gn_steps(m: Model, table: bool) -> list[Step]:
    F, L = m.channels, m.layers
    s = Shape(channels=F, layers=L, num_rbf=m.num_rbf, edges=m.edges)
    steps = [neighbor_search(s), *edge_glue(s), *cfconv(m, "table" if table else "one", 1, "cfconv (neighbour embedding)"),
             *gemm("combine", 2, 1, F, 1), *cfconv(m, "table" if table else "two", L, "cfconv (interactions)"),
             *gemm("lin1, lin2, lin", 1, 3, F, L)]
    return _ordered(steps)


def _ordered(steps: list[Step]) -> list[Step]:
    return [st for st in steps if st.direction == "forward"] + [st for st in steps if st.direction == "backward"]


MODELS = {"et-128": (Model("et-128", 128, 6, 32), et_steps), "gn-128": (Model("gn-128", 128, 6, 50), gn_steps)}


def _markdown(report: dict) -> str:
    lines = [
        "# Work model: ET and GN energy + forces on the Triton path",
        "",
        f"Written by `python bench/work_model_et_gn.py` at commit `{report['commit']}` (source digest "
        f"`{report['source_digest']}`); conventions in its docstring and `bench/work_model.py`'s. Floor per step = "
        f"max(bytes / {BANDWIDTH / 1e12:g} TB/s, matmul FLOPs / rate + other FLOPs / {FP32_RATE / 1e12:g} TFLOP/s), "
        f"rate {FP32_RATE / 1e12:g} (ieee) or {TF32_RATE / 1e12:g} (tf32) TFLOP/s; the call's floor is the sum.",
        "",
        "| model | radial | matmul MFLOP/atom | other MFLOP/atom | KB/atom | gathered KB/atom | fixed MB "
        "| ieee 1k atoms (µs) | ieee 1M atoms (ms) | tf32 1M atoms (ms) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, variants in report["models"].items():
        for variant, data in variants.items():
            t, f = data["summary"], data["summary"]["floor_seconds"]
            lines.append(
                f"| {name} | {variant} | {t['matmul_flops'] / 1e6:.2f} | {t['other_flops'] / 1e6:.2f} | {t['bytes'] / 1e3:.1f} "
                f"| {t['gathered'] / 1e3:.0f} | {t['fixed_bytes'] / 1e6:.1f} | {f['ieee_1000'] * 1e6:.0f} "
                f"| {f['ieee_1000000'] * 1e3:.2f} | {f['tf32_1000000'] * 1e3:.2f} |"
            )
    for name, variants in report["models"].items():
        for variant, data in variants.items():
            lines += ["", f"## {name}, {variant}", "", *step_table([Step(**row) for row in data["steps"]], tf32=False)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT, help="output path without suffix (default %(default)s)")
    args = parser.parse_args(argv)
    models = {}
    for name, (shape, steps_of) in MODELS.items():
        models[name] = {}
        for variant, table in (("mlp", False), ("table", True)):
            steps = steps_of(shape, table)
            models[name][variant] = {"shape": shape._asdict(), "steps": [st._asdict() for st in steps], "summary": summary(steps)}
    report = {"commit": commit(), "source_digest": source_digest(), "atoms": ATOMS,
              "hardware": {"bandwidth": BANDWIDTH, "fp32_rate": FP32_RATE, "tf32_rate": TF32_RATE}, "models": models}
    write_report(args.out, report, _markdown(report))


if __name__ == "__main__":
    main()
