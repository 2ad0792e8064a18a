"""The notebook-style example in examples/ runs as is, from start to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "notebook.py"


def test_the_notebook_example_runs_as_is(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MAAS_SERVER"}
    run = subprocess.run(
        [sys.executable, EXAMPLE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "240 hosts, steps: preflight" in out, out
    assert "refused: 3 hosts held by batch" in out, out
    assert "<Batch" in out and "reimage completed" in out, out
    assert "p95_seconds" in out and "success rate" in out, out
