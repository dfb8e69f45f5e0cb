"""From the environment (and ``.env``) to ``Settings``: read once, decoded, checked.

The process environment wins over ``./.env``. Each variable afpipe knows is
decoded on its own against its field's type, so a bad value is reported with
its name from the start, not recovered from a decoder's message; then what the
settings must hold together is checked (``checks``). Anything wrong raises
``ConfigError`` naming the variable, before anything binds; the CLI turns that
into exit status 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from afpipe.config.checks import SettingProblem, check
from afpipe.config.contract import SECRET_SETTINGS, Settings
from afpipe.config.sections import sections
from afpipe.errors import ConfigError

_TRUE = {"yes": "true", "on": "true", "no": "false", "off": "false"}
_QUOTED = re.compile(r"""^(['"])(.*?)\1\s*(?:#.*)?$""", re.S)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELDS = {f.encode_name: f for f in msgspec.structs.fields(Settings)}


def setting_names() -> list[str]:
    return list(_FIELDS)


def defaults() -> dict[str, Any]:
    return {name: f.default for name, f in _FIELDS.items()}


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=value`` lines; ``#`` comments, ``export`` prefixes and quotes allowed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(f".env line {number}: expected KEY=value")
        value = value.strip()
        quoted = _QUOTED.match(value)
        if quoted:  # a comment may follow the closing quote
            value = quoted[2]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def read_environment(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = None
) -> dict[str, str]:
    """Every variable of ``dotenv`` (default ./.env, if present) overlaid by ``environ``
    (default the process's): the one reading of ``.env``."""
    environ = os.environ if environ is None else environ
    dotenv = Path(".env") if dotenv is None else dotenv
    raw: dict[str, str] = {}
    if dotenv.is_file():
        raw.update(parse_dotenv(dotenv.read_text(encoding="utf-8")))
    raw.update(environ)
    return raw


def load(environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
    """The settings from ``read_environment(environ, dotenv)``."""
    return settings_from(read_environment(environ, dotenv))


def settings_from(environment: Mapping[str, str]) -> Settings:
    """The settings from every variable of ``environment`` (others are ignored)."""
    known = _known(environment)
    values = {_FIELDS[name].name: _decode(name, value) for name, value in known.items()}
    settings = Settings(**values)
    try:
        check(settings)
        sections(settings)  # what must be parsed parses
    except SettingProblem as problem:
        if problem.name is None:
            raise ConfigError(f"invalid settings: {problem.message}") from None
        raise ConfigError(_wording(problem.name, known, problem.message)) from None
    return settings


def _known(raw: Mapping[str, str]) -> dict[str, str]:
    """afpipe's variables with a value, as written (booleans and LOG_LEVEL eased)."""
    known: dict[str, str] = {}
    for key, value in raw.items():
        if key not in _FIELDS or value.strip() == "":
            continue
        value = value.strip()
        # yes/no/on/off only for booleans: a token or a name must stay as written
        if _FIELDS[key].type is bool:
            value = _TRUE.get(value.lower(), value)
        elif key == "LOG_LEVEL":  # the Node.js service accepted INFO as well as info
            value = value.lower()
        known[key] = value
    return known


def _decode(name: str, value: str) -> Any:
    try:
        return msgspec.convert(value, _FIELDS[name].type, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_wording(name, {name: value}, str(exc))) from None


def _wording(name: str, values: Mapping[str, str], message: str) -> str:
    shown = "<redacted>" if name in SECRET_SETTINGS else repr(values.get(name, ""))
    message = message.replace("`", "")
    return f"{name}={shown}: {message[:1].lower()}{message[1:]}"


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings for the startup log, secrets hidden."""
    out = msgspec.to_builtins(settings)
    assert isinstance(out, dict)
    for name in SECRET_SETTINGS:
        if out.get(name):
            out[name] = "<redacted>"
    return out
