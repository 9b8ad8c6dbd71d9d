"""What the operator wrote, before validation: `factsync.toml` with `FACTSYNC_*` environment variables on top.

Plain Python on purpose: `factsync check` (a probe every 30 s) finds its Redis from here without paying for
pydantic; worker/config.py validates the same mapping into `Settings` for every other command.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ENV = "FACTSYNC_CONFIG"
DEFAULT_CONFIG = Path("factsync.toml")
ENV_PREFIX = "FACTSYNC_"
# FACTSYNC_SOURCES__HOSTFACT__API_KEY sets sources.hostfact.api_key.
ENV_NESTING = "__"
DEFAULT_DATA_DIR = Path("var")

SettingPath = tuple[str, ...]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the setting and what is wrong with it."""


@dataclass(frozen=True)
class RawConfig:
    """The merged settings mapping, the file it came from, and which variable set which setting."""

    values: dict[str, Any]
    path: Path | None = None
    # The setting paths an environment variable set, with the variable's name as the operator wrote it.
    variables: dict[SettingPath, str] = field(default_factory=dict)

    def named(self, setting: SettingPath) -> str:
        """How an error names ``setting``: by the variable that set it, or a table holding it, if one did."""
        dotted = ".".join(setting)
        for end in range(len(setting), 0, -1):
            if setting[:end] in self.variables:
                # Not the file: name what the operator must fix.
                return f"{self.variables[setting[:end]]} (environment, {dotted})"
        return dotted

    def error(self, lines: list[str]) -> ConfigError:
        where = f" in {self.path}" if self.path else ""
        return ConfigError("\n".join([f"invalid configuration{where}:", *(f"  {line}" for line in lines)]))

    def text(self, name: str) -> str | None:
        """A top-level setting that must be text, or None when it is not set."""
        value = self.values.get(name)
        if value is None or isinstance(value, str):
            return value
        raise self.error([f"{self.named((name,))}: Input should be a valid string"])


def config_path(path: Path | str | None) -> Path | None:
    """The file to read: ``path``, else $FACTSYNC_CONFIG, else ./factsync.toml when it exists."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    return path


def read_config(
    path: Path | None, names: Collection[str], environ: Mapping[str, str] | None = None
) -> RawConfig:
    """The file at ``path`` (None: no file) with the environment's values for the top-level ``names`` on top.

    Variables naming no setting in ``names`` are left alone: FACTSYNC_CONFIG, FACTSYNC_OPERATOR and the
    forwarder's variables share the prefix. A relative data_dir written in the file is the file's folder's.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        data_dir = values.get("data_dir")
        if isinstance(data_dir, str) and not Path(data_dir).is_absolute():
            values["data_dir"] = str(path.parent / data_dir)
    variables: dict[SettingPath, str] = {}
    env = os.environ if environ is None else environ
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        setting = tuple(name[len(ENV_PREFIX) :].lower().split(ENV_NESTING))
        if setting[0] not in names:
            continue
        if "" in setting:
            raise ConfigError(f"{name} (environment): an empty name between {ENV_NESTING!r}")
        _put(values, setting, env[name], name, variables)
        variables[setting] = name
    return RawConfig(values, path, variables)


def _put(
    values: dict[str, Any], setting: SettingPath, value: str, name: str, variables: dict[SettingPath, str]
) -> None:
    """Set ``setting`` in the nested ``values``, tables made on the way; a variable wins over the file."""
    table = values
    for depth, key in enumerate(setting[:-1]):
        inner = table.get(key)
        if not isinstance(inner, dict):
            other = variables.get(setting[: depth + 1])
            if other is not None:
                raise ConfigError(
                    f"{other} and {name} (environment) both set {'.'.join(setting[: depth + 1])}; use one"
                )
            inner = table[key] = {}
        table = inner
    if setting in _prefixes(variables):
        other = next(v for s, v in variables.items() if s[: len(setting)] == setting)
        raise ConfigError(f"{name} and {other} (environment) both set {'.'.join(setting)}; use one")
    table[setting[-1]] = value


def _prefixes(variables: Mapping[SettingPath, str]) -> set[SettingPath]:
    return {s[:end] for s in variables for end in range(1, len(s))}
