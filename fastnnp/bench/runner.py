"""The run: every system in turn, every backend on it in its own subprocess, interleaved.

Per system the reference backend runs first (:data:`backends.REFERENCES`); its energies and
forces are saved and every later row must reproduce them before it is timed. Each
(system, backend) subprocess has a timeout (and on CPU an address-space cap), so running out
of memory, crashing or hanging is recorded as that row's status, not fatal; a backend that ran
out of memory or time on a system is not run on larger systems of the same family.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from . import backends, metrics, systems
from .environment import OtherCpuUse, cpu_name, environment
from .models import PRESETS, describe, hyperparameters, write_preset_checkpoint
from .worker import RESULT_TAG, SYSTEM_TAG

SCHEMA = "fastnnp-bench/1"
REPORT_KEYS = ("environment", "config", "systems", "results")  # what a report must hold to be merged
# Rows whose status stops the same backend on larger systems of the same family.
LIMITING = ("oom", "timeout")
# From this many atoms CPU workers run with glibc's MALLOC_MMAP_THRESHOLD_=65536, so freed
# memory goes back to the system (glibc's default heap fragments to several times the live size).
LARGE_CPU_SYSTEM = 50_000


class Runner:
    """Runs worker subprocesses, each with its own timeout, inside an overall time budget; on
    CPU each under an address-space limit so that running out of memory is an error in it."""

    min_row_s = 10.0  # with less of the budget left a row is not started (skipped, reason "budget")

    def __init__(self, timeout_s: float, budget_s: float | None, memory_limit_gib: float | None):
        self.timeout_s = timeout_s
        self.deadline = None if budget_s is None else time.monotonic() + budget_s
        self.memory_limit = None if memory_limit_gib is None else int(memory_limit_gib * 2**30)

    def measure(self, spec: dict, env: dict[str, str]) -> tuple[dict | None, dict]:
        """Run :func:`fastnnp.bench.worker.measure` on ``spec`` in a subprocess with ``env``
        added to its environment.

        ``spec``: system (request), backend, device, dtype, checkpoint, cutoff (Å),
        max_num_neighbors, warmup, repeats, target_s, stats (or None: the worker counts
        neighbours), reference ({backend, path} or None), save_reference (path or None).
        Returns the neighbour counts the worker made (or None) and its result.
        """
        left = float("inf") if self.deadline is None else self.deadline - time.monotonic()
        if left < self.min_row_s:
            return None, {"status": "skipped", "reason": "budget", "error": "not started: the run's time budget is spent"}
        timeout = min(self.timeout_s, left)
        command = [sys.executable, "-m", "fastnnp.bench.worker", json.dumps(spec)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1", **env), start_new_session=True,
                                   preexec_fn=self._limit_memory if self.memory_limit else None)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(process)
            if timeout < self.timeout_s:
                return None, {"status": "skipped", "reason": "budget",
                              "error": f"stopped after {timeout:.0f} s: the run's time budget is spent"}
            return None, {"status": "timeout", "error": f"no result after {timeout:.0f} s"}
        except BaseException:
            self._kill(process)
            raise
        stats = _tagged(stdout, SYSTEM_TAG)
        result = _tagged(stdout, RESULT_TAG)
        if result is None:
            tail = stderr.strip().splitlines()[-3:] or [f"exit status {process.returncode}"]
            killed = process.returncode in (-signal.SIGKILL, 137) or "memory" in stderr.lower()
            result = {"status": "oom" if killed else "failed", "error": tail[-1][:300]}
        return stats, result

    def _limit_memory(self) -> None:
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_limit, self.memory_limit))

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        """Kill the worker and whatever it started (its own session), then reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def _tagged(stdout: str, tag: str) -> dict | None:
    lines = [line for line in stdout.splitlines() if line.startswith(tag)]
    return json.loads(lines[-1][len(tag):]) if lines else None


def run(args: argparse.Namespace, save: Callable[[dict], None]) -> dict:
    """Measure every (system, backend) of ``args``; ``save(report)`` after every row."""
    with tempfile.TemporaryDirectory(prefix="fastnnp-bench-") as tmp:
        return Benchmark(args, tmp, save).run()


class Benchmark:
    """One run's state: the report growing row by row, the shared checkpoint, each system's
    reference row, and the (backend, family) pairs that ran out of memory or time."""

    def __init__(self, args: argparse.Namespace, tmp: str, save: Callable[[dict], None]):
        self.args, self.tmp, self.save = args, tmp, save
        self.hparams = hyperparameters(args.model)
        interpreting = os.environ.get("TRITON_INTERPRET") == "1"
        unavailable = {b: why for b in args.backends
                       if (why := backends.unavailable(b, args.device, args.dtype, self.hparams, interpreting))}
        self.order = [b for b in backends.run_order(args.backends) if b not in unavailable]
        self.runner = Runner(args.timeout_s, args.budget_s, args.memory_limit_gib if args.device == "cpu" else None)
        self.report = {"schema": SCHEMA, "environment": environment(), "config": config(args, self.hparams),
                       "unavailable": unavailable, "systems": {}, "results": []}
        self.report["environment"]["device"] = cpu_name() if args.device == "cpu" else "cuda"
        self.checkpoint = args.model
        if args.model in PRESETS:
            self.checkpoint = write_preset_checkpoint(args.model, os.path.join(tmp, f"{args.model}.ckpt"), args.seed)
        self.limits: dict[tuple[str, str], tuple[int, str]] = {}  # (backend, family) -> (atoms, why)
        self.other_cpu = OtherCpuUse()

    def run(self) -> dict:
        for request in self.args.systems:
            rows = self.run_system(systems.build(request), request)
            for backend, ratio in metrics.speedups(rows, backends.TORCHMDNET).items():
                next(row for row in rows if row["backend"] == backend)["speedup"] = ratio
            self.report["environment"]["other_processes_cpu_share"] = round(self.other_cpu.share(), 3)
            self.save(self.report)
        return self.report

    def run_system(self, system: systems.System, request: str) -> list[dict]:
        """Every backend on one system, the reference first; returns the system's rows."""
        info = self.report["systems"][system.name] = {
            "request": request, "family": system.family, "n_atoms": len(system.atoms),
            "n_systems": system.n_systems, "periodic": bool(system.atoms.pbc.any()),
            "elements": sorted(set(system.atoms.get_chemical_symbols())),
        }
        too_heavy = int(system.atoms.numbers.max()) >= self.hparams["max_z"]
        spec = {"system": request, "device": self.args.device, "dtype": self.args.dtype,
                "checkpoint": self.checkpoint, "cutoff": self.hparams["cutoff_upper"],
                "max_num_neighbors": self.hparams.get("max_num_neighbors", 64), "warmup": self.args.warmup,
                "repeats": self.args.repeats, "target_s": self.args.target_s, "stats": None, "reference": None,
                "threads": self.args.threads}
        rows = []
        for backend in self.order:
            row = {"system": system.name, "backend": backend, "n_atoms": info["n_atoms"]}
            limit_atoms, why = self.limits.get((backend, system.family), (None, ""))
            if too_heavy:
                row.update(status="skipped", reason="max_z",
                           error=f"an element is beyond the model's max_z {self.hparams['max_z']}")
            elif limit_atoms is not None and info["n_atoms"] >= limit_atoms:
                row.update(status="skipped", reason=f"after {why.split()[0]}", error=f"not run after {why}")
            else:
                self.measure_row(row, spec, system, info)
            print(f"[{time.strftime('%H:%M:%S')}] {system.name} {backend}: {_brief(row)}", flush=True)
            rows.append(row)
            self.report["results"].append(row)
            self.save(self.report)
        return rows

    def measure_row(self, row: dict, spec: dict, system: systems.System, info: dict) -> None:
        """Run one worker; fill ``row`` with its result and the derived metrics. The first row
        that succeeds becomes the system's reference (``spec["reference"]``)."""
        path = os.path.join(self.tmp, f"{system.name}.{row['backend']}.npz")
        spec.update(backend=row["backend"], save_reference=None if spec["reference"] else path)
        env = {}
        if self.args.device == "cpu" and info["n_atoms"] >= LARGE_CPU_SYSTEM:
            env = row["environment"] = {"MALLOC_MMAP_THRESHOLD_": "65536"}
        stats, result = self.runner.measure(spec, env)
        if stats:
            spec["stats"] = stats
            info.update(stats)
        row.update(result)
        if row["status"] == "ok" and spec["reference"] is None:
            spec["reference"] = {"backend": row["backend"], "path": path}
            row["agreement"] = {"reference": row["backend"], "passed": True}
        if row["status"] in LIMITING:
            self.limits[(row["backend"], system.family)] = (info["n_atoms"], f"{row['status']} at {system.name}")
        if row.get("samples_s"):
            row.update(metrics.sample_stats(row["samples_s"]))
            row.update(metrics.throughput(info["n_atoms"], row["median_ms"] / 1e3))
        if row.get("device_name"):
            self.report["environment"]["device"] = row["device_name"]


def _brief(row: dict) -> str:
    if "median_ms" in row:
        return f"{row['median_ms']:.4g} ms/step"
    return f"{row['status']}: {row.get('error', '')}".rstrip(": ")


def config(args: argparse.Namespace, hparams: dict) -> dict:
    """The run's settings, as the JSON records them: ``tf32`` is torch's own TF32 switch (off in
    every row), ``tf32_rows`` the rows whose radial-MLP kernels run TF32 anyway, checked at
    ``agreement_rtol_by_backend``'s tolerance instead of ``agreement_rtol``."""
    return {
        "model": args.model, "model_description": describe(hparams), "hparams": hparams, "seed": args.seed,
        "device": args.device, "dtype": args.dtype, "tf32": False, "tf32_rows": [b for b in args.backends if b in backends.TF32],
        "systems": args.systems, "backends": args.backends,
        "warmup": args.warmup, "repeats": args.repeats, "target_s": args.target_s, "timeout_s": args.timeout_s,
        "budget_s": args.budget_s, "threads": args.threads, "memory_limit_gib": args.memory_limit_gib if args.device == "cpu" else None,
        "agreement_rtol": metrics.RTOL[args.dtype],
        "agreement_rtol_by_backend": {b: metrics.BACKEND_RTOL[b] for b in args.backends if b in metrics.BACKEND_RTOL},
        "quick": args.quick,
        "timing": "perf_counter around each energy+forces call, device synchronised before and after",
    }


# Rows that were not measured, by kind: (status, skip reason or None) -> kind. "error": the
# run is wrong (always a failing exit status); "incomplete": time ran out (failing unless
# --allow-skips); anything else (out of memory, larger systems after it, elements beyond max_z)
# is a result the table reports.
UNMEASURED = {("failed", None): "error", ("disagrees", None): "error", ("timeout", None): "incomplete",
              ("skipped", "budget"): "incomplete", ("skipped", "after timeout"): "incomplete"}


def unmeasured(report: dict) -> dict[str, list[dict]]:
    """The report's rows that count against the run, by kind of :data:`UNMEASURED`."""
    kinds: dict[str, list[dict]] = {}
    for row in report["results"]:
        kind = UNMEASURED.get((row["status"], row.get("reason")))
        if kind:
            kinds.setdefault(kind, []).append(row)
    return kinds


def merge(paths: list[str]) -> dict:
    """Join the JSON reports of split runs: a later file's row replaces an earlier one for the
    same (system, backend); environment and config come from the first file, but for the TF32
    rows and their tolerances (``tf32_rows``, ``agreement_rtol_by_backend``) of every file."""
    reports = []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        missing = [key for key in REPORT_KEYS if not isinstance(report, dict) or key not in report]
        if missing:
            raise ValueError(f"{path} is not a fastnnp bench report (JSON {SCHEMA}): it lacks {', '.join(missing)}")
        reports.append(report)
    merged = dict(reports[0], systems={}, results=[], merged_from=paths)
    merged["config"] = dict(merged["config"], tf32_rows=[], agreement_rtol_by_backend={})
    rows: dict[tuple[str, str], dict] = {}
    for report in reports:
        config = merged["config"]
        config["tf32_rows"] += [b for b in report["config"].get("tf32_rows", []) if b not in config["tf32_rows"]]
        config["agreement_rtol_by_backend"].update(report["config"].get("agreement_rtol_by_backend", {}))
        merged["systems"].update(report["systems"])
        merged["unavailable"] = {**report.get("unavailable", {}), **merged["unavailable"]}
        rows.update({(row["system"], row["backend"]): row for row in report["results"]})
    ran = {backend for _, backend in rows}
    merged["unavailable"] = {b: why for b, why in merged["unavailable"].items() if b not in ran}
    order = {name: i for i, name in enumerate(merged["systems"])}
    merged["results"] = sorted(rows.values(), key=lambda r: (order.get(r["system"], len(order)),
                                                             backends.BACKENDS.index(r["backend"])))
    return merged
