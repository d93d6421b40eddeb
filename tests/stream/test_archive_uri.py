"""``python -m recops_stream.archive <oss:// URI>``, the archive CronJob's command: the URI resolves
through the mounted bucket (``RECOPS_OSS_LOCAL_ROOT``), committed part files become Parquet by day,
hidden in-progress ones are left alone, and a second run changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from recops_stream import archive

ROOT = Path(__file__).resolve().parents[2]


def test_the_cronjob_command_compacts_the_mounted_archive(tmp_path):
    events = tmp_path / "retail-events-cn-hangzhou" / "home-feed" / "events"
    staging = events / "_staging"
    staging.mkdir(parents=True)
    lines = [
        {
            "event_id": "e1",
            "session_id": "s1",
            "item_id": 7,
            "type": "view",
            "ts": 1_764_547_200.0,
        },  # 2025-12-01
        {"event_id": "e2", "session_id": "s1", "item_id": 8, "type": "purchase", "ts": 1_764_633_600.5},
    ]
    (staging / "part-abc-0-0").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (staging / ".part-abc-0-1.inprogress").write_text(json.dumps(lines[0]) + "\n")
    cmd = [sys.executable, "-m", "recops_stream.archive", "oss://retail-events-cn-hangzhou/home-feed/events"]
    env = {
        **os.environ,
        "RECOPS_OSS_LOCAL_ROOT": str(tmp_path),
        "PYTHONPATH": f"{ROOT / 'stream'}:{ROOT / 'operator'}",
    }
    for _ in range(2):  # the second run: nothing committed is left, nothing changes
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
        days = sorted(p.parent.name for p in events.glob("dt=*/*.parquet"))
        assert days == ["dt=2025-12-01", "dt=2025-12-02"]
        assert sorted(archive.read_archive(events).column("event_id").to_pylist()) == ["e1", "e2"]
        assert [p.name for p in staging.iterdir()] == [".part-abc-0-1.inprogress"]


def test_an_oss_uri_without_the_mount_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RECOPS_OSS_LOCAL_ROOT"}
    env["PYTHONPATH"] = f"{ROOT / 'stream'}:{ROOT / 'operator'}"
    out = subprocess.run(
        [sys.executable, "-m", "recops_stream.archive", "oss://b-cn-hangzhou/x/events"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().startswith(
        "recops_stream.archive: oss://b-cn-hangzhou/x/events: set RECOPS_OSS_LOCAL_ROOT"
    )
