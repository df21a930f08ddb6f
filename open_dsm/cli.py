"""The ``open-dsm`` command line. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from core.config import Settings

log = logging.getLogger("open_dsm")

# Flags that take a list are given comma-separated.
_LIST_FIELDS = {"bbmd_bdt"}


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; the env variable and default are shown in --help."""
    group = parser.add_argument_group(
        "settings", "each flag also reads OPEN_DSM_<NAME>; a flag given wins over the variable"
    )
    for name, field in Settings.model_fields.items():
        env = f"OPEN_DSM_{name.upper()}"
        if field.default_factory is not None:
            default = "computed"
        elif field.default is None:
            default = "unset"
        else:
            default = str(field.default)
        if name == "data_dir":
            default = "$XDG_DATA_HOME/open-dsm or ~/.local/share/open-dsm"
        elif name == "timezone":
            default = "the host's zone"
        help_text = f"{field.description} [{env}; default: {default}]"
        help_text = help_text.replace("%", "%%")
        group.add_argument(
            _flag(name), dest=f"setting_{name}", default=None, help=help_text, metavar=name.upper()
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from flags over environment; exits with one clear line when something is wrong."""
    overrides: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(args, f"setting_{name}", None)
        if value is not None:
            overrides[name] = value
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = [str(part) for part in error.get("loc", ()) if isinstance(part, str)]
            name = loc[0] if loc else ""
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            if name:
                lines.append(
                    f"open-dsm: invalid {_flag(name)} (OPEN_DSM_{name.upper()}): {message}"
                )
            else:
                lines.append(f"open-dsm: invalid settings: {message}")
        sys.stderr.write("\n".join(lines) + "\n")
        raise SystemExit(2) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from open_dsm.bootstrap import StartupError, configure_logging, serve

    configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        sys.stderr.write(f"open-dsm: {exc}\n")
        return 1
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from open_dsm.bootstrap import StartupError, configure_logging, prepare_data_dir

    configure_logging(settings.log_level)
    from core.storage.migrate import upgrade_to_head
    from core.storage.repository import create_db_engine

    try:
        if settings.db is None:
            prepare_data_dir(settings)
        revision = upgrade_to_head(create_db_engine(settings.database_url))
    except StartupError as exc:
        sys.stderr.write(f"open-dsm: {exc}\n")
        return 1
    log.info("database at revision %s", revision)
    return 0


def _cmd_bench_service(args: argparse.Namespace) -> int:
    from bench.service import run

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="open-dsm", description="Edge demand side management: BACnet/IP device + REST API"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (BACnet/IP device and REST API)")
    add_settings_arguments(serve)
    serve.set_defaults(func=_cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    add_settings_arguments(migrate)
    migrate.set_defaults(func=_cmd_migrate)

    bench = sub.add_parser("bench", help="benchmarks that print a table")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    bench_service = bench_sub.add_parser(
        "service", help="BACnet RP/RPM and REST latency/throughput vs a bare bacpypes3 device"
    )
    from bench.service import add_arguments as add_service_arguments

    add_service_arguments(bench_service)
    bench_service.set_defaults(func=_cmd_bench_service)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``open-dsm`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
