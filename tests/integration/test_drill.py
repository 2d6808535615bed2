"""The shortened fault drill: the production shape under load and faults, every invariant holding.

``make drill`` runs the long one (600 s); this runs 90 s in the normal test run.
It needs PostgreSQL's server binaries (it starts and restarts a private cluster),
so it runs in the PostgreSQL tier.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import POSTGRES_ENV, _postgres_skipped


@pytest.mark.timeout(1200)
def test_the_shortened_fault_drill_holds_every_invariant(request: pytest.FixtureRequest) -> None:
    if not os.environ.get(POSTGRES_ENV):
        _postgres_skipped.append(request.node.nodeid)
        pytest.skip(f"PostgreSQL tier did not run: {POSTGRES_ENV} is not set")
    drill = subprocess.run(
        [sys.executable, "-m", "tests.drill", "--duration", "90"],
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )
    sys.stdout.write(drill.stdout)
    table = drill.stdout[drill.stdout.find("| invariant") :]
    assert table.startswith("| invariant"), drill.stdout[-3000:] + drill.stderr[-3000:]
    assert "| NO " not in table, table
    assert drill.returncode == 0, table + drill.stderr[-3000:]
