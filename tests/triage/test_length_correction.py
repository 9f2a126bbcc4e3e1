"""The series-length correction of a triage model's aggregation (``Aggregation.length_*``).

A series score that is its highest slice's grows with the number of slices, so a long
normal series has more chances of one high slice; the correction takes
``length_slope * ln(slices / length_reference)`` off its logit, and never raises a short one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from agent.triage.models import Aggregation, Model, load_model
from agent.triage.scoring import SliceScores, aggregate, length_adjusted, series_triage
from tests.support.triage_helpers import SHIPPED


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_without_a_reference_the_series_score_is_the_highest_slice() -> None:
    values = np.array([0.1, 0.7, 0.3] * 20, np.float32)
    score, top = aggregate(values, Aggregation(method="max", length_slope=2.0))
    assert score == pytest.approx(0.7) and list(top) == [1]


def test_a_long_series_loses_slope_times_log_length_in_logit() -> None:
    how = Aggregation(method="max", length_reference=12, length_slope=0.8)
    long = np.full(48, 0.2, np.float32)
    long[30] = 0.9
    score, top = aggregate(long, how)
    assert list(top) == [30]
    assert logit(score) == pytest.approx(logit(0.9) - 0.8 * math.log(48 / 12), abs=1e-6)
    assert score < 0.9


def test_series_at_or_below_the_reference_are_left_as_they_are() -> None:
    how = Aggregation(method="max", length_reference=12, length_slope=0.8)
    for n in (1, 5, 12):
        values = np.linspace(0.05, 0.95, n, dtype=np.float32)
        assert aggregate(values, how)[0] == pytest.approx(float(values.max()))


def test_top_k_mean_is_corrected_and_a_plain_mean_is_not() -> None:
    values = np.array([0.9, 0.8] + [0.1] * 22, np.float32)
    top2 = aggregate(values, Aggregation(method="top_k_mean", k=2, length_reference=12,
                                         length_slope=1.0))[0]  # fmt: skip
    assert logit(top2) == pytest.approx(logit(0.85) - math.log(2), abs=1e-6)
    mean = aggregate(values, Aggregation(method="mean", length_reference=12, length_slope=1.0))[0]
    assert mean == pytest.approx(float(values.mean()))


def test_scores_at_the_ends_stay_finite_and_ordered() -> None:
    how = Aggregation(length_reference=10, length_slope=5.0)
    assert 0.0 < length_adjusted(1.0, 10_000, how) < 1.0
    assert 0.0 <= length_adjusted(0.0, 10_000, how) < 1e-6
    assert length_adjusted(0.99, 100, how) > length_adjusted(0.98, 100, how)


@pytest.mark.parametrize("bad", [{"length_slope": -0.1}, {"length_slope": 6.0},
                                 {"length_reference": 0}])  # fmt: skip
def test_the_manifest_rejects_a_slope_or_reference_out_of_range(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Aggregation(**bad)


def test_the_finding_of_a_long_series_carries_the_corrected_score() -> None:
    shipped = load_model(SHIPPED / "ich")
    how = Aggregation(method="max", length_reference=12, length_slope=1.0)
    model = Model(shipped.manifest.model_copy(update={"aggregation": how}), shipped.folder)
    urgent = shipped.manifest.thresholds["haemorrhage"].urgent
    top = 1 / (1 + math.exp(-(logit(urgent) + 0.5)))  # just above urgent, in logit

    def triage_of(n: int) -> tuple[float, str]:
        scores = [SliceScores(f"1.2.{i}", np.array([0.05], np.float32)) for i in range(n)]
        scores[n // 2] = SliceScores(f"1.2.{n // 2}", np.array([top], np.float32))
        (finding,) = series_triage(model, scores).findings
        return finding.score, finding.priority

    assert triage_of(12)[1] in ("urgent", "stat")  # the reference length: as scored
    score, priority = triage_of(40)  # ln(40 / 12) = 1.2 logit off: below urgent
    assert priority == "routine" and score < urgent
