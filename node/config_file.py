"""Settings files for ``flume node`` and ``flume master`` (``--config-file FILE``).

A TOML file whose keys are the command's long flags without their dashes (``zk``,
``http-port`` or ``http_port``, ``data-dir``, ...; the global ``log-level`` too), so that
hosts are configured by configuration management, not shell history::

    # /etc/flume/node.toml
    name = "web1"
    zk = "zk1:2181,zk2:2181,zk3:2181"
    zk-auth-file = "/etc/flume/zk-auth-node"
    data-dir = "/var/lib/flume"

Precedence: a flag on the command line, then the file, then the environment variables the
flags name ($FLUME_MASTER, ...), then the built-in defaults. A key that names no flag, a
value of the wrong kind and a file that is not TOML are refused with the file and the key
(exit status 2), before anything starts.
"""
from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

MAX_FILE_BYTES = 1 << 20     # a settings file is a few hundred bytes; this bounds a mistake


_KINDS = {int: "an integer", float: "a number", str: "a string"}


class SettingsError(Exception):
    """The settings file cannot be used; the message names the file and the key."""


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's settable options by every name a file may use for them."""
    out = {}
    for a in parser._actions:
        longs = [o for o in a.option_strings if o.startswith("--")]
        if not longs or a.dest in ("help", "config_file"):
            continue
        for o in longs:
            out[o[2:]] = a
            out[o[2:].replace("-", "_")] = a
    return out


def _value(action: argparse.Action, key: str, value):
    """``value`` from TOML as the option ``action`` takes it; SettingsError if it cannot."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise SettingsError(f"{key} must be true or false, got {value!r}")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(action, argparse._AppendAction):
        values = value if isinstance(value, list) else [value]
        return [_one(action, key, v) for v in values]
    return _one(action, key, value)


def _kind(action: argparse.Action) -> str:
    return _KINDS.get(action.type, f"a {getattr(action.type, '__name__', 'value')}")


def _one(action: argparse.Action, key: str, value):
    if isinstance(value, (dict, list)):
        raise SettingsError(f"{key} takes one value, got {value!r}")
    if isinstance(value, bool) and action.type is not None:
        raise SettingsError(f"{key} must be {_kind(action)}, got {value!r}")
    if action.type is not None:
        try:
            value = action.type(value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{key} must be {_kind(action)}, got {value!r}") from exc
    elif not isinstance(value, str):
        value = str(value)
    if action.choices is not None and value not in action.choices:
        raise SettingsError(f"{key} must be one of {', '.join(map(str, action.choices))}, "
                            f"got {value!r}")
    return value


def read_toml(path: Path, error: type[Exception]) -> dict:
    """The TOML table of the file ``path``, read up to ``MAX_FILE_BYTES`` (a device or a
    huge file named by mistake is refused, not read whole); ``error`` naming the file
    when it cannot be read, is larger, or is not TOML."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise error(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        return tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{path}: not a TOML file: {exc}") from exc


def load(path: Path, command: argparse.ArgumentParser,
         top: argparse.ArgumentParser) -> None:
    """Make the settings in ``path`` the defaults of ``command`` (a subcommand's parser)
    and, for the global options, of ``top``; SettingsError naming the file and the key."""
    data = read_toml(path, SettingsError)
    mine, globals_ = _actions(command), _actions(top)
    for key, value in data.items():
        parser, action = ((command, mine[key]) if key in mine else
                          (top, globals_[key]) if key in globals_ else (None, None))
        if action is None:
            names = sorted(k for k in mine if "_" not in k)
            raise SettingsError(f"{path}: unknown setting {key!r} (settings are the long "
                                f"flags of the command: {', '.join(names)})")
        try:
            parser.set_defaults(**{action.dest: _value(action, key, value)})
        except SettingsError as exc:
            raise SettingsError(f"{path}: {exc}") from None
