"""THREAD=REFERENCES (RFC 5256 §2.2): messages linked by Message-ID, References and
In-Reply-To into trees, then grouped by base subject.

Pure computation over the messages' kept keys (``core.mail.sortkeys``: the
references are already extracted there, at most ``MAX_REFS`` a message), run
in a worker thread by the THREAD command; linear in the messages and their
references.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

MAX_DEPTH = 200  # deeper chains are not extended: bounds each loop check (hostile mail)


class Node:
    """A container: a message (``num`` set) or a dummy standing for a missing one.

    A plain class with slots and a one-argument constructor: 100,000 or more
    are made per THREAD of a large mailbox, and a dataclass's generated
    constructor with eight defaults cost a third more."""

    __slots__ = ("children", "date", "key", "num", "parent", "reply", "seq", "subject")

    def __init__(self, key: str, children: list[Node] | None = None) -> None:
        self.key = key
        self.num: int | None = None
        self.date = 0.0
        self.seq = 0
        self.subject = ""
        self.reply = False
        self.parent: Node | None = None
        self.children: list[Node] = [] if children is None else children

    def has_above(self, other: Node) -> bool:
        """Whether ``other`` is this container's ancestor, or it has ``MAX_DEPTH``
        ancestors already (a link under it is refused either way).

        A walk up, without a set: the links never form a loop (``_link`` refuses
        them), and the depth bound ends the walk on any chain."""
        node, depth = self.parent, 0
        while node is not None:
            if depth >= MAX_DEPTH or node is other:
                return True
            depth += 1
            node = node.parent
        return False


class Message(NamedTuple):  # a tuple: 100,000 of them are made per THREAD
    num: int  # sequence number or uid, as the client asked
    seq: int
    date: float
    message_id: str
    parents: str  # References' ids (else In-Reply-To's first), space-separated
    subject: str  # base subject (RFC 5256 §2.1)
    reply: bool  # the subject had a reply/forward marker


def _unlink(node: Node) -> None:
    if node.parent is not None:
        node.parent.children.remove(node)
        node.parent = None


def _link(parent: Node, child: Node) -> None:
    """Make ``child`` a child of ``parent`` unless that would create a loop."""
    if child is parent or child.parent is not None:
        return  # already linked: the existing link stays (step 1.B)
    if parent.has_above(child):
        return
    child.parent = parent
    parent.children.append(child)


Row = tuple[int, int, float, str, str, str, bool]  # a ``Message``'s fields, in order


def thread(messages: Iterable[Row]) -> list[Node]:
    """The thread roots of ``messages`` (in their order: sequence order).

    ``messages``: ``Message`` tuples, or any tuples of their fields (THREAD
    zips its key columns: no object per message before the containers).
    The returned trees hold no links upward (``parent`` is cleared at the
    end): with them, every container was part of a reference cycle, left to
    the cyclic collector, whose pass over 100,000 of them cost a sixth of a
    THREAD. Without them, the trees are freed as soon as they are rendered."""
    table: dict[str, Node] = {}
    get = table.get
    for n, (num, seq, date, key, parents, subject, reply) in enumerate(messages):
        node = get(key) if key else None
        if node is None or node.num is not None:  # §2.2 step 1.A: missing or duplicate
            if node is not None or not key:
                key = f"\0unique{n}"
            node = table[key] = Node(key)
        node.num, node.date, node.seq, node.subject, node.reply = num, date, seq, subject, reply
        if not parents:
            continue
        refs = parents.split()
        if key in refs:  # a message naming itself (rare: not a comprehension each)
            refs = [r for r in refs if r != key]
            if not refs:
                continue
        above = get(refs[0])
        if above is None:
            above = table[refs[0]] = Node(refs[0])
        for ref in refs[1:]:  # step 1.B: each reference the child of the one before
            below = get(ref)
            if below is None:
                below = table[ref] = Node(ref)
            if below.parent is None:  # an existing link stays (step 1.B)
                _link(above, below)
            above = below
        # step 1.C: the last reference is the parent, replacing a guessed one
        if node.parent is not None:
            _unlink(node)
        _link(above, node)
    roots = _prune([node for node in table.values() if node.parent is None], top=True)
    roots.sort(key=_first)
    roots = _group(roots)
    roots.sort(key=_first)
    for node in table.values():
        node.parent = None
    return roots


def _prune(nodes: list[Node], top: bool) -> list[Node]:
    """Step 4: drop empty dummies; a dummy's children take its place, except a root
    dummy with several children, which stays to hold them together. Step 5 on
    the way back up: each kept list of children sorted (theirs already are)."""
    out: list[Node] = []
    for node in nodes:
        if node.children:
            node.children = kept = _prune(node.children, top=False)
            for c in kept:
                c.parent = node
            kept.sort(key=_first)
        if node.num is not None:
            out.append(node)
        elif not node.children:
            continue
        elif top and len(node.children) > 1:
            out.append(node)
        else:
            for c in node.children:
                c.parent = node.parent
            out.extend(node.children)
    return out


def _first(node: Node) -> tuple[float, int]:
    """The sort date: a message's own, a dummy's first child's (§2.2 step 5)."""
    while node.num is None and node.children:
        node = node.children[0]
    return (node.date, node.seq)


def _sort(node: Node) -> None:
    for c in node.children:
        _sort(c)
    node.children.sort(key=_first)


def _subject_of(node: Node) -> tuple[str, bool]:
    if node.num is None and node.children:
        return node.children[0].subject, node.children[0].reply
    return node.subject, node.reply


def _group(roots: list[Node]) -> list[Node]:
    """Step 6: roots with the same base subject become one thread."""
    table: dict[str, Node] = {}
    for r in roots:
        subject, reply = _subject_of(r)
        if not subject:
            continue
        old = table.get(subject)
        if old is None or (r.num is None and old.num is not None) or (
                old.num is not None and old.reply and not reply and r.num is not None):
            table[subject] = r
    out: list[Node] = []
    at: dict[int, int] = {}  # id of a root in ``out`` -> its position (not a scan each)
    consumed: set[int] = set()
    changed: list[Node] = []  # roots given children here: sorted again at the end
    for r in roots:
        if id(r) in consumed:
            continue
        subject, reply = _subject_of(r)
        other = table.get(subject) if subject else None
        if other is None or other is r:
            at[id(r)] = len(out)
            out.append(r)
            continue
        if other.num is None and r.num is None:
            for c in r.children:
                c.parent = other
            other.children += r.children
            changed.append(other)
        elif other.num is None or (not other.reply and reply):
            r.parent = other
            other.children.append(r)
            changed.append(other)
        else:  # neither is a dummy and they are siblings: a new dummy holds both
            dummy = Node(f"\0subject{id(r)}", [other, r])
            other.parent = r.parent = dummy
            table[subject] = dummy
            pos = at.pop(id(other), -1)
            if pos >= 0:
                out[pos] = dummy
            else:
                out.append(dummy)
                consumed.add(id(other))
            at[id(dummy)] = pos if pos >= 0 else len(out) - 1
            changed.append(dummy)
    for node in changed:  # the others' trees are as ``_prune`` sorted them
        _sort(node)
    return out


def render(roots: list[Node]) -> bytes:
    """RFC 5256 §4 thread-list: ``(3 2)(1)``, ``(1 (2 4)(3))``, ``((1)(2))``."""
    return b"".join(b"(" + _members(r) + b")" for r in roots)


def _members(node: Node) -> bytes:
    parts: list[bytes] = []
    while True:
        if node.num is not None:
            parts.append(b"%d" % node.num)
        if len(node.children) == 1:
            node = node.children[0]
            continue
        if node.children:
            parts.append(b"".join(b"(" + _members(c) + b")" for c in node.children))
        break
    return b" ".join(parts)

