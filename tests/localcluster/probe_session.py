"""Not collected by default (no test_ prefix): the pytest session that test_process_hygiene kills.

It takes the shared ``k8s_cluster`` fixture as any test would, writes the component pids where
RECOPS_PROBE_PIDS says, and waits to be killed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def test_hold_a_cluster_until_killed(k8s_cluster):
    out = Path(os.environ["RECOPS_PROBE_PIDS"])
    out.with_suffix(".tmp").write_text(
        json.dumps({"pids": k8s_cluster.pids, "run_dir": str(k8s_cluster.run_dir)})
    )
    out.with_suffix(".tmp").rename(out)
    time.sleep(600)
