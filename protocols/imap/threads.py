"""THREAD=REFERENCES (RFC 5256 §2.2): messages linked by Message-ID, References and
In-Reply-To into trees, then grouped by base subject.

Pure computation over the messages' kept keys (``core.mail.sortkeys``: the
references are already extracted there, at most ``MAX_REFS`` a message), run
in a worker thread by the THREAD command; linear in the messages and their
references.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

MAX_DEPTH = 200  # deeper chains are not extended: bounds each loop check (hostile mail)


@dataclass(eq=False, slots=True)
class Node:
    """A container: a message (``num`` set) or a dummy standing for a missing one."""

    key: str
    num: int | None = None
    date: float = 0.0
    seq: int = 0
    subject: str = ""
    reply: bool = False
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)

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


def thread(messages: list[Message]) -> list[Node]:
    table: dict[str, Node] = {}

    def container(key: str) -> Node:
        node = table.get(key)
        if node is None:
            node = table[key] = Node(key)
        return node

    for n, m in enumerate(messages):
        key = m.message_id
        if not key or (key in table and table[key].num is not None):
            key = f"\0unique{n}"  # missing or duplicate Message-ID (§2.2 step 1.A)
        node = container(key)
        node.num, node.date, node.seq = m.num, m.date, m.seq
        node.subject, node.reply = m.subject, m.reply
        refs = [r for r in m.parents.split() if r != key]
        for a, b in itertools.pairwise(refs):  # step 1.B
            _link(container(a), container(b))
        if refs:  # step 1.C: the last reference is the parent, replacing a guessed one
            parent = container(refs[-1])
            _unlink(node)
            _link(parent, node)
    roots = [node for node in table.values() if node.parent is None]
    roots = _prune(roots, top=True)
    for r in roots:
        _sort(r)
    roots.sort(key=_first)
    roots = _group(roots)
    roots.sort(key=_first)
    return roots


def _prune(nodes: list[Node], top: bool) -> list[Node]:
    """Step 4: drop empty dummies; a dummy's children take its place, except a root
    dummy with several children, which stays to hold them together."""
    out: list[Node] = []
    for node in nodes:
        node.children = _prune(node.children, top=False)
        for c in node.children:
            c.parent = node
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
    consumed: set[int] = set()
    for r in roots:
        if id(r) in consumed:
            continue
        subject, reply = _subject_of(r)
        other = table.get(subject) if subject else None
        if other is None or other is r:
            out.append(r)
            continue
        if other.num is None and r.num is None:
            for c in r.children:
                c.parent = other
            other.children += r.children
        elif other.num is None or (not other.reply and reply):
            r.parent = other
            other.children.append(r)
        else:  # neither is a dummy and they are siblings: a new dummy holds both
            dummy = Node(f"\0subject{id(r)}", children=[other, r])
            pos = out.index(other) if other in out else -1
            other.parent = r.parent = dummy
            table[subject] = dummy
            if pos >= 0:
                out[pos] = dummy
            else:
                out.append(dummy)
                consumed.add(id(other))
    for r in out:
        _sort(r)
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

