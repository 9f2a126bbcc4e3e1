"""YAML text into a strict model, with every problem named by its YAML path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agent.config.forward import DESTINATION_KINDS
from agent.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def parse_yaml_model(text: str, source: str, model: type[M], *, empty_ok: bool = False) -> M:
    """Parse YAML into ``model``; every problem becomes a ConfigError line with its YAML path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"<yaml>: {_yaml_reason(exc)}"]) from exc
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, ["<root>: must be a mapping of keys to values"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [describe(err) for err in exc.errors()]) from exc


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def describe(err: Any) -> str:
    path = _yaml_path(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown key"
    if kind == "missing":
        return f"{path}: required"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{path}: {msg[0].lower()}{msg[1:]}" if msg else f"{path}: invalid"


def _yaml_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
        elif item in DESTINATION_KINDS:
            continue
        else:
            parts.append(str(item))
    return ".".join(parts) or "<root>"
