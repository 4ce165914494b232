"""The run's outputs: ``NAME.json`` (everything, every sample), ``NAME.md`` (the table) and
``NAME.png`` (throughput and ms/step against system size)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys

from .backends import BACKENDS
from .models import PRESETS

STATUS_TEXT = {"oom": "out of memory", "timeout": "timeout", "failed": "failed", "skipped": "skipped",
               "disagrees": "DISAGREES"}
BUSY_SHARE = 0.1  # other processes' share of the CPU above which the table warns
MARKERS = {"droplet": "o", "water": "s", "cu": "D", "ethanols": "^"}


def save_json(report: dict, path: str) -> None:
    """Write ``report`` atomically (a run killed mid-write keeps the previous file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1, default=str)  # default: a checkpoint's odd hyper-parameter values
    os.replace(path + ".tmp", path)


def write_outputs(report: dict, folder: str, name: str) -> list[str]:
    """JSON, Markdown table and PNG plot of ``report`` in ``folder``; returns their paths. Without
    matplotlib there is no plot (``--merge`` the JSON where it is installed to draw it)."""
    paths = [os.path.join(folder, f"{name}.{ext}") for ext in ("json", "md", "png")]
    save_json(report, paths[0])
    with open(paths[1], "w") as f:
        f.write(table(report) + "\n")
    if importlib.util.find_spec("matplotlib") is None:
        print("no plot: matplotlib is not installed (pip install 'fastnnp[bench]')", file=sys.stderr)
        return paths[:2]
    plot(report, paths[2])
    return paths


def table(report: dict) -> str:
    """The Markdown summary: a header naming model, device, versions and settings; one line per
    (system, backend); the largest system each backend ran; how to read the columns."""
    env, config = report["environment"], report["config"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    model = config["model"] + (f", random weights (seed {config['seed']})" if config["model"] in PRESETS else "")
    lines = [
        f"# fastnnp bench: {config['model_description']}",
        "",
        f"- model: {model}; energy + forces per call, {config['dtype']} ({_tf32(config)})",
        f"- device: {env['device']}; CPU {env['cpu']}, {env['cpu_cores']} cores, {env['torch_threads']} torch threads, "
        f"{env['memory_gib']} GiB{_threads(config)}; other processes took {100 * env.get('other_processes_cpu_share', 0):.0f} % "
        "of the CPU during the run",
        f"- code: commit {env['commit'][:12]} (source digest {env['source_digest']}); {versions}",
        f"- timing: after the first call, {config['warmup']}+ warm-up calls (more while calls still speed up), "
        f"then {config['repeats']} timed calls (fewer, at least {min(3, config['repeats'])}, once "
        f"{config['target_s']:g} s have passed); {env['date']}",
    ]
    if env.get("other_processes_cpu_share", 0) > BUSY_SHARE:
        lines.append("- **warning: other processes competed for the CPU during this run: its timings are not reliable**")
    lines += [f"- not run: {backend}: {why}" for backend, why in report.get("unavailable", {}).items()]
    head = ["system", "atoms", "nbrs/atom", "backend", "ms/step", "IQR ms", "atom-steps/s", "ns/day 1 fs",
            "ns/day 2 fs", "peak MiB", "start-up s", "× torchmdnet", "× TMD best", "check"]
    lines += ["", "| " + " | ".join(head) + " |", "|---|---:|---:|---|" + "---:|" * 9 + "---|"]
    for row in report["results"]:
        info = report["systems"].get(row["system"], {})
        lines.append("| " + " | ".join(_cells(row, info)) + " |")
    lines += ["", *_not_measured(report), *_largest(report), "", *NOTES]
    return "\n".join(lines)


def _tf32(config: dict) -> str:
    """TF32 off, or which rows' radial-MLP kernels use it and the tolerance they are checked at."""
    rows = config.get("tf32_rows")
    if not rows:
        return "TF32 off"
    rtol = config["agreement_rtol_by_backend"]
    checked = ", ".join(f"{row} checked at rtol {rtol[row]:g}" for row in rows)
    return f"TF32 off except the radial-MLP kernels of {checked}"


def _threads(config: dict) -> str:
    return f" (rows ran with {config['threads']} torch threads)" if config.get("threads") else ""


def _not_measured(report: dict) -> list[str]:
    """Why each row without a time has none (skipped, timeout, out of memory, failed)."""
    rows = [row for row in report["results"] if "median_ms" not in row]
    if not rows:
        return []
    lines = ["Rows without a time:"]
    lines += [f"- {row['system']} {row['backend']}: {STATUS_TEXT.get(row['status'], row['status'])}: "
              f"{row.get('error', 'no reason recorded')}" for row in rows]
    return lines + [""]


NOTES = (
    "ms/step: median milliseconds per energy+forces call (one MD step), warm-up excluded; IQR: its "
    "interquartile range. atom-steps/s: atoms / (s/step). ns/day: MD nanoseconds per day at a 1 fs or "
    "2 fs time step, force evaluation only. peak MiB: on CUDA torch's allocator peak; on CPU the peak "
    "resident memory of the row's own process (Python and libraries included). start-up s: loading, "
    "graph capture or compilation and the first call, excluded from ms/step. × torchmdnet: TorchMD-Net's "
    "default ms/step / this row's (> 1: faster); × TMD best: the same against the fastest TorchMD-Net mode "
    "that ran on the system. check: ref = the row every other row of the system is checked against before it "
    "is timed; ok = its energies and forces agree within the relative tolerance in the JSON; DISAGREES = "
    "they do not, and it was not timed.",
)


def _cells(row: dict, info: dict) -> list[str]:
    ident = [row["system"], f"{row['n_atoms']:,}", _num(info.get("neighbors_per_atom")), row["backend"]]
    if "median_ms" not in row:
        text = STATUS_TEXT.get(row["status"], row["status"])
        return ident + [text, "-", "-", "-", "-", _num(row.get("peak_mib")), "-", "-", "-", _check(row)]
    speedup = row.get("speedup", {})
    return ident + [
        _num(row["median_ms"]), f"{_num(row['q1_ms'])}–{_num(row['q3_ms'])}", _num(row["atom_steps_per_s"]),
        _num(row["ns_per_day_1fs"]), _num(row["ns_per_day_2fs"]), _num(row.get("peak_mib")),
        _num(row["setup_s"] + row["first_call_s"]), _num(speedup.get("vs_torchmdnet")),
        _num(speedup.get("vs_torchmdnet_best")), _check(row),
    ]


def _num(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits (more for large numbers), no exponent."""
    if value is None:
        return "-"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value)))) if value else 0
    return f"{value:,.{decimals}f}"


def _check(row: dict) -> str:
    agreement = row.get("agreement")
    if not agreement:
        return "-"
    if agreement["reference"] == row["backend"]:
        return "ref"
    return f"ok vs {agreement['reference']}" if agreement["passed"] else f"DISAGREES with {agreement['reference']}"


def _largest(report: dict) -> list[str]:
    """Per backend: the largest system it ran and the smallest that ran out of memory."""
    lines = ["Largest system that ran, per backend:"]
    for backend in BACKENDS:
        rows = [row for row in report["results"] if row["backend"] == backend]
        if not rows:
            continue
        ran = [row for row in rows if row["status"] == "ok"]
        oom = [row for row in rows if row["status"] == "oom"]
        text = max(ran, key=lambda r: r["n_atoms"])["system"] if ran else "none"
        if oom:
            text += f"; out of memory from {min(oom, key=lambda r: r['n_atoms'])['system']}"
        lines.append(f"- {backend}: {text}")
    return lines


def plot(report: dict, path: str) -> None:
    """Atom-steps/s and ms/step against atoms (log-log): a colour per backend, a marker per
    system family, lines joining one backend's sizes within a family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, time_ax) = plt.subplots(1, 2, figsize=(13, 5.2))
    colours = {b: f"C{i}" for i, b in enumerate(BACKENDS)}
    series: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for row in report["results"]:
        if "median_ms" in row:
            family = report["systems"][row["system"]]["family"]
            series.setdefault((row["backend"], family), []).append(
                (row["n_atoms"], row["atom_steps_per_s"], row["median_ms"]))
    labelled = set()
    for (backend, family), points in sorted(series.items(), key=lambda item: BACKENDS.index(item[0][0])):
        atoms, rate, ms = zip(*sorted(points), strict=True)
        label = None if backend in labelled else backend
        labelled.add(backend)
        style = dict(color=colours[backend], marker=MARKERS.get(family, "x"), label=label)
        rate_ax.plot(atoms, rate, **style)
        time_ax.plot(atoms, ms, **style)
    for ax, ylabel in ((rate_ax, "atom-steps / s (higher is better)"), (time_ax, "ms / step (energy + forces)")):
        ax.set(xscale="log", yscale="log", xlabel="atoms", ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
    families = sorted({family for _, family in series})
    handles = [plt.Line2D([], [], color="grey", marker=MARKERS.get(f, "x"), linestyle="", label=f) for f in families]
    if handles:
        rate_ax.legend(fontsize=8)
        time_ax.legend(handles=handles, title="systems", fontsize=8)
    env, config = report["environment"], report["config"]
    fig.suptitle(f"{config['model_description']}, {config['dtype']}; {env['device']}; commit {env['commit'][:12]}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
