"""``dicom.max_associations``: with a limit of 2, a third concurrent association is refused,
and once one of the two is released a new one is accepted and stores.

The agents here start without a port probe (``AgentProcess.start(probe_port=False)``); the second
test shows why: a bare TCP connection that never asks for an association must not use up
one of the slots.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import write_ct_series
from tests.support.scu import associate

pytestmark = pytest.mark.integration


def test_third_association_refused_until_one_is_released(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(dicom={"max_associations": 2}).start(probe_port=False)
    held = [associate(agent.port), associate(agent.port)]
    try:
        assert all(a.is_established for a in held)
        third = associate(agent.port)
        assert not third.is_established and third.is_rejected
        assert all(a.send_c_echo().Status == 0x0000 for a in held)  # the two still work

        held.pop().release()
        # the agent's association thread ends just after its release reply; allow for that
        deadline = time.monotonic() + 30
        while not (fresh := associate(agent.port)).is_established:
            assert time.monotonic() < deadline, "no association accepted after a release"
            time.sleep(0.2)
        ds = dcmread(write_ct_series(tmp_path / "ct", 1)[0])
        assert fresh.send_c_store(ds).Status == 0x0000
        fresh.release()
    finally:
        for a in held:
            a.release()
    rows = agent.query("SELECT sop_instance_uid FROM instances")
    assert [r[0] for r in rows] == [str(ds.SOPInstanceUID)]
    assert "association rejected" in agent.log()
