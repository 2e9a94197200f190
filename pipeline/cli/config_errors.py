"""Bad configuration as one sentence: `ConfigError` names the setting, its value (secrets
masked) and what to do; `load_checked_settings` turns every way loading settings can fail
(missing or malformed config file, unknown keys, invalid values) into one.

The CLI's entry point (pipeline/cli/app/entry.py) prints it as a single line, no traceback.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from pipeline.config import Settings, config_file

ENV_PREFIX = "SECANALYST_"
# SECANALYST_* variables that are not settings (read elsewhere, or by tests and tools).
AUXILIARY_ENV = frozenset({
    "config_file", "debug", "new_user_password", "reliability_full", "integration_log",
    "devstack_mark"})
_SECRET_WORDS = ("password", "secret", "pepper", "token", "api_key")


class ConfigError(Exception):
    """A setting that stops a command from starting."""

    def __init__(self, setting: str, value: str | None, problem: str, hint: str) -> None:
        self.setting = setting
        self.value = value
        self.problem = problem
        self.hint = hint
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message  # problem may be extended after construction

    @property
    def message(self) -> str:
        shown = f" = {self.value}" if self.value is not None else ""
        return f"{self.setting}{shown}: {self.problem}. {self.hint}"


# libpq's password parameters, in a URL query or a key=value connection string.
_PASSWORD_PARAM = re.compile(r"((?:^|[?&\s])(?:ssl)?password\s*=\s*)('[^']*'|[^&\s]+)",
                             re.IGNORECASE)


def mask_secrets(value: str) -> str:
    """A URL's password becomes ***; the rest stays readable. libpq also takes a
    password as `?password=` in a URL or `password=` in a key=value string."""
    value = _PASSWORD_PARAM.sub(r"\1***", value)
    try:
        url = urlsplit(value)
        password = url.password
    except ValueError:
        return value
    if not password:
        return value
    host = url.netloc.rsplit("@", 1)[1]
    return urlunsplit(url._replace(netloc=f"{url.username or ''}:***@{host}"))


def shown_value(path: tuple[str, ...], value: Any) -> str:
    if any(word in part.lower() for part in path for word in _SECRET_WORDS):
        return "***"
    text = value if isinstance(value, str) else repr(value)
    text = mask_secrets(text)
    return text if len(text) <= 80 else f"{text[:77]}..."


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(path).upper()


def file_key(path: tuple[str, ...]) -> str:
    return f"[{'.'.join(path[:-1])}] {path[-1]}" if len(path) > 1 else path[0]


def setting_label(path: tuple[str, ...]) -> str:
    """Both spellings of a setting, e.g. `SECANALYST_DATABASE__URL / [database] url`."""
    return f"{env_name(path)} / {file_key(path)}"


def _env() -> dict[str, str]:
    return {k.upper(): v for k, v in os.environ.items()}  # pydantic-settings ignores case


def _where(path: tuple[str, ...]) -> str:
    """Where a failing value came from: the variable that set it, else the file."""
    env = _env()
    for end in range(len(path), 0, -1):
        name = env_name(path[:end])
        if name in env:
            inside = ".".join(path[end:])
            return f"{name}" + (f" (at {inside})" if inside else "")
    source = config_file()
    if source.is_file():
        return f"{file_key(path)} in {source}"
    return setting_label(path)


def _model_at(path: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def from_validation_error(exc: ValidationError) -> ConfigError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = tuple(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" \
        if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        parent = _model_at(path[:-1])
        close = difflib.get_close_matches(path[-1], list(parent.model_fields) if parent
                                          else [], n=1, cutoff=0.6)
        where = _where(path)
        suggestion = "" if not close else (
            env_name((*path[:-1], close[0])) if where.startswith(ENV_PREFIX) else close[0])
        return ConfigError(where, None, f"is not a setting"
                           f"{f' (did you mean {suggestion}?)' if suggestion else ''}{more}",
                           "Remove or rename it (settings are listed in pipeline/config/).")
    if first["type"] == "missing":
        return ConfigError(_where(path), None, f"is required{more}",
                           "Set it in the environment or the config file.")
    return ConfigError(_where(path), shown_value(path, first.get("input")),
                       f"{first['msg']}{more}", "Fix the value.")


def check_config_file() -> None:
    """SECANALYST_CONFIG_FILE must name a file; a config file must be valid TOML."""
    path = config_file()
    named = os.environ.get("SECANALYST_CONFIG_FILE")
    if named is not None and not path.is_file():
        problem = "is a directory" if path.is_dir() else "no such file"
        raise ConfigError("SECANALYST_CONFIG_FILE", named, problem,
                          "Point it at your TOML file, or unset it to use ./secanalyst.toml.")
    if not path.is_file():
        return  # no ./secanalyst.toml: defaults and environment only
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(path, exc) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}", None, f"cannot be read ({exc})",
                          "Fix its permissions or encoding (UTF-8).") from exc


def _toml_error(path: Path, exc: tomllib.TOMLDecodeError) -> ConfigError:
    text = str(exc)
    where = re.search(r"\(at line (\d+), column (\d+)\)", text)
    reason = text[:where.start()].strip() if where else text
    line = f" line {where.group(1)}, column {where.group(2)}" if where else ""
    return ConfigError(f"config file {path}{line}", None, f"is not valid TOML: {reason}",
                       "Fix the file (https://toml.io).")


def check_env_names() -> None:
    """pydantic-settings silently ignores a misspelt variable (SECANALYST_DATABSE__URL):
    refuse one whose section is unknown, or one that is a near miss of a setting."""
    fields = list(Settings.model_fields)
    for name in sorted(os.environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        head = rest.split("__", 1)[0]
        if rest in AUXILIARY_ENV or head in fields:
            continue
        close = difflib.get_close_matches(head, fields, n=1, cutoff=0.8)
        if "__" in rest or close:
            meant = (ENV_PREFIX + close[0] + name[len(ENV_PREFIX) + len(head):]).upper() \
                if close else ""
            hint = f" (did you mean {meant}?)" if close else ""
            raise ConfigError(name, None, f"is not a setting{hint}",
                              "Unset or rename it (settings are listed in pipeline/config/).")


def load_checked_settings() -> Settings:
    """The settings, or a ConfigError saying which one to fix."""
    check_config_file()
    check_env_names()
    try:
        return Settings()
    except ValidationError as exc:
        raise from_validation_error(exc) from exc
