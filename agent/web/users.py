"""Web console accounts: ``<storage>/web-users.json``, argon2id hashes, mode 0600.

The file is a JSON object ``{name: {"role": ..., "hash": ..., "created": epoch}}``. The CLI
(``scanner-agent web-user``) writes it under an exclusive ``flock`` and replaces it
atomically; the running console reads it again whenever it changed, so a removed account
loses its sessions at its next request.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from agent.errors import AgentError

Role = Literal["technologist", "radiologist", "admin"]
ROLES: tuple[Role, ...] = ("technologist", "radiologist", "admin")
# Which commands each role may send; radiologists look, they do not decide at the scanner.
ALLOWED: dict[Role, frozenset[str]] = {
    "technologist": frozenset({"release", "hold", "repeat"}),
    "radiologist": frozenset(),
    "admin": frozenset({"release", "hold", "repeat"}),
}
USERS_FILE = "web-users.json"
NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024  # argon2 reads it all; a megabyte password is an attack


class UserError(AgentError):
    """A bad name, role or password, or a name that exists (add) or does not (remove)."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    hash: str
    created: float

    def may(self, action: str) -> bool:
        return action in ALLOWED[self.role]


class UserStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._hasher = PasswordHasher()  # argon2id with the library's current parameters
        self._dummy = self._hasher.hash("not a password of anyone")
        self._cache: tuple[tuple[int, int], dict[str, User]] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_storage(cls, storage: Path) -> UserStore:
        return cls(storage / USERS_FILE)

    # -- reading ---------------------------------------------------------------------------

    def users(self) -> dict[str, User]:
        """Every account; read again only when the file changed (size or mtime)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, _parse(self.path.read_text("utf-8"), self.path))
            return self._cache[1]

    def get(self, name: str) -> User | None:
        return self.users().get(name)

    def verify(self, name: str, password: str) -> User | None:
        """The user when the password is theirs. An unknown name costs one hash as well, so
        timing does not tell which names exist."""
        user = self.get(name) if NAME_RE.fullmatch(name) else None
        if len(password) > MAX_PASSWORD:
            return None
        try:
            self._hasher.verify(user.hash if user else self._dummy, password)
        except (VerificationError, InvalidHashError):
            return None
        return user

    # -- writing (the CLI) -----------------------------------------------------------------

    def add(self, name: str, role: str, password: str) -> User:
        check_name(name)
        if role not in ROLES:
            raise UserError(f"role {role!r}: must be one of {', '.join(ROLES)}")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise UserError(f"password: must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        user = User(name, role, self._hasher.hash(password), time.time())
        with self._editing() as users:
            if name in users:
                raise UserError(f"web user {name!r} exists; remove it first to change it")
            users[name] = user
        return user

    def remove(self, name: str) -> None:
        check_name(name)
        with self._editing() as users:
            if users.pop(name, None) is None:
                raise UserError(f"no web user {name!r}")

    @contextmanager
    def _editing(self) -> Iterator[dict[str, User]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(USERS_FILE + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users = dict(self.users())
            yield users
            _write(self.path, users)


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise UserError(f"name {name[:80]!r}: must be 1 to 64 of A-Z a-z 0-9 _ . @ -")


def _parse(text: str, path: Path) -> dict[str, User]:
    try:
        doc = json.loads(text)
        return {
            name: User(name, entry["role"], str(entry["hash"]), float(entry["created"]))
            for name, entry in doc.items()
            if NAME_RE.fullmatch(name) and entry.get("role") in ROLES
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UserError(f"{path}: not a web user file: {exc}") from exc


def _write(path: Path, users: dict[str, User]) -> None:
    doc: dict[str, Any] = {
        u.name: {"role": u.role, "hash": u.hash, "created": u.created} for u in users.values()
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
