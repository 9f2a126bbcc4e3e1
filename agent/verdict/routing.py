"""Routing rules: which destinations a released series goes to (config ``forward.routes``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from agent.config import ForwardConfig, RouteWhen


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """What a rule can look at: tags of the series and fields of its Verdict."""

    modality: str = ""
    body_part: str = ""
    station_name: str = ""
    calling_aet: str = ""
    series_description: str = ""
    priority: str = "routine"
    findings: tuple[str, ...] = ()


def _any(allowed: list[str], value: str) -> bool:
    return not allowed or value.upper() in {a.upper() for a in allowed}


def matches(when: RouteWhen, facts: RouteFacts) -> bool:
    if not (
        _any(when.modality, facts.modality)
        and _any(when.body_part, facts.body_part)
        and _any(when.station_name, facts.station_name)
        and _any(when.calling_aet, facts.calling_aet)
        and _any(list(when.priority), facts.priority)
    ):
        return False
    if when.findings and not set(when.findings) & set(facts.findings):
        return False
    pattern = when.series_description
    return pattern is None or re.search(pattern, facts.series_description, re.I) is not None


def destinations_for(cfg: ForwardConfig, facts: RouteFacts) -> list[str]:
    """Every matching route's destinations, in config order; the default when none matches."""
    chosen = _unique(
        name for route in cfg.routes if matches(route.when, facts) for name in route.to
    )
    if chosen:
        return chosen
    if cfg.default_to is not None:
        return list(cfg.default_to)
    return [d.name for d in cfg.destinations]


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
