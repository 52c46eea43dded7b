"""`bench/chaos.py --quick`, so the soak cannot rot: about 12 s of random faults (workers
SIGKILLed, private database and Redis restarted, mode switches, migrations) under a steady
submitter, and then nothing lost, nothing doubled, `verify` and `check` passing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_chaos_soak_loses_and_doubles_nothing() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.stdout, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["lost_or_doubled"] == [], json.dumps(result, indent=2)
    assert done.returncode == 0 and result["ok"], json.dumps(result, indent=2)
    assert sum(result["injected"].values()) > 0  # faults were injected
    assert result["submitted"]["accepted"] > 0
    assert (result["verify_exit"], result["check_exit"]) == (0, 0)
