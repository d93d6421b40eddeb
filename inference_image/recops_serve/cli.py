"""``recops-serve serve|train|vectorize|export-data``: one image, three entrypoints (and a data export).

One argument parser per command, as subcommands of one ``recops-serve`` parser: ``recops-serve
--help`` lists them, ``recops-serve COMMAND --help`` documents every option of that command.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any

from pydantic import ValidationError

from recops_serve.settings import LaunchSettings, problems


def _serve_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", help="JSON serving config file, the operator's ConfigMap")
    p.add_argument(
        "--bundle", help="bundle URI: a path, file:// or oss:// (overrides the config's model_uri)"
    )
    store = p.add_mutually_exclusive_group()
    store.add_argument("--redis-url", help="feature store URL: redis://, rediss:// or unix://")
    store.add_argument(
        "--redis-url-file", help="file holding the feature store URL (the pod's mounted Secret)"
    )
    p.add_argument(
        "--attribution-key-file",
        help="file holding the attribution-token HMAC key (a mounted Secret; absent or empty: "
        "a per-process key)",
    )
    p.add_argument(
        "--assistant-key-file",
        help="file holding the answer-synthesis model API key (a mounted Secret; read per answer)",
    )
    p.add_argument("--host", default="0.0.0.0", help="listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="listen port (default: %(default)s)")
    p.add_argument(
        "--backpressure",
        type=int,
        default=512,
        help="requests admitted at once, more wait in the backlog (default: %(default)s)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override one config key (JSON value, else a string); repeatable",
    )
    return p


#: the option a LaunchSettings field comes from, for error messages (else --the-field-name)
_OPTIONS = {"overrides": "--set"}


def _overrides(args: argparse.Namespace, p: argparse.ArgumentParser) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.bundle:
        overrides["model_uri"] = args.bundle
    for item in args.set:
        key, sep, value = item.partition("=")
        if not key or not sep:
            p.error(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    return overrides


def parse_settings(argv: list[str], prog: str = "recops-serve serve") -> LaunchSettings:
    """The serve options as validated settings; a bad one exits 2 naming its option."""
    p = _serve_parser(argparse.ArgumentParser(prog=prog))
    args = p.parse_args(argv)
    given = {
        "config": args.config,
        "redis_url": args.redis_url,
        "redis_url_file": args.redis_url_file,
        "attribution_key_file": args.attribution_key_file,
        "assistant_key_file": args.assistant_key_file,
    }
    try:
        return LaunchSettings.model_validate(
            {
                **{k: v for k, v in given.items() if v is not None},
                "overrides": _overrides(args, p),
                "host": args.host,
                "port": args.port,
                "backpressure": args.backpressure,
            }
        )
    except ValidationError as e:
        p.error("; ".join(_say(loc, msg) for loc, msg in problems(e)))


def launch_settings(argv: list[str]) -> LaunchSettings:
    """``parse_settings``, and the feature store's Secret file read and checked: what the worker
    will need is refused before granian starts (exit 2), not in the worker."""
    settings = parse_settings(argv)
    try:
        settings.feature_store_url()
    except ValueError as e:
        print(f"recops-serve serve: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings


def _say(loc: tuple, msg: str) -> str:
    if not loc:
        return msg
    option = _OPTIONS.get(str(loc[0]), "--" + str(loc[0]).replace("_", "-"))
    return " ".join((option, ".".join(str(x) for x in loc[1:]))).strip() + f": {msg}"


def worker_app(settings_json: str) -> Any:
    """granian's target loader, run in the worker process: the app for the CLI's settings, parsed
    strictly again (the worker trusts nothing it did not validate)."""
    from recops_serve.app import Server

    return Server(settings=LaunchSettings.from_json(settings_json))


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
    settings = launch_settings(argv)
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
        target="recops_serve.app:Server",  # the process title; the loader below builds the app
        address=settings.host,
        port=settings.port,
        interface="rsgi",
        workers=1,
        loop=loop,
        log_access=False,
        backpressure=settings.backpressure,
    ).serve(target_loader=functools.partial(worker_app, settings.to_json()), wrap_loader=False)
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
