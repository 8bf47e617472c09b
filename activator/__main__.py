"""``activator``: the node-local cold-start proxy daemon."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence

try:
    import uvloop

    LOOP_FACTORY: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
except ImportError:  # uvloop is optional (not on every platform)
    LOOP_FACTORY = None

from activator.app import serve
from activator.settings import from_args
from localsched import logs
from localsched.settings import SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = from_args(argv)
    except SettingsError as exc:
        print(f"activator: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    runner = asyncio.Runner(loop_factory=LOOP_FACTORY)
    with runner:
        runner.run(serve(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
