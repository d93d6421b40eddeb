"""``recops-serve train`` on bad input: exit 78 (the Job fails at once, not retried), a one-line
reason in the termination message the operator shows in status, and nothing written to --out."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recops_serve.train import EXIT_CONFIG, main


@pytest.fixture
def term(tmp_path, monkeypatch):
    path = tmp_path / "termination-log"
    monkeypatch.setenv("RECOPS_TERMINATION_LOG", str(path))
    return path


def test_the_removed_dataset_flag_names_its_replacement(tmp_path, term):
    out = tmp_path / "out"
    assert main(["--dataset", "completejourney", "--out", str(out), "--version", "v"]) == EXIT_CONFIG
    assert "use --events builtin:completejourney" in term.read_text()
    assert not out.exists()


def test_a_missing_column_fails_with_the_file_and_column(tmp_path, term):
    events = tmp_path / "events.parquet"
    pq.write_table(pa.table({"session_id": ["a", "b"], "item_id": [1, 2], "type": ["view", "view"]}), events)
    out = tmp_path / "out"
    assert main(["--events", str(events), "--out", str(out), "--version", "v"]) == EXIT_CONFIG
    msg = term.read_text()
    assert "events.parquet" in msg and "ts" in msg, msg
    assert not out.exists()


def test_an_unknown_builtin_is_a_config_error(tmp_path, term):
    assert main(["--events", "builtin:nosuch", "--out", str(tmp_path / "o"), "--version", "v"]) == EXIT_CONFIG
    assert "nosuch" in term.read_text()
