"""Settings plumbing shared by the daemons: flags override ``LOCALSCHED_*`` env vars, validated fail-fast.

Each daemon lists its settings once, as a table of :class:`Setting`; its argparse parser, its ``--help``, the
configuration reference (docs/configuration.md) and the ConfigMaps (manifests/config.yaml) all follow that table,
and a unit test holds the last two to it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

Default = str | int | float | bool | None


class SettingsError(ValueError):
    """A bad setting; the message names the key (flag and env var) and the value."""


def env_name(flag: str) -> str:
    return "LOCALSCHED_" + flag.lstrip("-").upper().replace("-", "_")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


def shown(default: Default) -> str:
    """A default as an operator writes it in an env var: ``true``, ``120``, ``0.05``, ``auto``; empty for none."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if default is None:
        return ""
    if isinstance(default, float):
        return repr(default).removesuffix(".0")
    return str(default)


@dataclass(frozen=True)
class Setting:
    """One row of a daemon's settings table: ``--flag``, read also from ``LOCALSCHED_<FLAG>``.

    A boolean default makes a switch with a ``--no-`` form; ``choices`` a choice, matched case-insensitively.
    ``fallback_env`` is a plain env var read when neither the flag nor its ``LOCALSCHED_*`` var is given (values
    from the downward API, such as ``NODE_NAME``), before ``default``. ``per_pod`` marks a value that differs from
    pod to pod, which a ConfigMap shared by every pod must not set.
    """

    flag: str
    help: str
    default: Default
    choices: tuple[str, ...] = ()
    fallback_env: str = ""
    per_pod: bool = False

    @property
    def env(self) -> str:
        return env_name(self.flag)

    @property
    def shown_default(self) -> str:
        return shown(self.default)


def canonical(choices: Sequence[str]) -> Callable[[str], str]:
    """A converter to the choice that ``text`` names whatever its case (ValueError when it names none)."""

    def convert(text: str) -> str:
        for choice in choices:
            if choice.lower() == text.strip().lower():
                return choice
        raise ValueError(f"one of {', '.join(choices)}")

    return convert


def _as_choice(choices: Sequence[str]) -> Callable[[str], str]:
    """argparse's ``type`` for a choice: the canonical spelling, or the text as given for argparse to refuse."""
    convert = canonical(choices)

    def parse(text: str) -> str:
        try:
            return convert(text)
        except ValueError:
            return text

    return parse


def add(parser: argparse.ArgumentParser, setting: Setting) -> None:
    """A flag whose default comes from ``LOCALSCHED_<FLAG>`` when set; its help names the env var and default."""
    flag, env = setting.flag, setting.env
    source = f"env {env}, else {setting.fallback_env}" if setting.fallback_env else f"env {env}"
    default = setting.shown_default or '""'
    if isinstance(setting.default, bool):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                            help=f"{setting.help} ({source}=true|false; default {default})")  # fmt: skip
    elif setting.choices:
        parser.add_argument(flag, type=_as_choice(setting.choices), choices=setting.choices, default=None,
                            help=f"{setting.help} ({source}; default {default})")  # fmt: skip
    else:
        parser.add_argument(flag, default=None, metavar=_metavar(setting),
                            help=f"{setting.help} ({source}; default {default})")  # fmt: skip


def _metavar(setting: Setting) -> str | None:
    if setting.flag.endswith("-seconds"):
        return "SECONDS"
    if setting.flag.endswith("-port") or setting.flag == "--port":
        return "PORT"
    if isinstance(setting.default, int):
        return "N"
    return None


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the installed package's version."""
    try:
        version = importlib.metadata.version("localsched")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown (not installed)"
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")


def build_parser(prog: str, description: str, settings: Iterable[Setting]) -> argparse.ArgumentParser:
    """A daemon's parser: one flag per setting, then ``--version``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Every flag can be given as its LOCALSCHED_* env var instead; a flag wins over its env var. "
        "Reference: docs/configuration.md.",
    )
    for setting in settings:
        add(parser, setting)
    add_version(parser)
    return parser


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

    def choice(self, flag: str, default: str, choices: Sequence[str]) -> str:
        """One of ``choices``, whatever its case (returned as the choice is spelled)."""
        return value(self.args, flag, default, canonical(choices), env=self.env)
