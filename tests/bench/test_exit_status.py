"""The benchmark's exit status: rows skipped or timed out for lack of time fail the run unless
``--allow-skips``; failed or disagreeing rows always do; the table says why each row has no
time; bad input is one line and exit status 2. Nothing here times a real benchmark row."""

import copy
import json
import os
import re
import stat
import time

import pytest

from fastnnp.bench.backends import BACKENDS
from fastnnp.bench.cli import main
from fastnnp.bench.runner import Runner, unmeasured


@pytest.fixture(scope="module")
def budget_spent(tmp_path_factory):
    """A real run whose budget (1 s) is spent before its first row: (exit status, output folder)."""
    folder = tmp_path_factory.mktemp("spent")
    status = main(["--model", "tensornet-64", "--systems", "droplet-22", "water-1000", "--backends", "fastnnp-torch",
                   "--budget-s", "1", "--output", str(folder), "--name", "spent"])
    return status, folder


def test_a_run_out_of_budget_exits_1_naming_the_skipped_rows(budget_spent, capsys):
    status, folder = budget_spent
    assert status == 1
    report = json.loads((folder / "spent.json").read_text())
    assert [(r["status"], r["reason"]) for r in report["results"]] == [("skipped", "budget")] * 2
    assert (folder / "spent.png").read_bytes()[:4] == b"\x89PNG"
    table = (folder / "spent.md").read_text()
    assert "Rows without a time:\n- droplet-21 fastnnp-torch: skipped: not started: the run's time budget is spent" in table


@pytest.fixture(autouse=True)
def no_plot(monkeypatch):
    """Merged reports are not drawn (the module's real run, set up first, is): a second each."""
    monkeypatch.setattr("fastnnp.bench.report.plot", lambda report, path: None)


def merged(tmp_path, report: dict, *options: str) -> int:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(report))
    return main(["--merge", str(path), "--output", str(tmp_path / "out"), "--name", "m", *options])


def with_rows(report: dict, *rows: dict) -> dict:
    """``report`` with its results replaced by ``rows``, on its first system, one backend each
    (in :data:`BACKENDS` order, the order the merged table keeps)."""
    report = copy.deepcopy(report)
    system = next(iter(report["systems"]))
    report["results"] = [dict({"system": system, "backend": backend, "n_atoms": 21}, **row)
                         for backend, row in zip(BACKENDS, rows, strict=False)]
    return report


OK = {"status": "ok", "median_ms": 1.0, "q1_ms": 0.9, "q3_ms": 1.1, "atom_steps_per_s": 2.1e4, "ns_per_day_1fs": 86.4,
      "ns_per_day_2fs": 172.8, "setup_s": 0.1, "first_call_s": 0.2, "samples_s": [0.001]}
BUDGET = {"status": "skipped", "reason": "budget", "error": "stopped after 30 s: the run's time budget is spent"}
TIMEOUT = {"status": "timeout", "error": "no result after 120 s"}
AFTER_TIMEOUT = {"status": "skipped", "reason": "after timeout", "error": "not run after timeout at water-999"}
AFTER_OOM = {"status": "skipped", "reason": "after oom", "error": "not run after oom at water-999"}
OOM = {"status": "oom", "error": "CallTooLarge: this call needs at least 80 GiB"}
MAX_Z = {"status": "skipped", "reason": "max_z", "error": "an element is beyond the model's max_z 32"}
FAILED = {"status": "failed", "error": "RuntimeError: boom"}
DISAGREES = {"status": "disagrees", "error": "forces differ by 1e-2"}


@pytest.mark.parametrize("rows, status, allowed", [
    ([OK], 0, 0),
    ([OK, OOM, AFTER_OOM, MAX_Z], 0, 0),  # results the table reports: the backend cannot run there
    ([OK, BUDGET], 1, 0),
    ([OK, TIMEOUT], 1, 0),
    ([OK, AFTER_TIMEOUT], 1, 0),
    ([OK, FAILED], 1, 1),
    ([OK, DISAGREES, BUDGET], 1, 1),
], ids=["ok", "oom-max_z", "budget", "timeout", "after-timeout", "failed", "disagrees"])
def test_exit_status_by_row_kind(budget_spent, tmp_path, capsys, rows, status, allowed):
    _, folder = budget_spent
    report = with_rows(json.loads((folder / "spent.json").read_text()), *rows)
    assert merged(tmp_path, report) == status
    err = capsys.readouterr().err
    assert ("rows not measured" in err) == (status == 1)
    assert merged(tmp_path, report, "--allow-skips") == allowed


def test_the_table_and_stderr_say_why(budget_spent, tmp_path, capsys):
    _, folder = budget_spent
    report = with_rows(json.loads((folder / "spent.json").read_text()), OK, TIMEOUT, OOM, FAILED)
    assert merged(tmp_path, report) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("python -m fastnnp.bench: 2 of 4 rows not measured: droplet-21 fastnnp-triton-compile: failed; "
                       "droplet-21 fastnnp-triton-exact: timeout (--allow-skips accepts rows skipped or timed out for "
                       "lack of time)")
    table = (tmp_path / "out" / "m.md").read_text()
    assert "\n".join([
        "Rows without a time:",
        "- droplet-21 fastnnp-triton-exact: timeout: no result after 120 s",
        "- droplet-21 fastnnp-triton-graph: out of memory: CallTooLarge: this call needs at least 80 GiB",
        "- droplet-21 fastnnp-triton-compile: failed: RuntimeError: boom",
    ]) in table


def test_unmeasured_rows_by_kind():
    report = {"results": [dict(row, system="s", backend="b") for row in (OK, BUDGET, TIMEOUT, AFTER_TIMEOUT, AFTER_OOM,
                                                                         OOM, MAX_Z, FAILED, DISAGREES)]}
    kinds = unmeasured(report)
    assert sorted(kinds) == ["error", "incomplete"]
    assert [r["status"] for r in kinds["error"]] == ["failed", "disagrees"]
    assert [(r["status"], r.get("reason")) for r in kinds["incomplete"]] == [
        ("skipped", "budget"), ("timeout", None), ("skipped", "after timeout")]


@pytest.fixture
def hanging_python(tmp_path, monkeypatch):
    """Workers that never answer: the runner's interpreter replaced by a script that sleeps."""
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr("fastnnp.bench.runner.sys.executable", str(script))


def test_a_row_without_an_answer_times_out(hanging_python):
    start = time.monotonic()
    _, result = Runner(timeout_s=1.0, budget_s=None, memory_limit_gib=None).measure({}, {})
    assert result == {"status": "timeout", "error": "no result after 1 s"}
    assert time.monotonic() - start < 10


def test_a_row_the_budget_cuts_short_is_skipped_for_budget(hanging_python, monkeypatch):
    monkeypatch.setattr(Runner, "min_row_s", 0.5)
    runner = Runner(timeout_s=60.0, budget_s=1.5, memory_limit_gib=None)
    _, result = runner.measure({}, {})
    assert result["status"] == "skipped" and result["reason"] == "budget"
    assert result["error"].endswith("s: the run's time budget is spent") and result["error"].startswith("stopped after")
    _, result = runner.measure({}, {})  # the budget is spent: the next row is not started
    assert result == {"status": "skipped", "reason": "budget", "error": "not started: the run's time budget is spent"}


@pytest.mark.parametrize("argv, message", [
    (["--model", "{tmp}/missing.ckpt"], "--model '{tmp}/missing.ckpt' is neither a preset .* nor a checkpoint file"),
    (["--model", "{tmp}/junk.ckpt"], "{tmp}/junk.ckpt is not a PyTorch checkpoint .a torch.save zip archive.: it is a "
                                     "text file"),
    (["--merge", "{tmp}/missing.json"], "No such file or directory: '{tmp}/missing.json'"),
    (["--merge", "{tmp}/junk.ckpt"], "Expecting value: line 1 column 1"),
    (["--merge", "{tmp}/other.json"], "{tmp}/other.json is not a fastnnp bench report .JSON fastnnp-bench/1.: it lacks "
                                      "config, systems, results"),
], ids=["missing-model", "junk-model", "missing-json", "junk-json", "foreign-json"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "junk.ckpt").write_text("model: tensornet\n")
    (tmp_path / "other.json").write_text('{"environment": {}}')
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--systems", "droplet-22", "--output", str(tmp_path / "out")]
    assert main(argv, prog="fastnnp bench") == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastnnp bench: error: "), captured.err
    assert re.search(message.format(tmp=tmp_path), lines[0]), lines[0]


def test_an_output_folder_that_is_a_file_is_one_line(budget_spent, tmp_path, capsys):
    _, folder = budget_spent
    (tmp_path / "taken").write_text("")
    argv = ["--merge", str(folder / "spent.json"), "--output", str(tmp_path / "taken"), "--name", "m"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m fastnnp.bench: error: ") and "taken" in err[0], err
    assert os.path.isfile(tmp_path / "taken")


def test_threads_are_recorded_and_checked(budget_spent, capsys):
    _, folder = budget_spent
    assert json.loads((folder / "spent.json").read_text())["config"]["threads"] is None  # torch's default
    with pytest.raises(SystemExit) as done:
        main(["--threads", "0"])
    assert done.value.code == 2 and "error: --threads must be >= 1" in capsys.readouterr().err
