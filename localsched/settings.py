"""Settings plumbing shared by the daemons: flags override ``LOCALSCHED_*`` env vars, validated fail-fast."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A bad setting; the message names the key (flag and env var) and the value."""


def env_name(flag: str) -> str:
    return "LOCALSCHED_" + flag.lstrip("-").upper().replace("-", "_")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add(parser: argparse.ArgumentParser, flag: str, help_text: str, default: Any) -> None:
    """A flag whose default comes from ``LOCALSCHED_<FLAG>`` when set; a boolean is a switch with a ``--no-`` form
    (its env var takes true or false), ``--log-level`` a choice."""
    env = env_name(flag)
    if isinstance(default, bool):
        state = "on" if default else "off"
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                            help=f"{help_text} (env {env}=true|false; default {state})")  # fmt: skip
    elif flag == "--log-level":
        parser.add_argument(flag, type=str.upper, choices=LOG_LEVELS, default=None,
                            help=f"{help_text} (env {env}; default {default})")  # fmt: skip
    else:
        parser.add_argument(flag, default=None, help=f"{help_text} (env {env}; default {default!r})")


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the installed package's version."""
    try:
        version = importlib.metadata.version("localsched")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown (not installed)"
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")


def value(
    args: argparse.Namespace,
    flag: str,
    default: T,
    convert: Callable[[str], T],
    *,
    env: Mapping[str, str] | None = None,
    check: Callable[[T], bool] | None = None,
    expect: str = "",
) -> T:
    """The flag's value, else the env var's, else ``default``; converted and checked, or SettingsError."""
    environ = os.environ if env is None else env
    raw = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    source = flag
    if raw is None:
        raw = environ.get(env_name(flag))
        source = env_name(flag)
    if raw is None:
        return default
    try:
        result = convert(str(raw))
    except ValueError as exc:
        raise SettingsError(f"{source}={raw!r} is invalid: {expect or exc}") from None
    if check is not None and not check(result):
        raise SettingsError(f"{source}={raw!r} is invalid: {expect}")
    return result


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


class Reader:
    """Typed reads of flags-or-env for one daemon's ``from_args``: each names its key in any error."""

    def __init__(self, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.env = os.environ if env is None else env

    def text(self, flag: str, default: str) -> str:
        return value(self.args, flag, default, str, env=self.env)

    def whole(self, flag: str, default: int, low: int, high: int | None = None) -> int:
        bounds = f">= {low}" if high is None else f"from {low} to {high}"
        return value(self.args, flag, default, int, env=self.env, expect=f"a whole number {bounds}",
                     check=lambda x: x >= low and (high is None or x <= high))  # fmt: skip

    def number(self, flag: str, default: float, *, allow_zero: bool = False) -> float:
        expect = "a number >= 0" if allow_zero else "a number > 0"
        return value(self.args, flag, default, float, env=self.env, expect=expect,
                     check=lambda x: x >= 0 if allow_zero else x > 0)  # fmt: skip

    def flag(self, flag: str, default: bool) -> bool:
        return value(self.args, flag, default, boolean, env=self.env, expect="true or false")
