"""The shipped ICH model on what made v0.2 cry wolf, and on clear bleeds (issue 12).

Through the agent's own ``TriageEngine`` (gate, preprocessing, aggregation, thresholds):
the real head CT slices the packages ship raise no triage alert; normal heads with
physiological calcifications (pineal, choroid plexus, falx, basal ganglia) stay routine;
large bleeds are flagged. The synthetic series come from ``models/ich/data.py`` with a seed
that training (20240601), validation (20240602, 20240603) and the held-out benchmark (777001-777003)
do not use. The bounds are the issue's goals (0.9 and 0.95), not the model's own figures.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from pydicom import dcmread

from agent.config import TriageConfig
from agent.domain.verdicts import QC, Triage, Verdict
from agent.triage.engine import TriageEngine
from agent.triage.scoring import triage_alert
from models.ich.data import REAL_HEADS, make_series
from models.phantoms import Acquisition
from tests.support.dicom_factory import real_file
from tests.support.triage_helpers import ct_dataset, head_header

SEED = 31_337
N = 40


@functools.cache
def engine() -> TriageEngine:
    return TriageEngine.start(TriageConfig(device="cpu"), None)


def triage_of(datasets: list[Any]) -> Triage:
    acc = engine().series()
    for ds in datasets:
        acc.add(ds)
    result = acc.result()
    assert result is not None, "the head-CT model applies by its tags"
    return result


def series(rng: np.random.Generator, acq: Acquisition, kind: str | None) -> list[Any]:
    s = make_series(rng, acq, int(rng.integers(8, 17)), kind)
    hdr = head_header()
    return [ct_dataset(x, hdr, i, pixel_mm=s.pixel_mm) for i, x in enumerate(s.slices)]


def no_alert(t: Triage) -> bool:
    verdict = Verdict(study_uid="1", series_uid="2", modality="CT", state="complete", instances=1,
                      qc=QC("pass"), triage=t)  # fmt: skip
    return triage_alert(verdict) is None


def test_real_head_slices_raise_no_triage_alert() -> None:
    for name in (*REAL_HEADS, "693_J2KI.dcm"):
        ds = dcmread(real_file(name))
        ds.BodyPartExamined = "HEAD"  # 693 has none; its description does not say head
        t = triage_of([ds])
        assert (t.status, t.priority) == ("ok", "routine") and no_alert(t), (name, t)


def test_calcified_normal_heads_stay_routine() -> None:
    rng = np.random.default_rng(SEED)
    acq = Acquisition(calcified=1.0)
    results = [triage_of(series(rng, acq, None)) for _ in range(N)]
    assert all(t.status == "ok" for t in results)
    routine = sum(t.priority == "routine" for t in results)
    stat = sum(t.priority == "stat" for t in results)
    assert routine >= 0.95 * N and stat <= 1, [t.findings[0].score for t in results]


def test_large_bleeds_are_flagged() -> None:
    rng = np.random.default_rng(SEED + 1)
    acq = Acquisition(small=0.0, faint=0.0)  # 7-25 mm, 60-90 HU
    kinds = ("epidural", "subdural", "intraparenchymal", "intraventricular", "subarachnoid")
    results = [triage_of(series(rng, acq, kinds[i % len(kinds)])) for i in range(N)]
    flagged = sum(t.priority in ("urgent", "stat") for t in results)
    assert flagged >= 0.9 * N, [(t.priority, t.findings[0].score) for t in results]
