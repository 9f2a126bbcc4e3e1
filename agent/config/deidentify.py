"""The ``deidentify`` setting an image destination may carry: the PS3.15 profile, the
attributes kept on purpose, and the salt file whose key makes the pseudonyms."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydicom.datadict import tag_for_keyword

from agent.config.fields import Strict

MIN_SALT_BYTES = 16  # an HMAC key shorter than this is guessable


class DeidentifyConfig(Strict):
    """PS3.15 Basic Application Level Confidentiality Profile, with keyed pseudonyms."""

    profile: Literal["basic"] = "basic"
    keep: list[str] = Field(default=[], max_length=256)  # DICOM keywords left as they are
    salt_file: Path  # the HMAC key; keep it secret and keep it: pseudonyms change with it

    @field_validator("keep")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        unknown = [k for k in value if tag_for_keyword(k) is None]
        if unknown:
            raise ValueError(f"not DICOM keywords: {', '.join(unknown)}")
        if protected := sorted(set(value) & NEVER_KEPT):
            raise ValueError(
                f"cannot be kept, they are replaced by pseudonyms: {', '.join(protected)}"
            )
        return value


# The pseudonym and the hashed UIDs are the point of the profile here: never kept as they are.
NEVER_KEPT = frozenset({"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})


class SaltError(Exception):
    pass


def read_salt(path: Path) -> bytes:
    """The salt file's bytes (the HMAC key); SaltError says why it cannot be used."""
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise SaltError(f"cannot read: {exc.strerror or exc}") from exc
    key = key.strip()
    if len(key) < MIN_SALT_BYTES:
        raise SaltError(f"holds {len(key)} bytes; a key needs at least {MIN_SALT_BYTES}")
    return key
