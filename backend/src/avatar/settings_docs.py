"""``docs/configuration.md``, generated from :class:`avatar.settings.Settings` (``avatar config docs``).

Every setting is listed with its environment variable, type, default and description; the page is
never edited by hand, and ``avatar config docs --check`` (run by the tests) fails when it is stale.
Paths under the repository are shown relative to it (``<repo>/var``) so the page is the same on
every machine.
"""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from avatar.settings import REPO_ROOT, Settings

DOCS_PATH = REPO_ROOT / "docs" / "configuration.md"
ENV_PREFIX = "AVATAR_"
NESTED_DELIMITER = "__"
GENERATOR_COMMAND = "avatar config docs"


def env_name(*path: str) -> str:
    """The environment variable of a setting, e.g. ``("llm", "base_url")`` -> ``AVATAR_LLM__BASE_URL``."""
    return ENV_PREFIX + NESTED_DELIMITER.join(part.upper() for part in path)


def _is_group(info: FieldInfo) -> bool:
    return isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)


def _leaves(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    for name, info in model.model_fields.items():
        if _is_group(info):
            group: type[BaseModel] = info.annotation  # type: ignore[assignment]
            yield from _leaves(group, (*prefix, name))
        else:
            yield (*prefix, name), info


def leaf_settings(model: type[BaseSettings] = Settings) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every setting that holds a value (not a group), with its path from the root (groups may
    hold groups: ``AVATAR_LIVE__TWITCH__CHANNEL``)."""
    yield from _leaves(model, ())


def _one_of(choices: list[str]) -> str:
    return choices[0] if len(choices) == 1 else ", ".join(choices[:-1]) + " or " + choices[-1]


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return _one_of([f"`{v}`" for v in get_args(annotation)])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + ", optional"
    if origin is list:
        (item,) = get_args(annotation)
        return f"JSON list of {_type_name(item)}s"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _one_of([f"`{m.value}`" for m in annotation])
    names: dict[Any, str] = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
        SecretStr: "secret string",
    }
    if annotation in names:
        return names[annotation]
    raise TypeError(f"no documentation name for the settings type {annotation!r}: add one to {__name__}")


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Path):
        try:
            return f"`<repo>/{value.relative_to(REPO_ROOT).as_posix()}`"
        except ValueError:
            return f"`{value.as_posix()}`"
    if isinstance(value, list):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """One table cell: one line, reST double backticks as Markdown code, pipes escaped."""
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def _row(path: tuple[str, ...], info: FieldInfo) -> str:
    default = _value(info.get_default(call_default_factory=True))
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("default_from"), str):
        default += f" (declared in `{extra['default_from']}`)"
    cells = [f"`{env_name(*path)}`", _type_name(info.annotation), default, info.description or ""]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


_HEADER = "| Variable | Type | Default | Description |\n|---|---|---|---|"


def render(model: type[BaseSettings] = Settings) -> str:
    """The whole page, as ``docs/configuration.md`` must read."""
    lines = [
        "# Configuration",
        "",
        f"<!-- Generated from backend/src/avatar/settings.py by `{GENERATOR_COMMAND}`; do not edit. -->",
        "",
        "Every setting of AVATAR is an environment variable (or a line of a `.env` file in the working",
        f"directory): `{ENV_PREFIX}` followed by the group and the field, upper case, joined by",
        f"`{NESTED_DELIMITER}` (`AVATAR_LLM__BASE_URL=http://vllm:8001/v1`). Lists are written as JSON.",
        "Nothing needs to be set for the embedded default (`make run`); `docker-compose.yml` sets the",
        "production placement. With `AVATAR_ENVIRONMENT=production` the default secrets are refused.",
        "`<repo>` stands for the repository's directory.",
        "",
        "A default marked *declared in* a class is written once, in that class of a model service or",
        "use case, and the setting takes it from there (`backend/src/avatar/settings.py` explains why).",
        "The architecture behind the groups is in [architecture.md](architecture.md).",
        "",
        f"This page is generated: after changing the settings run `{GENERATOR_COMMAND}`; the tests run",
        f"`{GENERATOR_COMMAND} --check` and fail when the page is stale.",
        "",
        "## General",
        "",
        _HEADER,
    ]
    groups: list[tuple[str, FieldInfo]] = []
    for name, info in model.model_fields.items():
        if _is_group(info):
            groups.append((name, info))
        else:
            lines.append(_row((name,), info))
    for name, info in groups:
        group: type[BaseModel] = info.annotation  # type: ignore[assignment]
        lines += ["", f"## `{name}`", "", _cell(info.description or ""), "", _HEADER]
        lines += [_row(path, sub_info) for path, sub_info in _leaves(group, (name,))]
    return "\n".join(lines) + "\n"


def undocumented(model: type[BaseSettings] = Settings) -> list[str]:
    """Environment variables of settings (and groups) that have no description."""
    missing = [
        env_name(name) for name, info in model.model_fields.items() if not (info.description or "").strip()
    ]
    missing += [
        env_name(*path) for path, info in leaf_settings(model) if not (info.description or "").strip()
    ]
    return sorted(set(missing))


def check(path: Path = DOCS_PATH, model: type[BaseSettings] = Settings) -> str | None:
    """``None`` when ``path`` holds the current page, else what is wrong and how to fix it."""
    missing = undocumented(model)
    if missing:
        return f"settings without a description: {', '.join(missing)} (add Field(description=...))"
    if not path.is_file():
        return f"{path} is missing: run `{GENERATOR_COMMAND}`"
    if path.read_text(encoding="utf-8") != render(model):
        return f"{path} is stale (the settings changed): run `{GENERATOR_COMMAND}`"
    return None


def write(path: Path = DOCS_PATH, model: type[BaseSettings] = Settings) -> None:
    """Write the page; refuses while a setting has no description."""
    missing = undocumented(model)
    if missing:
        raise ValueError(f"settings without a description: {', '.join(missing)} (add Field(description=...))")
    path.write_text(render(model), encoding="utf-8")
