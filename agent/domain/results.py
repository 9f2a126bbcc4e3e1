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


def _describable(ds: Dataset) -> bool:
    """Whether highdicom can describe ``ds`` in the image library (TID 1602 needs the matrix,
    and for cross-sectional images the geometry); an image it cannot is left out of the
    library, not out of the report."""
    try:
        hd.sr.ImageLibraryEntryDescriptors(ds)
    except (AttributeError, KeyError, ValueError, TypeError, IndexError):
        return False
    return True


def measurement_report(
    ctx: Dataset,
    stubs: Sequence[Dataset],
    library: Sequence[Dataset],
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
    Evaluations, ``stubs`` (:func:`evidence`) as evidence, and an image library of ``library``
    (the source headers, or the stubs when only those are known)."""
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer(role)),
        procedure_reported=list(procedures), imaging_measurements=list(groups) or None,
        referenced_images=[ds for ds in library if _describable(ds)] or None,
    )  # fmt: skip
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
