"""What every result object the agent emits shares: one private coding scheme, one copy of
the source's patient and study attributes, one observer, and the Key Object Selection.

Result objects (the QC and triage TID 1500 Measurement Reports, the key-image KOS, the
rejection KOS) are new instances in new series of the source study. They take their patient
and study attributes from :func:`study_context` of one sanitised source header, and nowhere
else, so the PACS (and ``dcentvfy``) sees the same patient and study in the images and in
every result. Codes come from DCM, SNOMED CT, RadLex, LOINC and UCUM wherever one fits;
the rest are in the private scheme :data:`SCHEME`, declared in each object's
CodingSchemeIdentificationSequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from agent.domain.headers import sanitised_headers

SCHEME = "99SCANAGT"  # the one private coding scheme designator of every result object
SCHEME_NAME = "scanner-agent private codes"
MANUFACTURER = "scanner-agent"
UNITLESS = hd.sr.CodedConcept("1", "UCUM", "no units")
RATIO = hd.sr.CodedConcept("{ratio}", "UCUM", "ratio")
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
QUALITATIVE = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
OF_INTEREST = hd.sr.CodedConcept("113000", "DCM", "Of Interest")
REJECTED_FOR_QUALITY = hd.sr.CodedConcept("113001", "DCM", "Rejected for Quality Reasons")
PROCEDURES = {  # SNOMED CT imaging procedures, by Modality
    "CT": hd.sr.CodedConcept("77477000", "SCT", "Computed tomography"),
    "MR": hd.sr.CodedConcept("113091000", "SCT", "Magnetic resonance imaging"),
    "DX": hd.sr.CodedConcept("168537006", "SCT", "Plain radiography"),
    "CR": hd.sr.CodedConcept("168537006", "SCT", "Plain radiography"),
}
IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")
_MODALITY = hd.sr.CodedConcept("121139", "DCM", "Modality")
_FRAME_OF_REFERENCE = hd.sr.CodedConcept("112227", "DCM", "Frame of Reference UID")
_SOURCE = hd.sr.CodedConcept("260753009", "SCT", "Source")
_LIBRARY = hd.sr.CodedConcept("111028", "DCM", "Image Library")
_LIBRARY_GROUP = hd.sr.CodedConcept("126200", "DCM", "Image Library Group")
MODALITIES = {"CT": "Computed Tomography", "MR": "Magnetic Resonance", "CR": "Computed Radiography",
              "DX": "Digital Radiography", "MG": "Mammography", "US": "Ultrasound",
              "PT": "Positron emission tomography", "NM": "Nuclear Medicine",
              "XA": "X-Ray Angiography", "RF": "Radio Fluoroscopy"}  # fmt: skip

# Patient, General Study and Patient Study attributes a result copies from its source; the
# first nine are Type 2 in every result IOD, so they are written empty when the source lacks them.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")  # fmt: skip
_OPTIONAL = ("SpecificCharacterSet", "IssuerOfPatientID", "PatientBirthTime",
             "OtherPatientIDsSequence", "EthnicGroup", "PatientComments", "PatientIdentityRemoved",
             "DeidentificationMethod", "StudyDescription", "IssuerOfAccessionNumberSequence",
             "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "PatientAge", "PatientSize",
             "PatientWeight", "AdmittingDiagnosesDescription")  # fmt: skip


def private(value: str, meaning: str) -> hd.sr.CodedConcept:
    """A concept of the private scheme; values over 16 characters become LongCodeValue."""
    return hd.sr.CodedConcept(value[:64], SCHEME, meaning[:64] or value[:64])


def procedure(modality: str) -> hd.sr.CodedConcept:
    return PROCEDURES.get(modality, IMAGING_PROCEDURE)


def study_context(header: Dataset, what: str) -> Dataset:
    """The patient and study attributes every result object copies from ``header`` (any
    image of the source series), repaired where highdicom would refuse them."""
    (clean,) = sanitised_headers([header], what)
    ctx = Dataset()
    ctx.StudyInstanceUID = clean.StudyInstanceUID
    for keyword in _TYPE2:
        value = clean.get(keyword)
        setattr(ctx, keyword, value if value not in ("", None) else None)
    for keyword in _OPTIONAL:
        if keyword in clean and not clean[keyword].is_empty:
            ctx[keyword] = clean[keyword]
    return ctx


def evidence(ctx: Dataset, header: Dataset, instances: Sequence[tuple[str, str]]) -> list[Dataset]:
    """One evidence stub per ``(SOPClassUID, SOPInstanceUID)`` of the source series: the
    context, the series and the instance, which is all highdicom reads from evidence."""
    out = []
    for sop_class, sop_instance in instances:
        ds = Dataset()
        ds.update(ctx)
        ds.SeriesInstanceUID = header.SeriesInstanceUID
        ds.Modality = header.get("Modality", "") or "OT"
        if "FrameOfReferenceUID" in header:
            ds.FrameOfReferenceUID = header.FrameOfReferenceUID
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
        out.append(ds)
    return out


def adopt(result: Dataset, ctx: Dataset) -> Dataset:
    """Give ``result`` exactly the context's patient and study attributes, and declare the
    private coding scheme; every result object passes through here last."""
    for elem in ctx:
        result[elem.tag] = elem
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    result.CodingSchemeIdentificationSequence = DicomSequence([scheme])
    return result


def observer(role: str) -> hd.sr.ObserverContext:
    """The agent as the device observer of a result (``role``: "QC", "triage")."""
    uid = generate_uid(entropy_srcs=["scanner-agent", "observer"])
    return hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uid, name=f"scanner-agent {role}", manufacturer_name=MANUFACTURER,
            model_name=f"scanner-agent {role}",
        ),
    )  # fmt: skip


def key_object_selection(
    title: hd.sr.CodedConcept,
    ctx: Dataset,
    refs: Sequence[Dataset],
    description: str,
    *,
    series_instance_uid: str,
    series_number: int,
    series_description: str,
    sop_instance_uid: str | None = None,
) -> hd.ko.KeyObjectSelectionDocument:
    """A KOS titled ``title`` (CID 7010) that selects ``refs`` (sanitised headers of one
    series; those with Rows and Columns become IMAGE items), in a new series of the study."""
    if not refs:
        raise ValueError("a key object selection needs at least one instance")
    content = hd.ko.KeyObjectSelection(
        document_title=title, referenced_objects=list(refs),
        observer_device_context=observer("key objects"), description=description[:1024],
    )  # fmt: skip
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=list(refs), content=content, series_instance_uid=series_instance_uid,
        series_number=series_number, sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1, manufacturer=MANUFACTURER,
    )  # fmt: skip
    kos.SeriesDescription = series_description[:64]
    adopt(kos, ctx)
    return kos


def text(name: hd.sr.CodedConcept, value: str, rel: str = "CONTAINS") -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value[:1024] or "-", relationship_type=rel)


def with_texts(
    group: hd.sr.MeasurementsAndQualitativeEvaluations, items: Sequence[hd.sr.ContentItem]
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """A TID 1501 group with TEXT qualitative evaluations beside its coded ones."""
    group[0].ContentSequence.extend(items)
    return group


def _modality(code: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code, "DCM", MODALITIES[code]) if code in MODALITIES else (
        hd.sr.CodedConcept("OT", "DCM", "Other"))  # fmt: skip


def _entry(ds: Dataset) -> hd.sr.ImageContentItem:
    return hd.sr.ImageContentItem(
        name=_SOURCE, referenced_sop_class_uid=ds.SOPClassUID,
        referenced_sop_instance_uid=ds.SOPInstanceUID, relationship_type="CONTAINS",
    )  # fmt: skip


def image_library(headers: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    """TID 1600: one Image Library Group of the series' images, its shared descriptors
    (Modality, Frame of Reference) stated once for the group. Per-image descriptors (TID
    1602, optional) are left out: highdicom's cost 20 s for a 300-slice series."""
    first = headers[0]
    shared: list[hd.sr.ContentItem] = [hd.sr.CodeContentItem(
        name=_MODALITY, value=_modality(str(first.get("Modality", ""))),
        relationship_type="HAS ACQ CONTEXT")]  # fmt: skip
    if "FrameOfReferenceUID" in first:
        shared.append(hd.sr.UIDRefContentItem(
            name=_FRAME_OF_REFERENCE, value=first.FrameOfReferenceUID,
            relationship_type="HAS ACQ CONTEXT"))  # fmt: skip
    entries = [_entry(ds) for ds in headers]
    group = hd.sr.ContainerContentItem(name=_LIBRARY_GROUP, relationship_type="CONTAINS")
    group.ContentSequence = hd.sr.ContentSequence([*shared, *entries])
    library = hd.sr.ContainerContentItem(name=_LIBRARY, relationship_type="CONTAINS")
    library.ContentSequence = hd.sr.ContentSequence([group])
    return library


def measurement_report(
    ctx: Dataset,
    stubs: Sequence[Dataset],
    groups: Sequence[hd.sr.MeasurementsAndQualitativeEvaluations],
    evaluations: Sequence[hd.sr.ContentItem],
    *,
    role: str,
    procedures: Sequence[hd.sr.CodedConcept],
    series_instance_uid: str,
    series_number: int,
    series_description: str,
) -> hd.sr.ComprehensiveSR:
    """A TID 1500 Measurement Report in a Comprehensive SR: ``groups`` under Imaging
    Measurements, ``evaluations`` (CODE and TEXT items) under the root's Qualitative
    Evaluations, and ``stubs`` (:func:`evidence`, one per source image) as evidence and in the
    image library."""
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer(role)),
        procedure_reported=list(procedures), imaging_measurements=list(groups) or None,
    )  # fmt: skip
    items = list(report[0].ContentSequence)  # TID 1500 order: the library before the groups
    at = next(
        i for i, item in enumerate(items) if item.ConceptNameCodeSequence[0].CodeValue == "126010"
    )
    report[0].ContentSequence = hd.sr.ContentSequence(
        [*items[:at], image_library(stubs), *items[at:]]
    )
    if evaluations:
        box = hd.sr.ContainerContentItem(name=QUALITATIVE, relationship_type="CONTAINS")
        box.ContentSequence = hd.sr.ContentSequence(list(evaluations))
        report[0].ContentSequence.append(box)
    sr = hd.sr.ComprehensiveSR(
        evidence=stubs, content=report[0], series_instance_uid=series_instance_uid,
        series_number=series_number, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=series_description,
    )  # fmt: skip
    adopt(sr, ctx)
    return sr
