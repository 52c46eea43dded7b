"""Each benchmark, run with tiny sizes as CI runs it, so none can rot unnoticed: it must exit
0 (every correctness check of its own passed), print its JSON, and report the figures the
issue's table is made of. These are smoke runs, not measurements: no figure is judged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# `-m "not bench"` leaves them out of a local run; CI runs them.
pytestmark = [pytest.mark.slow, pytest.mark.bench, pytest.mark.timeout(300)]


def run_bench(script: str, *args: str, exits: tuple[int, ...] = (0,)) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "PYTHONPATH": str(BENCH)},
        check=False,
    )
    assert done.returncode in exits, done.stderr[-3000:]
    assert "}" in done.stdout, done.stderr[-3000:]  # it printed its JSON
    report: dict[str, Any] = json.loads(done.stdout[: done.stdout.rindex("}") + 1])
    assert report.get("problems", []) == []
    return report


def test_the_db_engine_bench_on_sqlite() -> None:
    args = ["--backends", "sqlite", "--quick", "--n", "20", "--single-n", "20"]
    args += ["--duration", "0.2", "--claim-sizes", "50,100", "--claim-ops", "3"]
    sqlite = run_bench("dispatch.py", *args)["results"]["db"]["sqlite"]
    assert sqlite["end_to_end"]["2_workers_tasks_per_s"]["median"] > 0
    assert sqlite["idle_latency"]["p50_ms"]["median"] > 0
    assert sqlite["switchyard_over_baseline"]["end_to_end_2_workers"] is not None


def test_the_peer_bench_measures_pgqueuer_and_procrastinate_beside_the_db_engine() -> None:
    args = ["--engine", "peers", "--backends", "postgresql", "--quick", "--n", "20"]
    peer = run_bench("dispatch.py", *args)["results"]["peers"]["postgresql"]["pgqueuer"]
    for workers in (1, 2):
        row = peer[f"{workers}_workers"]
        assert row["ratio_of_medians"] > 0
        assert row["pgqueuer"][f"{workers}_workers_client_cpu_us_per_task"]["median"] > 0
        reference = row["procrastinate"]
        assert reference["for_reference"] is True
        assert reference["ratio_of_medians"] > 0
        assert reference[f"{workers}_workers_tasks_per_s"]["median"] > 0
        for side in ("client", "server"):
            assert reference[f"{workers}_workers_{side}_cpu_us_per_task"]["median"] > 0


def test_the_rq_engine_bench() -> None:
    rq = run_bench("dispatch_rq.py", "--quick", "--n", "20")["results"]["rq"]["postgresql"]
    assert {"end_to_end", "enqueue", "latency"} <= set(rq)


def test_the_migration_bench() -> None:
    report = run_bench("migration.py", "--sizes", "200", "--runs", "1", "--runbook-max", "150")
    (size,) = report["sizes"]
    assert size["switchyard_rq_to_db"]["tasks_per_s"] > 0
    assert size["switchyard_rq_to_db"]["cpu_us_per_task"]["client"]["median"] > 0
    assert size["switchyard_db_to_rq"]["tasks_per_s"] > 0
    assert size["runbook_rq_to_db"]["tasks_timed"] == 150
    assert size["batched_reference_rq_to_db"]["tasks_timed"] == 50  # what the runbook left


def test_the_history_bench_signs_in_and_reads_every_page() -> None:
    args = ["--backends", "sqlite", "--sizes", "100,2000", "--repeat", "1"]
    args += ["--purge-seconds", "0.5", "--load-seconds", "0.5", "--purge-pauses", "0"]
    # Exit 1 is a page over its size target, a figure the smoke does not judge at these sizes.
    sqlite = run_bench("history.py", *args, exits=(0, 1))["results"]["sqlite"]
    pages = sqlite["pages"]
    assert "GET /admin/panel (dashboard)" in pages
    assert all(p["small_ms"] > 0 and p["large_ms"] > 0 for p in pages.values()), pages
    assert sqlite["purge"]["tasks"] > 0


def test_the_index_wal_bench_counts_wal_and_cpu_per_task() -> None:
    report = run_bench("index_wal.py", "--n", "50", "--runs", "1")
    assert report["server"] == "private"
    assert report["wal_bytes_per_task_min"] > 0
    assert report["client_cpu_us_per_task_median"] > 0
