"""Hand-made journal Instances: a CT series of ``n`` slices without any files."""

from __future__ import annotations

from dataclasses import replace

from agent.domain.instances import Instance

BASE = Instance(
    sop_instance_uid="1.2.3.0", sop_class_uid="1.2.840.10008.5.1.4.1.1.2", series_uid="1.2.3",
    study_uid="1.2", transfer_syntax="1.2.840.10008.1.2.1", path="/dev/null", size=10,
    sha256="0" * 64, version=1, modality="CT", association=1,
)  # fmt: skip


def slices(n: int, *, skip: set[int] = frozenset(), **kw: object) -> list[Instance]:  # type: ignore[assignment]
    return [
        replace(BASE, sop_instance_uid=f"1.2.3.{i}", instance_number=i + 1,
                slice_position=-1.25 * i, sha256=f"{i:064d}", **kw)  # type: ignore[arg-type]
        for i in range(n) if i not in skip
    ]  # fmt: skip
