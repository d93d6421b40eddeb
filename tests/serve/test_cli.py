"""One CLI style: every command is an argparse parser whose --help documents every option.

``recops-serve`` (serve, train, export-data), ``python -m recops_serve.evaluate`` and
``python -m bench`` run as the processes a user starts; the parsers are also walked so an option
added without a help text fails here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from bench.__main__ import BENCHES
from bench.__main__ import parser as bench_parser
from recops_serve.cli import parser as serve_parser
from recops_serve.evaluate import SOURCES


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def _undocumented(p: argparse.ArgumentParser, path: str = "") -> list[str]:
    missing = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if sub.add_help:  # train's options are its own parser's (checked below)
                    missing += _undocumented(sub, f"{path}{name} ")
            missing += [f"{path}{c.dest}" for c in action._choices_actions if not c.help]
        elif not action.help:
            missing.append(f"{path}{'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_of_every_command_has_help():
    assert _undocumented(serve_parser()) == []
    assert _undocumented(bench_parser()) == []
    out = _run("-m", "recops_serve.cli", "train", "--help")
    assert out.returncode == 0 and "--checkpoint-interval" in out.stdout, out.stderr


def test_bench_accepts_every_benchmark_it_documents():
    import re

    import bench.__main__ as b

    documented = re.search(r"python -m bench \[([^\]]+)\]", b.__doc__).group(1).split("|")
    assert tuple(documented) == BENCHES


@pytest.mark.parametrize(
    ("args", "code", "shown"),
    [
        (["-m", "recops_serve.cli", "--help"], 0, ["serve", "train", "vectorize", "export-data"]),
        (["-m", "recops_serve.cli", "vectorize", "--help"], 0, ["usage: recops-serve vectorize"]),
        (["-m", "recops_serve.cli", "serve", "--help"], 0, ["--config", "--bundle", "--redis-url", "--set"]),
        (["-m", "recops_serve.cli", "export-data", "--help"], 0, ["--out", "--limit-rows"]),
        (["-m", "recops_serve.cli"], 2, ["required: COMMAND"]),
        (["-m", "recops_serve.cli", "nosuch"], 2, ["invalid choice: 'nosuch'"]),
        (["-m", "recops_serve.cli", "serve", "--nosuch"], 2, ["unrecognized arguments: --nosuch"]),
        (["-m", "recops_serve.evaluate", "--help"], 0, list(SOURCES)),
        (["-m", "recops_serve.evaluate", "nosuch"], 2, ["unknown source 'nosuch'"]),
        (["-m", "bench", "--help"], 0, list(BENCHES)),
        (["-m", "bench", "nosuch"], 2, ["invalid choice: 'nosuch'"]),
    ],
)
def test_help_and_bad_input(args, code, shown):
    out = _run(*args)
    text = out.stdout + out.stderr
    assert out.returncode == code, text
    for s in shown:
        assert s in text, text
