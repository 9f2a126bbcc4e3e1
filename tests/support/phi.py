"""Data sets that carry every attribute of the PS3.15 Basic Application Level Confidentiality
Profile (Table E.1-1, as dicom-anonymizer ships it) with an identifying value, so a test can
check each one against the profile rather than a hand-picked few."""

from __future__ import annotations

from typing import Any

from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

EDITION = "dicomfields_2026c"
MARK = "PHI"  # every identifying text value carries it
UID_ROOT = "1.2.826.0.1.3680043.9.7777."


def profile_tags() -> dict[tuple[int, int], str]:
    """Every single attribute of the profile (not the group ranges) and its action."""
    table = dicom_anonymization_database_selector(EDITION)
    actions = {}
    for category, tags in table.items():
        if category != "ALL_TAGS":
            actions.update({(t[0], t[1]): category for t in tags if len(t) == 2})
    return actions


def value_for(vr: str, n: int) -> Any:
    text = {"PN": f"{MARK}^Person{n}", "DA": "19800102", "TM": "101112", "DT": "19800102101112",
            "UI": f"{UID_ROOT}{n}", "AE": f"{MARK}AE{n}", "AS": "042Y", "CS": MARK, "DS": "7.5",
            "IS": "42", "UR": f"http://{MARK.lower()}.example/{n}"}  # fmt: skip
    if vr in text:
        return text[vr]
    if vr in ("LO", "SH", "LT", "ST", "UT", "UC"):
        return f"{MARK}-{n}"
    if vr in ("FL", "FD"):
        return 1.5
    if vr in ("SS", "US", "SL", "UL", "SV", "UV"):
        return 7
    if vr == "AT":
        return 0x00100010
    if vr == "SQ":
        item = Dataset()
        item.PatientName = f"{MARK}^Nested{n}"
        item.ReferencedSOPInstanceUID = f"{UID_ROOT}{n}.1"
        return Sequence([item])
    return f"{MARK}!".encode()  # OB, OW, UN and the other binary VRs


def add_every_profile_attribute(ds: Dataset) -> list[tuple[int, int]]:
    """Give ``ds`` each profile attribute it lacks; returns the tags added."""
    added = []
    for n, tag in enumerate(sorted(profile_tags())):
        group, elem = tag
        if (
            group in (0x0000, 0x0002)
            or (group << 16 | elem) in ds
            or not keyword_for_tag(group << 16 | elem)
        ):
            continue
        try:
            vr = dictionary_VR(group << 16 | elem).split(" or ")[0]
        except KeyError:
            continue
        ds.add_new(group << 16 | elem, vr, value_for(vr, n))
        added.append(tag)
    ds.add_new(0x00091001, "LO", f"{MARK}-private")  # private attributes go too
    ds.add_new(0x00090010, "LO", "SOME VENDOR")
    return added
