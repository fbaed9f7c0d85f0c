"""Reading IMAP commands off the wire (RFC 3501 §9 grammar, RFC 7888 literals).

Two layers. ``CommandReader`` reads one command from the stream: a line, and
while the line ends in a literal announcement ``{n}`` / ``{n+}`` / ``~{n}``,
the literal and the next line, each within its limit. The APPEND message
literal is the exception: it is not read but handed to the APPEND handler as
a ``MessageLiteral`` that streams it into the store. ``tokenize`` then turns the
pieces into tokens: ``Atom`` (unquoted; brackets kept whole so
``BODY[HEADER.FIELDS (A B)]<0.10>`` is one atom), ``String`` (quoted or literal)
and nested lists. Command handlers check their arguments from those tokens.

Every failure is a ``ParseError`` carrying the tag when known, so the session
answers BAD and carries on; only a stream that cannot be resynchronised (an
oversized non-synchronising literal) ends the connection.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Union

MAX_DEPTH = 32
MAX_TOKENS = 100_000
_LITERAL_AT_END = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\r?\n$")
_TAG = re.compile(rb"^[\x21-\x7e]+$")
_ATOM_STOP = frozenset(b' (){"\r\n')


class Atom(str):
    """An unquoted token (atom, number, flag, sequence set, fetch attribute)."""

    __slots__ = ()


class String(str):
    """A quoted string or a literal, decoded as UTF-8 (undecodable bytes kept as escapes)."""

    __slots__ = ()

    def raw(self) -> bytes:
        return self.encode("utf-8", "surrogateescape")


Token = Union[Atom, String, list["Token"]]  # noqa: UP007 - recursive alias


class ParseError(Exception):
    """The command is malformed; the session answers ``tag BAD text``."""

    def __init__(self, text: str, tag: str = "*") -> None:
        super().__init__(text)
        self.text = text
        self.tag = tag


class FatalParseError(ParseError):
    """The stream cannot be resynchronised; the session says BYE and closes."""


@dataclass
class Literal:
    data: bytes


def tokenize(pieces: list[bytes | Literal]) -> list[Token]:
    """Tokens of one command's pieces (lines and the literals between them)."""
    root: list[Token] = []
    stack: list[list[Token]] = [root]
    count = 0
    for piece in pieces:
        if isinstance(piece, Literal):
            stack[-1].append(String(piece.data.decode("utf-8", "surrogateescape")))
            continue
        line = piece
        i, n = 0, len(line)
        while i < n:
            c = line[i]
            count += 1
            if count > MAX_TOKENS:
                raise ParseError("too many tokens")
            if c == 0x20:
                i += 1
            elif c == 0x28:  # (
                if len(stack) > MAX_DEPTH:
                    raise ParseError("parentheses nested too deeply")
                new: list[Token] = []
                stack[-1].append(new)
                stack.append(new)
                i += 1
            elif c == 0x29:  # )
                if len(stack) == 1:
                    raise ParseError("unbalanced ')'")
                stack.pop()
                i += 1
            elif c == 0x22:  # "
                i, text = _quoted(line, i + 1)
                stack[-1].append(String(text))
            elif c < 0x20 or c == 0x7F or c == 0x7B:  # CTL or a literal in the middle
                raise ParseError("unexpected character in command")
            else:
                i, atom = _atom(line, i)
                stack[-1].append(Atom(atom))
    if len(stack) != 1:
        raise ParseError("unbalanced '('")
    return root


def _quoted(line: bytes, i: int) -> tuple[int, str]:
    out = bytearray()
    n = len(line)
    while i < n:
        c = line[i]
        if c == 0x5C:  # backslash
            if i + 1 >= n or line[i + 1] not in (0x22, 0x5C):
                raise ParseError("bad escape in quoted string")
            out.append(line[i + 1])
            i += 2
        elif c == 0x22:
            return i + 1, out.decode("utf-8", "surrogateescape")
        elif c in (0x0D, 0x0A, 0):
            break
        else:
            out.append(c)
            i += 1
    raise ParseError("unterminated quoted string")


def _atom(line: bytes, i: int) -> tuple[int, str]:
    start, n = i, len(line)
    while i < n:
        c = line[i]
        if c == 0x5B:  # [ ... ] kept whole, spaces and parentheses included
            end = line.find(b"]", i)
            # RFC 3501 §9: "[" is an ordinary ATOM-CHAR (only "]" is resp-special),
            # so without a closing "]" it is just part of the atom
            i = end + 1 if end >= 0 else i + 1
            continue
        if c in _ATOM_STOP or c < 0x20 or c == 0x7F:
            break
        i += 1
    return i, line[start:i].decode("utf-8", "surrogateescape")


@dataclass
class MessageLiteral:
    """The APPEND message literal, not yet read: the handler streams it."""

    size: int
    sync: bool
    utf8: bool
    reader: asyncio.StreamReader
    continue_: Callable[[], Awaitable[None]]
    consumed: int = 0
    started: bool = False
    finished: bool = False

    async def chunks(self, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
        """Ask for the literal (if synchronising) and yield it in chunks."""
        if not self.started:
            self.started = True
            if self.sync:
                await self.continue_()
        while self.consumed < self.size:
            data = await self.reader.read(min(chunk, self.size - self.consumed))
            if not data:
                raise EOFError("connection closed inside a literal")
            self.consumed += len(data)
            yield data

    async def discard(self) -> None:
        """Skip what is left of a literal the client is sending anyway."""
        if not self.started and self.sync:
            return  # the client waits for '+' and will not send it
        self.started = True
        async for _ in self.chunks():
            pass  # read and dropped: the literal's bytes must leave the stream


@dataclass
class Command:
    tag: str
    name: str
    args: list[Token]
    uid: bool = False
    message: MessageLiteral | None = None
    tail: list[Token] = field(default_factory=list)


class CommandReader:
    """Reads commands from one connection within the configured limits.

    ``max_command`` bounds the bytes of one command, its lines *and* its
    literals (the APPEND message literal excepted: it is streamed, never held).
    A literal is checked against it when announced, before a byte of it is read:
    a synchronising one is refused with BAD (the client waits for ``+`` and
    sends nothing), a non-synchronising one that would pass the bound ends the
    connection (RFC 7888 §4: the server cannot skip what it does not want to
    read). Before login the session sets a much lower bound and no APPEND
    streaming, so an unauthenticated client can make the twin hold 64 KiB at most.
    """

    def __init__(self, reader: asyncio.StreamReader, send: Callable[[bytes], Awaitable[None]],
                 *, max_line: int, max_literal: int, max_command: int | None = None,
                 stream_append: bool = True) -> None:
        self.reader = reader
        self.send = send
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = 8 * max_line if max_command is None else max_command
        self.stream_append = stream_append

    async def line(self) -> bytes:
        """One line including CRLF; an over-long line is skipped and refused."""
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            await self._skip_line(exc.consumed)
            raise ParseError("line too long") from None
        except asyncio.IncompleteReadError as exc:
            raise EOFError from exc

    async def _skip_line(self, consumed: int) -> None:
        while True:
            await self.reader.readexactly(consumed)
            try:
                await self.reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                consumed = exc.consumed
            except asyncio.IncompleteReadError as exc:
                raise EOFError from exc

    async def read(self) -> Command:
        first = await self.line()
        if len(first) > self.max_line:
            raise ParseError("line too long")
        head = first.split(b" ", 2)
        tag = head[0].decode("ascii", "replace").strip() if head else "*"
        if not head[0].strip() or not _TAG.match(head[0].strip()) or b"+" in head[0]:
            await self._finish_literals(first)
            raise ParseError("missing or invalid tag")
        if len(head) < 2 or not head[1].strip():
            await self._finish_literals(first)
            raise ParseError("missing command", tag)
        name = head[1].strip().decode("ascii", "replace").upper()
        try:
            return await self._read(first, tag, name)
        except ParseError as exc:
            exc.tag = tag
            raise

    async def _read(self, first: bytes, tag: str, name: str) -> Command:
        pieces: list[bytes | Literal] = []
        line = first
        total = 0
        while True:
            total += len(line)
            if total > self.max_command:
                await self._finish_literals(line)
                raise ParseError("command too long")
            m = _LITERAL_AT_END.search(line)
            if m is None:
                pieces.append(line.rstrip(b"\r\n"))
                break
            size, sync, utf8 = int(m.group(2)), not m.group(3), bool(m.group(1))
            pieces.append(line[:m.start()])
            if name == "APPEND" and self.stream_append and _mailbox_given(pieces):
                if catenating(pieces):  # RFC 4469: the parts are read whole, not streamed
                    pieces = await self.buffered(pieces[:-1], line, total - len(line))
                    break
                return await self._append(tag, pieces, size, sync, utf8)
            total += size  # counted before it is read: refused literals are never buffered
            if size > self.max_line or total > self.max_command:
                if not sync:
                    raise FatalParseError("literal too large")
                raise ParseError(f"literal of {size} bytes is over the limit")
            if sync:
                await self.send(b"+ Ready for literal data\r\n")
            try:
                data = await self.reader.readexactly(size)
            except asyncio.IncompleteReadError as exc:
                raise EOFError from exc
            pieces.append(Literal(data))
            line = await self.line()
            if len(line) > self.max_line:
                raise ParseError("line too long")
        tokens = tokenize(pieces)
        if len(tokens) < 2:
            raise ParseError("missing command")
        args = tokens[2:]
        uid = False
        if name == "UID":
            if not args or not isinstance(args[0], Atom):
                raise ParseError("UID needs a command")
            name, args, uid = args[0].upper(), args[1:], True
        return Command(tag, name, args, uid)

    async def buffered(self, pieces: list[bytes | Literal], line: bytes, total: int
                       ) -> list[bytes | Literal]:
        """The rest of an APPEND with CATENATE (RFC 4469 §5), from ``line`` on.

        Its TEXT parts (and any plain message after them) are literals read
        whole, bounded *together* by the APPEND limit (the lines between them
        by the command limit): the catenated messages may not be larger than
        one streamed message, and nothing is kept beyond that. Only after login
        (``stream_append``): before it, the 64 KiB command bound holds.
        """
        literals = 0
        for _ in range(MAX_TOKENS):
            total += len(line)
            if len(line) > self.max_line or total > self.max_command:
                await self._finish_literals(line)
                raise ParseError("APPEND with CATENATE over the limit")
            m = _LITERAL_AT_END.search(line)
            if m is None:
                pieces.append(line.rstrip(b"\r\n"))
                return pieces
            size, sync = int(m.group(2)), not m.group(3)
            pieces.append(line[:m.start()])
            literals += size
            if literals > self.max_literal:
                if not sync:
                    raise FatalParseError("literal too large")
                raise ParseError("APPEND with CATENATE over the APPEND limit")
            if sync:
                await self.send(b"+ Ready for literal data\r\n")
            try:
                data = await self.reader.readexactly(size)
            except asyncio.IncompleteReadError as exc:
                raise EOFError from exc
            pieces.append(Literal(data))
            line = await self.line()
        raise FatalParseError("too many literals in one command")

    async def _append(self, tag: str, pieces: list[bytes | Literal], size: int, sync: bool,
                      utf8: bool) -> Command:
        message = MessageLiteral(size, sync, utf8, self.reader,
                                 lambda: self.send(b"+ Ready for literal data\r\n"))
        try:
            tokens = tokenize([*pieces[:-1], _strip_open(pieces[-1], utf8)])
        except ParseError:
            if not sync:
                if size > self.max_literal:
                    raise FatalParseError("literal too large") from None
                await message.discard()
                await self.line()
            raise
        return Command(tag, "APPEND", tokens[2:], message=message)

    async def finish_append(self, command: Command) -> None:
        """After the message literal: the rest of the line must close the command."""
        if await self.next_message(command) is not None:
            raise ParseError("unexpected data after the APPEND message", command.tag)

    async def next_message(self, command: Command) -> list[Token] | None:
        """RFC 3502 MULTIAPPEND: after a message literal, the next message's flags and
        date (its literal becomes ``command.message``), or None at the end of the command."""
        assert command.message is not None
        command.message.finished = True
        line = await self.line()
        if len(line) > self.max_line:
            raise ParseError("line too long", command.tag)
        rest = line.rstrip(b"\r\n")
        if command.message.utf8:
            rest = rest.removeprefix(b")")
        if not rest.strip():
            return None
        if catenating([rest]):  # RFC 4469 after a streamed message: the rest is read whole
            command.message = None
            try:
                return tokenize(await self.buffered([], line, 0))
            except ParseError as exc:
                exc.tag = command.tag
                raise
        m = _LITERAL_AT_END.search(line)
        if m is None:
            raise ParseError("unexpected data after the APPEND message", command.tag)
        size, sync, utf8 = int(m.group(2)), not m.group(3), bool(m.group(1))
        head = line[:m.start()]
        if command.message.utf8:
            head = head.removeprefix(b")")
        message = MessageLiteral(size, sync, utf8, self.reader,
                                 lambda: self.send(b"+ Ready for literal data\r\n"))
        command.message = message
        try:
            tokens = tokenize([_strip_open(head, utf8)])
        except ParseError as exc:
            exc.tag = command.tag
            raise
        return tokens

    async def skip_rest(self) -> None:
        """The rest of a refused command: its line and any non-synchronising literals
        (more MULTIAPPEND messages) the client sends without waiting."""
        for _ in range(1000):
            line = await self.line()
            m = _LITERAL_AT_END.search(line)
            if m is None or not m.group(3):
                return
            size = int(m.group(2))
            if size > self.max_literal:
                raise FatalParseError("literal too large")
            remaining = size
            while remaining:
                data = await self.reader.read(min(remaining, 256 * 1024))
                if not data:
                    raise EOFError("connection closed inside a literal")
                remaining -= len(data)
        raise FatalParseError("too many literals in one command")

    async def _finish_literals(self, line: bytes) -> None:
        """A refused first line that announced a non-synchronising literal: skip it."""
        m = _LITERAL_AT_END.search(line)
        if m and m.group(3):
            size = int(m.group(2))
            if size > min(self.max_line, self.max_command):
                raise FatalParseError("literal too large")
            await self.reader.readexactly(size)
            await self.line()


_CATENATE = re.compile(rb"(?:^|[\s)])CATENATE\s*\(", re.I)


def catenating(pieces: list[bytes | Literal]) -> bool:
    """Does this APPEND (so far) open a ``CATENATE (`` part list (RFC 4469 §5)?"""
    return any(isinstance(p, bytes) and _CATENATE.search(p) for p in pieces)


def _mailbox_given(pieces: list[bytes | Literal]) -> bool:
    """In an APPEND, has the mailbox argument been seen before this literal?"""
    if any(isinstance(p, Literal) for p in pieces):
        return True
    try:
        return len(tokenize([_strip_open(pieces[-1], True)])) >= 3  # tag APPEND mailbox
    except ParseError:
        return True


def _strip_open(piece: bytes | Literal, utf8: bool) -> bytes | Literal:
    """``... UTF8 (`` before an RFC 6855 literal: drop the open parenthesis."""
    if isinstance(piece, bytes) and utf8:
        stripped = piece.rstrip()
        if stripped.endswith(b"("):
            return stripped[:-1]
    return piece
