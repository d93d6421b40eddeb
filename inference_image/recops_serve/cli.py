"""``recops-serve serve|train|vectorize|export-data``: one image, three entrypoints (and a data export).

One argument parser per command, as subcommands of one ``recops-serve`` parser: ``recops-serve
--help`` lists them, ``recops-serve COMMAND --help`` documents every option of that command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def read_secret_file(path: str) -> str:
    """A Secret mounted as a file (one value, a trailing newline tolerated)."""
    with open(path) as f:
        return f.read().strip()


def _serve_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--config",
        default=os.environ.get("RECOPS_CONFIG"),
        help="JSON serving config file, the operator's ConfigMap (default: $RECOPS_CONFIG)",
    )
    p.add_argument(
        "--bundle", help="bundle URI: a path, file:// or oss:// (overrides the config's model_uri)"
    )
    p.add_argument(
        "--redis-url",
        help="feature store URL (default: $RECOPS_REDIS_URL, else the file named by $RECOPS_REDIS_URL_FILE)",
    )
    p.add_argument("--host", default="0.0.0.0", help="listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="listen port (default: %(default)s)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override one config key (JSON value, else a string); repeatable",
    )
    return p


def _export_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "source", help="builtin:completejourney | builtin:diginetica | builtin:taobao | builtin:a+b"
    )
    p.add_argument(
        "--out", required=True, help="directory URI: gets events/dt=YYYY-MM-DD/ and catalog.parquet"
    )
    p.add_argument("--limit-rows", type=int, default=0, help="the first N interactions in time order")
    return p


def serve(argv: list[str]) -> int:
    args = _serve_parser(argparse.ArgumentParser(prog="recops-serve serve")).parse_args(argv)
    overrides: dict = {}
    if args.bundle:
        overrides["model_uri"] = args.bundle
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    if args.config:
        os.environ["RECOPS_CONFIG"] = args.config
    if args.redis_url:
        os.environ["RECOPS_REDIS_URL"] = args.redis_url
    elif os.environ.get("RECOPS_REDIS_URL_FILE") and not os.environ.get("RECOPS_REDIS_URL"):
        # the operator mounts the feature-store Secret as a file; the workers read the env var
        os.environ["RECOPS_REDIS_URL"] = read_secret_file(os.environ["RECOPS_REDIS_URL_FILE"])
    os.environ["RECOPS_SERVE_OVERRIDES"] = json.dumps(overrides)
    # one worker per process: BLAS (the search model's matrix products) and faiss use one thread each
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from granian import Granian

    try:  # uvloop: a faster event loop for the Redis round trip and the HTTP glue (~10%)
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"

    Granian(
        target="recops_serve.app:app",
        address=args.host,
        port=args.port,
        interface="rsgi",
        workers=1,
        loop=loop,
        log_access=False,
        backpressure=int(os.environ.get("RECOPS_BACKPRESSURE", "512")),
    ).serve()
    return 0


EXPORT_HELP = "write a built-in dataset in the shop data contract (docs/data.md)"
SERVE_HELP = "serve recommendations from a bundle (HTTP, one worker)"
TRAIN_HELP = "train a bundle, resumable across preemptions (recops-serve train --help)"
VECTORIZE_HELP = "vectorize a catalogue into a search bundle (recops-serve vectorize --help)"


def export_data(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="recops-serve export-data", description=EXPORT_HELP)
    args = _export_parser(p).parse_args(argv)
    from recops_contracts.storage import StorageError
    from recops_contracts.training import EXIT_CONFIG
    from recops_serve.data import DatasetUnavailable
    from recops_serve.datasource import DataError, export_builtin

    try:
        result = export_builtin(args.source, args.out, limit_rows=args.limit_rows or None)
    except (DataError, DatasetUnavailable, StorageError) as e:
        print(f"recops-serve export-data: {e}", file=sys.stderr)
        return EXIT_CONFIG  # as train
    print(json.dumps(result))
    return 0


def parser() -> argparse.ArgumentParser:
    """``recops-serve``: the commands and their options (train's are its own parser's)."""
    p = argparse.ArgumentParser(
        prog="recops-serve", description="RecOps inference image: serve, train, vectorize, export data."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub.add_parser("serve", help=SERVE_HELP, description=SERVE_HELP))
    # train parses its own arguments (recops_serve.train); listed here for --help
    sub.add_parser("train", help=TRAIN_HELP, add_help=False)
    sub.add_parser("vectorize", help=VECTORIZE_HELP, add_help=False)
    _export_parser(sub.add_parser("export-data", help=EXPORT_HELP, description=EXPORT_HELP))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "vectorize":  # every option, --help included, is vectorize's own parser's
        from recops_serve.search.vectorize import main as vectorize_main

        return vectorize_main(argv[1:])
    if argv and argv[0] == "train":  # every option, --help included, is train's own parser's
        from recops_serve.train import main as train_main

        return train_main(argv[1:])
    args = parser().parse_args(argv)  # --help, an unknown command or option: usage and exit 0 / 2
    if args.command == "export-data":
        return export_data(argv[1:])
    return serve(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
