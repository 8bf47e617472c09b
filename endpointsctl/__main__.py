"""``endpointsctl`` / ``python -m endpointsctl``: settings from flags and env, then the admin app runs the process."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from endpointsctl.app import create_app
from endpointsctl.settings import from_args
from endpointsctl.subsetting.registry import UnknownAlgorithmError
from localsched import logs
from localsched.settings import SettingsError


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = from_args(argv)
    except SettingsError as exc:
        print(f"endpointsctl: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_level, settings.log_format)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        app = create_app(settings)
    except (UnknownAlgorithmError, TypeError, ValueError) as exc:
        print(f"endpointsctl: LOCALSCHED_SUBSETTING_ALGORITHM / --subsetting-algorithm: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.getLogger(__name__).info(
        "endpointsctl %s: algorithm %s, admin on %s:%d", settings.leader.identity,
        settings.subsetting.config.algorithm, settings.server.bind_address, settings.server.admin_port,
    )  # fmt: skip
    web.run_app(
        app,
        host=settings.server.bind_address,
        port=settings.server.admin_port,
        shutdown_timeout=settings.server.shutdown_timeout_seconds,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
