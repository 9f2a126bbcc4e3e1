"""The completion rules, on hand-made instances and a real journal."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from agent.config import SeriesConfig
from agent.domain.instances import (
    AssociationEnded,
    Instance,
    SeriesComplete,
    SeriesInfo,
    SeriesState,
)
from agent.journal.database import Journal
from agent.series.assembler import Assembler, Assembly, complete_by_data, has_gaps
from tests.support.instances import BASE, slices


def assembly_of(insts: list[Instance]) -> Assembly:
    a = Assembly("1.2.3", "1.2", "CT")
    for inst in insts:
        a.add(inst, 30)
    return a


def test_gaps_in_instance_numbers_or_positions() -> None:
    assert not has_gaps(slices(10))
    assert has_gaps(slices(10, skip={4}))
    no_numbers = [replace(i, instance_number=None) for i in slices(10, skip={4})]
    assert has_gaps(no_numbers), "a missing slice position is a gap too"
    assert not has_gaps([replace(i, instance_number=None, slice_position=None) for i in slices(3)])


def test_temporal_positions_must_all_be_present() -> None:
    phases = [replace(i, sop_instance_uid=i.sop_instance_uid + f".{p}", instance_number=None,
                      temporal_positions=3) for i in slices(4) for p in range(3)]  # fmt: skip
    assert not has_gaps(phases)
    assert has_gaps(phases[:-1])


def test_complete_by_count_and_frames() -> None:
    assert complete_by_data(assembly_of(slices(5, images_in_acquisition=5))) == "count"
    assert complete_by_data(assembly_of(slices(4, images_in_acquisition=5))) is None
    assert complete_by_data(assembly_of(slices(4))) is None
    assert complete_by_data(assembly_of([replace(BASE, number_of_frames=100)])) == "frames"


class Harness:
    """The assembler stage in-process, with a real journal and real streams."""

    def __init__(self, tmp_path: Path, grace_s: float = 0.05) -> None:
        self.journal = Journal.open(tmp_path / "journal.sqlite")
        self.cfg = SeriesConfig(grace_s=grace_s, idle_timeout_s={"default": 0.5})

    def record(self, insts: list[Instance]) -> list[Instance]:
        info = SeriesInfo(series_uid="1.2.3", study_uid="1.2", modality="CT")
        return [r for i in insts if (r := self.journal.record_instance(i, info))]

    async def run(self, items: list[object], wait: float = 1.0) -> list[SeriesComplete]:
        tx, rx = anyio.create_memory_object_stream[object](100)
        out_tx, out_rx = anyio.create_memory_object_stream[SeriesComplete](100)
        done: list[SeriesComplete] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(Assembler(self.cfg, self.journal).run, rx, out_tx)
            for item in items:
                await tx.send(item)
            await anyio.sleep(wait)
            await tx.aclose()
            async for result in out_rx:
                done.append(result)
                self.journal.release_series(result.series_uid, ["pacs"])  # as the gate does
        return done


@pytest.mark.anyio
async def test_release_then_grace_completes_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    insts = h.record(slices(10))
    done = await h.run([*insts, AssociationEnded(1, released=True)], wait=0.3)
    assert [(d.reason, d.instances, d.amended) for d in done] == [("released", 10, False)]
    assert h.journal.series_state("1.2.3") == SeriesState.RELEASED


@pytest.mark.anyio
async def test_abort_does_not_complete_but_idle_does(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    insts = h.record(slices(10))
    done = await h.run([*insts, AssociationEnded(1, released=False)], wait=0.2)
    assert done == []
    done = await Harness(tmp_path).run([], wait=0.8)  # restart: recovered, then idle
    assert [d.reason for d in done] == ["idle"]


@pytest.mark.anyio
async def test_late_image_amends(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    first = h.record(slices(10)[:5])
    done = await h.run([*first, AssociationEnded(1, True)], wait=0.3)
    late = h.record(slices(10)[5:])
    done += await h.run(
        [replace(i, association=2) for i in late] + [AssociationEnded(2, True)], 0.3
    )
    assert [(d.instances, d.amended) for d in done] == [(5, False), (10, True)]
    row = h.journal.series_row("1.2.3")
    assert row is not None and (row["completions"], row["amendments"]) == (2, 1)


@pytest.mark.anyio
async def test_complete_but_not_passed_on_is_re_emitted_after_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.record(slices(3))
    h.journal.mark_complete("1.2.3", "released", 0.0)  # crashed before the gate saw it
    done = await Harness(tmp_path).run([], wait=0.1)
    assert [(d.series_uid, d.reason) for d in done] == [("1.2.3", "released")]

