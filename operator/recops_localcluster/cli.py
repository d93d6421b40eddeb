"""``recops-localcluster up|down|env|status``: a local control plane that outlives the command.

``up`` starts the components detached (each in its own session) and records them
in ``<run-dir>/state.json`` (``up --foreground`` instead stays, and the components die
with it: SIGTERM, SIGINT or its death); ``down`` stops them and removes the run dir (etcd
data, keys, logs), leaving no process or port behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from recops_localcluster.cluster import LocalCluster
from recops_localcluster.nodes import NodeSet

DEFAULT_RUN_DIR = Path(
    os.environ.get(
        "RECOPS_LOCALCLUSTER_DIR",
        "/dev/shm/recops-localcluster" if Path("/dev/shm").is_dir() else "/tmp/recops-localcluster",
    )
)


def _load(run_dir: Path) -> LocalCluster | None:
    return LocalCluster.from_state(run_dir) if (run_dir / "state.json").exists() else None


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recops-localcluster", description=__doc__)
    parser.add_argument(
        "--run-dir", type=Path, default=DEFAULT_RUN_DIR, help="where state, keys and logs live"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start etcd, kube-apiserver, KCM, scheduler, kwok and fake nodes")
    up.add_argument("--on-demand", type=int, default=NodeSet.on_demand)
    up.add_argument("--spot", type=int, default=NodeSet.spot)
    up.add_argument("--eci", type=int, default=NodeSet.eci)
    up.add_argument(
        "--foreground",
        action="store_true",
        help="stay in the foreground; the components die with this process (SIGTERM, SIGINT, or its death)",
    )
    sub.add_parser("down", help="stop everything `up` started and remove the run dir")
    sub.add_parser("env", help="print `export KUBECONFIG=...` for the running cluster")
    sub.add_parser("status", help="show which components run")
    args = parser.parse_args(argv)

    existing = _load(args.run_dir)
    if args.cmd == "up":
        if existing and all(existing.running().values()):
            print(f"already running: export KUBECONFIG={existing.kubeconfig}")
            return 0
        if existing:
            existing.stop()
        cluster = LocalCluster(
            run_dir=args.run_dir,
            nodes=NodeSet(on_demand=args.on_demand, spot=args.spot, eci=args.eci),
            log=lambda m: print(m, file=sys.stderr),
            detach=not args.foreground,
        )
        # SIGTERM or SIGINT at any point (starting, printing, waiting) becomes KeyboardInterrupt,
        # caught here in one place: start() stops what it already started, and a started
        # foreground cluster is stopped in `finally`, exactly once (no leftovers, exit code 0).
        signal.signal(signal.SIGTERM, _interrupt)
        started = False
        try:
            cluster.start()
            started = True
            print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
            if not args.foreground:
                return 0
            while all(cluster.running().values()):
                time.sleep(1)
            print("a component exited; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0 if started else 143  # a stop after start is the normal end; before, it never came up
        finally:
            if args.foreground and started:  # a failed start() stopped itself and kept its logs
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the orderly stop is not interrupted
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                cluster.stop()
    if existing is None:
        print(f"no local cluster recorded in {args.run_dir}", file=sys.stderr)
        return 0 if args.cmd == "down" else 1
    if args.cmd == "down":
        existing.stop()
        print("stopped")
    elif args.cmd == "env":
        print(f"export KUBECONFIG={existing.kubeconfig}")
    else:
        for name, alive in existing.running().items():
            print(f"{name:26} {'running' if alive else 'stopped'}  pid {existing.pids[name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
