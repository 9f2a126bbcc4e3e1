"""The building blocks every config section shares: strict models and checked scalars."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash


def repeated(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be between 1 and 65535")
    return value


def _ae_title(value: str) -> str:
    if not _AE_RE.match(value) or not value.strip():
        raise ValueError("must be 1 to 16 printable ASCII characters, not all spaces, no backslash")
    return value.strip()


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9.-]{1,253}$", value):
            raise ValueError("must be an IP address or a host name") from None
    return value


Port = Annotated[int, AfterValidator(_port)]
AETitle = Annotated[str, AfterValidator(_ae_title)]
Host = Annotated[str, AfterValidator(_host)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
