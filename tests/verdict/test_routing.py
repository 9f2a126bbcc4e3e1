"""Routing (README step 5): each ``forward.routes`` condition matches and refuses, every
matching route adds its destinations, ``forward.default_to`` catches the rest, and without a
default a series goes to every destination."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import ForwardConfig, RouteWhen
from agent.verdict.routing import RouteFacts, destinations_for, matches

FACTS = RouteFacts(
    modality="CT", body_part="HEAD", station_name="CT-ROOM-1", calling_aet="CT_A",
    series_description="Head 5mm axial", priority="urgent", findings=("haemorrhage",),
)  # fmt: skip


def when(**conditions: Any) -> RouteWhen:
    return RouteWhen.model_validate(conditions)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({"modality": ["CT"]}, True),
        ({"modality": ["MR", "DX"]}, False),
        ({"body_part": ["head"]}, True),  # case-insensitive, like the tag values
        ({"body_part": ["CHEST"]}, False),
        ({"station_name": ["CT-ROOM-2", "ct-room-1"]}, True),
        ({"station_name": ["CT-ROOM-2"]}, False),
        ({"calling_aet": ["CT_A"]}, True),
        ({"calling_aet": ["CT_B"]}, False),
        ({"series_description": r"5\s*mm"}, True),  # searched, not matched whole
        ({"series_description": "^axial"}, False),
        ({"series_description": "HEAD"}, True),  # case-insensitive
        ({"priority": ["stat", "urgent"]}, True),
        ({"priority": ["stat"]}, False),
        ({"findings": ["fracture", "haemorrhage"]}, True),  # any of them
        ({"findings": ["fracture"]}, False),
        ({}, True),  # no condition: matches everything
        ({"modality": ["CT"], "calling_aet": ["CT_B"]}, False),  # all must hold
        ({"modality": ["CT"], "station_name": ["CT-ROOM-1"], "priority": ["urgent"]}, True),
    ],
)
def test_each_condition_matches_and_refuses(conditions: dict[str, Any], expected: bool) -> None:
    assert matches(when(**conditions), FACTS) is expected


def test_findings_condition_refuses_a_series_without_findings() -> None:
    assert not matches(when(findings=["haemorrhage"]), RouteFacts(modality="CT"))


def test_priority_condition_on_a_routine_series() -> None:
    routine = RouteFacts(modality="CT")  # the default priority
    assert matches(when(priority=["routine"]), routine)
    assert not matches(when(priority=["stat", "urgent"]), routine)


def forward(**settings: Any) -> ForwardConfig:
    dests = [{"kind": "folder", "name": n} for n in ("pacs", "neuro", "research")]
    return ForwardConfig.model_validate({"destinations": dests, **settings})


ROUTES = [
    {"name": "bleeds", "when": {"findings": ["haemorrhage"]}, "to": ["neuro"]},
    {"name": "room-1", "when": {"station_name": ["CT-ROOM-1"]}, "to": ["research", "neuro"]},
    {"name": "mr", "when": {"modality": ["MR"]}, "to": ["research"]},
]


def test_every_matching_route_adds_its_destinations_once_in_config_order() -> None:
    assert destinations_for(forward(routes=ROUTES), FACTS) == ["neuro", "research"]


def test_only_the_matching_routes_count() -> None:
    mr = RouteFacts(modality="MR", station_name="MR-1")
    assert destinations_for(forward(routes=ROUTES, default_to=["pacs"]), mr) == ["research"]


def test_default_to_when_no_route_matches() -> None:
    chest = RouteFacts(modality="CT", body_part="CHEST", station_name="CT-ROOM-9")
    assert destinations_for(forward(routes=ROUTES, default_to=["pacs"]), chest) == ["pacs"]


def test_every_destination_when_nothing_matches_and_no_default() -> None:
    chest = RouteFacts(modality="CT", body_part="CHEST", station_name="CT-ROOM-9")
    assert destinations_for(forward(routes=ROUTES), chest) == ["pacs", "neuro", "research"]
    assert destinations_for(forward(), FACTS) == ["pacs", "neuro", "research"]
