"""De-identified export through a real folder destination of a running agent: every attribute
of the PS3.15 Basic Profile (Table E.1-1, as the library ships it) is filled with an
identifying value at the scanner, and none survives at the destination; the patient ID and
the UIDs become keyed hashes, the same for the same patient across studies and restarts."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.tag import Tag

from tests.support.agent_proc import AgentProcess
from tests.support.cli import scanner_agent
from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.peers import storescu
from tests.support.phi import MARK, UID_ROOT, add_every_profile_attribute, profile_tags

pytestmark = pytest.mark.integration
KEY = b"a research site's secret key, 32+"
KEPT = "PatientAge"  # in the profile (X); the site keeps it on purpose


def pseudonym(patient_id: str) -> str:  # the documented scheme, written out independently
    return hmac.new(KEY, b"PatientID\0" + patient_id.encode(), hashlib.sha256).hexdigest()[:20]


def hashed_uid(uid: str) -> str:
    digest = hmac.new(KEY, b"UID\0" + uid.encode(), hashlib.sha256).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def phi_series(folder: Path, patient_id: str, count: int) -> list[Path]:
    header = series_header()
    header.PatientID = patient_id
    files = write_ct_series(folder, count, header=header)
    for path in files:
        ds = dcmread(path)
        add_every_profile_attribute(ds)
        ds.save_as(path, enforce_file_format=True)
    return files


def research_agent(factory: Any, tmp_path: Path) -> tuple[AgentProcess, Path]:
    (salt := tmp_path / "salt").write_bytes(KEY)
    out = tmp_path / "research"
    dest = {"kind": "folder", "name": "research", "path": str(out),
            "deidentify": {"profile": "basic", "keep": [KEPT], "salt_file": str(salt)}}  # fmt: skip
    return factory(forward={"destinations": [dest]}).start(), out


def delivered(agent: AgentProcess, count: int) -> None:
    agent.wait_for(
        "SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'",
        lambda rows: rows[0][0] == count, 60,
    )  # fmt: skip


def check(source: Dataset, out: Dataset) -> None:
    """Each profile attribute of ``source`` against its action; then nothing anywhere in
    ``out`` carries an identifying value."""
    for (group, elem), category in profile_tags().items():
        tag = Tag(group, elem)
        if tag not in source or group == 0x0002:
            continue
        before, after = source[tag], out.get(tag)
        where = f"{before.keyword} {tag} ({category})"
        if before.keyword == KEPT:
            assert after is not None and after.value == before.value, where
        elif before.keyword == "PatientID":
            assert after is not None and after.value == pseudonym(str(before.value)), where
        elif category == "U_TAGS":
            assert after is not None and after.value == hashed_uid(str(before.value)), where
        elif category == "X_TAGS":  # removed (the library writes a dummy date for a DA)
            assert after is None or (after.VR == "DA" and after.value == "00010101"), where
        else:
            assert after is None or after.value != before.value or not before.value, where
    leaks: list[str] = []

    def visit(_: Dataset, elem: Any) -> None:
        text = str(elem.value)
        if MARK in text or UID_ROOT in text or "Synthetic" in text or elem.tag.is_private:
            leaks.append(f"{elem.keyword or elem.tag}: {text[:60]}")

    out.walk(visit)
    assert not leaks
    assert out.PatientIdentityRemoved == "YES"
    assert out.file_meta.MediaStorageSOPInstanceUID == hashed_uid(str(source.SOPInstanceUID))


def test_no_identifying_attribute_reaches_the_destination(agent_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agent, out = research_agent(agent_factory, tmp_path)
    first = phi_series(tmp_path / "study1", "PAT-1", 2)
    second = phi_series(tmp_path / "study2", "PAT-1", 2)  # the same patient, another study
    other = phi_series(tmp_path / "study3", "PAT-2", 1)
    for files in (first, second, other):
        storescu(agent.port, files)
    delivered(agent, 5)
    sent = {hashed_uid(str(dcmread(f).SOPInstanceUID)): f for f in first + second + other}
    copies = {p.stem: dcmread(p) for p in out.rglob("*.dcm")}
    assert sorted(copies) == sorted(sent)
    for uid, copy in copies.items():
        check(dcmread(sent[uid]), copy)
    ids = {dcmread(f).StudyInstanceUID: copies[hashed_uid(str(dcmread(f).SOPInstanceUID))].PatientID
           for f in first + second + other}  # fmt: skip
    assert len(set(ids.values())) == 2  # PAT-1's two studies share a pseudonym, PAT-2 has its own
    assert len({c.StudyInstanceUID for c in copies.values()}) == 3

    agent.stop()  # a restart keeps the mapping: it is keyed by the salt file, not remembered
    agent.start()
    later = phi_series(tmp_path / "study4", "PAT-1", 1)
    storescu(agent.port, later)
    delivered(agent, 6)
    (copy,) = [
        dcmread(p) for p in out.rglob(f"{hashed_uid(str(dcmread(later[0]).SOPInstanceUID))}.dcm")
    ]
    assert copy.PatientID == pseudonym("PAT-1")


def test_a_missing_salt_file_fails_check_config(tmp_path: Path) -> None:
    import yaml

    dest = {"kind": "folder", "name": "research",
            "deidentify": {"salt_file": str(tmp_path / "no-salt")}}  # fmt: skip
    short = {
        "kind": "folder",
        "name": "short",
        "deidentify": {"salt_file": str(tmp_path / "short")},
    }
    (tmp_path / "short").write_bytes(b"too short")
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"storage": {"path": str(tmp_path / "state")},
                                      "forward": {"destinations": [dest, short]}}))  # fmt: skip
    result = scanner_agent("check-config", config=config)
    assert result.returncode == 1
    assert (f"forward.destinations[0].deidentify.salt_file {tmp_path / 'no-salt'}: cannot read: "
            "No such file" in result.stderr), result.stderr  # fmt: skip
    assert "forward.destinations[1].deidentify.salt_file" in result.stderr
    assert "a key needs at least 16" in result.stderr


def test_dimse_and_stow_destinations_get_the_same_pseudonyms(  # type: ignore[no-untyped-def]
    agent_factory, orthanc_factory, tmp_path: Path
) -> None:
    (salt := tmp_path / "salt").write_bytes(KEY)
    deid = {"profile": "basic", "keep": [KEPT], "salt_file": str(salt)}
    dimse, web = orthanc_factory("dimse").start(), orthanc_factory("web").start()
    dests = [{**dimse.destination("pacs"), "deidentify": deid},
             {"kind": "stow", "name": "web", "deidentify": deid,
              "url": f"http://127.0.0.1:{web.http_port}/dicom-web"}]  # fmt: skip
    agent = agent_factory(forward={"destinations": dests}).start()
    files = phi_series(tmp_path / "study", "PAT-9", 2)
    storescu(agent.port, files)
    delivered(agent, 4)
    sources = {hashed_uid(str(dcmread(f).SOPInstanceUID)): dcmread(f) for f in files}
    for server in (dimse, web):
        stored = server.sop_instance_uids()
        assert sorted(stored) == sorted(sources)
        for uid, oid in stored.items():
            copy = dcmread(DicomBytesIO(server.file_bytes(oid)))
            check(sources[uid], copy)
            assert copy.PatientID == pseudonym("PAT-9")


def test_without_its_key_nothing_leaves_and_burned_in_text_is_never_sent(  # type: ignore[no-untyped-def]
    agent_factory, tmp_path: Path
) -> None:
    salt, out = tmp_path / "salt", tmp_path / "research"  # the salt file is not there yet
    dest = {"kind": "folder", "name": "research", "path": str(out),
            "deidentify": {"salt_file": str(salt)}}  # fmt: skip
    agent = agent_factory(forward={"destinations": [dest], "retry": {"initial_s": 0.2, "max_s": 1}})
    agent.start()
    files = write_ct_series(tmp_path / "s", 3)
    burned = dcmread(files[1])
    burned.BurnedInAnnotation = "YES"
    burned.save_as(files[1], enforce_file_format=True)
    storescu(agent.port, files)
    agent.wait_for(
        "SELECT attempts, last_error FROM deliveries WHERE state = 'queued'",
        lambda rows: len(rows) == 3 and rows[0]["attempts"] >= 2
        and "salt_file" in rows[0]["last_error"], 60,
    )  # fmt: skip
    assert not list(out.rglob("*.dcm"))
    salt.write_bytes(KEY)
    rows = agent.wait_for(
        "SELECT state, last_error FROM deliveries ORDER BY instance_id",
        lambda rows: [r["state"] for r in rows].count("delivered") == 2
        and "quarantined" in [r["state"] for r in rows], 60,
    )  # fmt: skip
    assert any("BurnedInAnnotation" in (r["last_error"] or "") for r in rows)
    assert len(list(out.rglob("*.dcm"))) == 2
