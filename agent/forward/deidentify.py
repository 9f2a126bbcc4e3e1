"""De-identified export: the DICOM PS3.15 Basic Application Level Confidentiality Profile,
applied by dicom-anonymizer from its copy of the standard's Table E.1-1 (edition 2026c).

What the agent adds on top of the library's actions:
- the Patient ID becomes a keyed pseudonym, ``HMAC-SHA256(salt, PatientID)`` (20 hex digits);
- every UID the profile replaces (U), at any depth, becomes ``2.25.<HMAC as an integer>``;
  sequences the profile lets keep their references (X/Z/U*) are kept with those UIDs replaced
  and the profile applied to each of their items.
  The same patient or UID maps to the same pseudonym in every series, across restarts and on
  every agent that shares the salt file, so studies can be linked without identities;
- attributes named in ``keep`` are left as they are; private attributes are removed;
- an image with BurnedInAnnotation YES is not sent at all (its pixels may name the patient).
The spool file is never changed: the copy is written beside it and removed after the send.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dicomanonymizer import simpledicomanonymizer as sda
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from agent.config import DeidentifyConfig, SaltError, read_salt
from agent.forward.outcome import RetryLater

EDITION = "dicomfields_2026c"
Action = Callable[[Dataset, Any], None]


class DeidentifyError(Exception):
    """This object cannot be de-identified (it is quarantined, never sent as it is)."""


def _tags(*categories: str) -> set[tuple[int, int]]:
    table = dicom_anonymization_database_selector(EDITION)
    return {(t[0], t[1]) for c in categories for t in table[c] if len(t) == 2}


class Deidentifier:
    def __init__(self, cfg: DeidentifyConfig) -> None:
        self.cfg = cfg
        self._key: bytes | None = None
        self.uid_tags = _tags("U_TAGS")
        self.keep = {_tag(k) for k in cfg.keep}

    @property
    def key(self) -> bytes:
        """The HMAC key, read at first use; an unreadable salt file means nothing goes out
        (RetryLater at the sender), never an identifiable copy."""
        if self._key is None:
            try:
                self._key = read_salt(self.cfg.salt_file)
            except SaltError as exc:
                raise SaltError(f"deidentify.salt_file {self.cfg.salt_file}: {exc}") from exc
        return self._key

    def pseudonym(self, patient_id: str) -> str:
        return hmac.new(self.key, b"PatientID\0" + patient_id.encode(), hashlib.sha256).hexdigest()[
            :20
        ]

    def uid(self, uid: str) -> str:
        digest = hmac.new(self.key, b"UID\0" + uid.encode(), hashlib.sha256).digest()[:16]
        return f"2.25.{int.from_bytes(digest, 'big')}"  # PS3.5 B.2: a UUID-derived UID

    def copy(self, source: Path, target: Path) -> Path:
        """Write a de-identified copy of ``source`` at ``target``; DeidentifyError if it
        cannot be made (SaltError, from :attr:`key`, passes through)."""
        try:
            ds = dcmread(source)
        except Exception as exc:  # whatever the parser trips on, this object cannot go
            raise DeidentifyError(f"cannot read {source.name}: {exc}") from exc
        self.apply(ds)
        try:
            ds.save_as(target, enforce_file_format=True)
        except (OSError, ValueError, TypeError) as exc:
            target.unlink(missing_ok=True)
            raise DeidentifyError(f"cannot write the de-identified copy: {exc}") from exc
        return target

    def apply(self, ds: Dataset) -> None:
        """De-identify ``ds`` in place."""
        key = self.key  # before any change: no half-done copy on a bad salt file
        del key
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            raise DeidentifyError("BurnedInAnnotation is YES: its pixels may identify the patient")
        patient_id = str(ds.get("PatientID", ""))
        try:
            self._hash_uids(ds)
            sda.anonymize_dataset(ds, delete_private_tags=True, base_rules_gen=self._rules)
        except Exception as exc:  # a library failure on hostile data: quarantine, not crash
            raise DeidentifyError(f"the profile cannot be applied: {exc}") from exc
        ds.PatientID = self.pseudonym(patient_id)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = (
            f"DICOM PS3.15 Basic Application Confidentiality Profile ({EDITION.split('_')[1]}), "
            f"dicom-anonymizer {version('dicom-anonymizer')}; keyed pseudonyms"
        )[:64]
        ds.DeidentificationMethodCodeSequence = Sequence(
            [_code("113100", "Basic Application Confidentiality Profile")]
        )
        if "SOPInstanceUID" in ds and hasattr(ds, "file_meta"):
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    def _hash_uids(self, ds: Dataset) -> None:
        """Replace every UID the profile lists as U, in the data set and in every sequence."""

        def visit(dataset: Dataset, elem: Any) -> None:
            if (
                (elem.tag.group, elem.tag.element) in self.uid_tags
                and elem.tag not in self.keep
                and elem.VR == "UI"
            ):
                if elem.VM > 1:
                    elem.value = [self.uid(str(v)) for v in elem.value]
                elif elem.value:
                    elem.value = self.uid(str(elem.value))

        ds.walk(visit)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.uid(str(meta.MediaStorageSOPInstanceUID))

    def _rules(self) -> dict[Any, Action]:
        """The library's profile actions, with the UIDs already hashed (so kept here), the
        X/Z/U* sequences kept with their hashed references, and the site's ``keep``."""
        rules: dict[Any, Action] = sda.initialize_actions(EDITION)
        for tag in _tags("X_Z_U_STAR_TAGS"):
            rules[tag] = self._clean_items
        for tag in self.uid_tags | self.keep:
            rules[tag] = sda.keep
        rules[(0x0010, 0x0020)] = sda.keep  # PatientID: set to the pseudonym afterwards
        return rules

    def _clean_items(self, dataset: Dataset, tag: Any) -> None:
        """X/Z/U*: keep the sequence for its (hashed) references, and apply the profile to
        each of its items as to the data set itself."""
        elem = dataset.get(tag)
        if elem is None or elem.VR != "SQ":
            sda.delete_or_empty_or_replace_UID(dataset, tag)
            return
        for item in elem.value:
            sda.anonymize_dataset(item, delete_private_tags=True, base_rules_gen=self._rules)


def _tag(keyword: str) -> tuple[int, int]:
    tag = tag_for_keyword(keyword)
    assert tag is not None  # the config checked the keyword
    return tag >> 16, tag & 0xFFFF


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


@contextmanager
def private_copy(deid: Deidentifier | None, source: Path, scratch: Path) -> Iterator[Path]:
    """The file to send: ``source`` itself, or its de-identified copy (removed afterwards).
    An unreadable salt file waits (RetryLater); DeidentifyError means quarantine."""
    if deid is None:
        yield source
        return
    scratch.mkdir(parents=True, exist_ok=True)
    target = scratch / f"{uuid.uuid4().hex}.dcm"
    try:
        try:
            deid.copy(source, target)
        except SaltError as exc:
            raise RetryLater(str(exc)) from exc
        yield target
    finally:
        target.unlink(missing_ok=True)


def make_deidentifier(cfg: DeidentifyConfig | None) -> Deidentifier | None:
    return Deidentifier(cfg) if cfg is not None else None
