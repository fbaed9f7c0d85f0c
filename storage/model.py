"""Plain values exchanged with callers: references, object info, reports."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from storage.errors import InvalidReference

OBJECT_ID_BYTES = 16
_REF_RE = re.compile(r"^([0-9a-f]{32})(?::([0-9]{1,15}))?$")


def check_object_id(value: str) -> str:
    """Refuse anything but 32 lowercase hex digits: ids end up in backend keys."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{32}", value):
        raise InvalidReference(f"invalid object id {value!r:.80}: expected 32 hex digits")
    return value


@dataclass(frozen=True)
class ObjectRef:
    """What a caller keeps to find an object again: ``str(ref)`` is ``<id>:<size>``."""

    id: str
    size: int

    def __post_init__(self) -> None:
        check_object_id(self.id)
        if not isinstance(self.size, int) or self.size < 0:
            raise InvalidReference(f"invalid object size {self.size!r}")

    def __str__(self) -> str:
        return f"{self.id}:{self.size}"

    @classmethod
    def parse(cls, text: str) -> ObjectRef:
        """Parse ``<id>:<size>`` exactly as ``str()`` writes it; anything else is refused."""
        if not isinstance(text, str):
            raise InvalidReference(f"object reference must be text, got {type(text).__name__}")
        m = _REF_RE.match(text.strip())
        if m is None or m.group(2) is None:
            raise InvalidReference(
                f"invalid object reference {text!r:.80}: expected <32 hex>:<size>"
            )
        return cls(m.group(1), int(m.group(2)))


def ref_id(ref: ObjectRef | str) -> str:
    """The object id of a reference given as ObjectRef, ``<id>:<size>`` or a bare id."""
    if isinstance(ref, ObjectRef):
        return ref.id
    if isinstance(ref, str):
        m = _REF_RE.match(ref.strip())
        if m is not None:
            return m.group(1)
    raise InvalidReference(f"invalid object reference {ref!r:.80}")


@dataclass(frozen=True)
class ObjectInfo:
    id: str
    size: int
    created: float
    segments: int
    k: int
    n: int

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.id, self.size)


@dataclass(frozen=True)
class BackendHealth:
    name: str
    kind: str
    location: str
    reachable: bool
    free_bytes: int | None
    errors: int
    detail: str = ""
    writable: bool = True  # False: reachable, but refuses writes (full, locked)
    flags: str = ""  # 0-db: the namespace's mode and flags from NSINFO


@dataclass
class ShareProblem:
    object_id: str
    segment: int
    index: int
    backend: str
    reason: str


@dataclass
class VerifyReport:
    objects_checked: int = 0
    shares_checked: int = 0
    problems: list[ShareProblem] = field(default_factory=list)
    degraded: dict[str, int] = field(default_factory=dict)  # id -> fewest good shares/segment
    unreadable: list[str] = field(default_factory=list)  # some segment below k
    orphans: int = 0
    orphans_removed: int = 0
    unreachable_backends: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not (self.problems or self.degraded or self.unreadable or self.orphans
                    or self.unreachable_backends)


@dataclass
class RepairReport:
    objects_checked: int = 0
    segments_repaired: int = 0
    shares_rebuilt: int = 0
    unrecoverable: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class DrainProgress:
    """Where a drain of one backend stands (``Store.drain``): each step and the end."""

    backend: str
    total: int  # shares on it when its drain first began (kept across resumes)
    left: int  # shares the catalogue still places on it
    moved: int = 0  # shares this run placed elsewhere
    bytes_written: int = 0  # share bytes this run wrote
    seconds: float = 0.0
    resumed: bool = False  # an earlier, interrupted drain had begun
    done: bool = False
    failures: list[str] = field(default_factory=list)
