"""``recops-operator``: run the operator, print the CRD, check a manifest offline.

``run`` is kopf's own ``run`` with our handler module preloaded, so every kopf
flag works (``--standalone``, ``--all-namespaces``, ``--namespace``,
``--liveness``, ``--verbose``).
"""

from __future__ import annotations

import argparse
import sys

import yaml


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        from kopf.cli import main as kopf_main

        sys.argv = ["kopf", "run", "-m", "recops_operator.main", *argv[1:]]
        return kopf_main() or 0
    parser = argparse.ArgumentParser(prog="recops-operator")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", help="run the operator (kopf run flags follow)")
    sub.add_parser("crd", help="print the generated CRD YAML")
    check = sub.add_parser("check", help="validate RecommenderService manifests as the webhook would")
    check.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "crd":
        from recops_operator.api.crd import render_yaml

        sys.stdout.write(render_yaml())
        return 0
    from recops_operator.webhook import problems

    status = 0
    for path in args.files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "RecommenderService":
                    continue
                errs = problems(doc)
                name = doc.get("metadata", {}).get("name")
                print(f"{path}: {name}: " + ("ok" if not errs else "; ".join(errs)))
                status |= bool(errs)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
