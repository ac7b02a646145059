"""The receiving side of the Thrift binary protocol for ``ThriftFlumeEventServer``, bounded.

thriftpy2's readers trust what a message announces: a string length is allocated before
its bytes arrive, a list of 2^31 elements is looped over, and its Cython ``skip`` loops
over a container of a type that takes no bytes while holding the GIL (a 5 kB message
froze a whole receiver). The RPC server therefore reads requests with :class:`Reader`,
which knows the IDL's five methods and keeps three bounds per message:

* **bytes**: every length is checked against what is left of the message's budget
  *before* anything is read or allocated (:class:`Refused` ``oversize``), and bytes are
  held only as they arrive (an announced length costs nothing until it is sent);
* **structs**: at most ``max_structs`` event structs (``events``; a list announcing more
  is refused before its first element);
* **bytes of every connection**: a long string is received only once its length fits
  in the server's :class:`ByteBudget` (``busy`` when it does not within the wait);
* **work**: every element of a container takes at least one byte, so the time spent on a
  message is bounded by its bytes; a container of a type that takes no bytes, an unknown
  type, a negative length, a method name longer than ``MAX_NAME_BYTES`` (refused before
  it is read) or nesting deeper than ``MAX_DEPTH`` is ``malformed``;
* **time**: once the first byte of a message arrived, the message must keep arriving at
  ``min_rate`` bytes per second: its first byte gives it ``message_timeout`` seconds,
  each byte received adds ``1/min_rate`` s, never to more than ``message_timeout`` s
  ahead (:func:`node.limits.message_due`); when that runs out the message is refused
  (``slow``). A byte now and then is cut ``message_timeout`` s after the message began,
  a slow link above ``min_rate`` never is, whatever the message's size.

Small received pieces are gathered into one buffer, so a string sent a byte per segment
costs its length, not a Python object per piece.

Fields of unknown ids or unexpected types are skipped within these bounds, as Thrift
requires. Answers are written by :func:`reply`, :func:`void_reply`, :func:`exception_reply`
(strict binary protocol, what every Thrift client reads). Wire format: strict or old-style
message header, fields as ``type:i8 id:i16 value``, strings ``len:i32 bytes``, lists
``etype:i8 size:i32``, maps ``ktype:i8 vtype:i8 size:i32``, all big-endian.
"""
from __future__ import annotations

import socket
import struct
import threading
import time

from .limits import message_due

T_STOP, T_BOOL, T_BYTE, T_DOUBLE, T_I16, T_I32, T_I64 = 0, 2, 3, 4, 6, 8, 10
T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST = 11, 12, 13, 14, 15
CALL, REPLY, EXCEPTION, ONEWAY = 1, 2, 3, 4
MAX_DEPTH = 8
MAX_NAME_BYTES = 64           # a method name: the IDL's longest is 12
RECV_SIZE = 1 << 16           # read-ahead for small reads
BIG_RECV = 1 << 20            # the most one recv asks for when a long string arrives
PIECE = 1 << 14               # a received piece shorter than this is gathered, not kept

# the fewest bytes one element of each type takes on the wire
_MIN_SIZE = {T_BOOL: 1, T_BYTE: 1, T_DOUBLE: 8, T_I16: 2, T_I32: 4, T_I64: 8,
             T_STRING: 4, T_STRUCT: 1, T_MAP: 6, T_SET: 5, T_LIST: 5}
_FIXED = {T_BOOL: 1, T_BYTE: 1, T_DOUBLE: 8, T_I16: 2, T_I32: 4, T_I64: 8}
_I16, _I32, _I64 = struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")
_VERSION_1 = 0x80010000


class Refused(Exception):
    """A message over a bound, or not a message of the IDL (``reason``: ``oversize``,
    ``events``, ``busy``, ``malformed``, ``slow``). The connection cannot be read
    further."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Closed(Exception):
    """The peer closed the connection."""


class ByteBudget:
    """Bytes that the connections of one server may hold in long strings at once: a long
    string is received only once its length is reserved here (waiting up to ``wait``
    seconds), and the reservation is returned when the next message starts (the call was
    answered) or the connection ends."""

    def __init__(self, total: int, wait: float):
        self.total = total
        self.wait = wait
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> bool:
        deadline = time.monotonic() + self.wait
        with self._cond:
            while self.used + n > self.total:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self.used += n
            return True

    def release(self, n: int) -> None:
        if n:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


class Reader:
    """Reads the requests of one connection (see the module docstring). ``begin(budget)``
    starts a message; ``consumed`` is what the current message took so far.

    Time: between messages the socket waits up to ``idle_timeout`` seconds for a first
    byte (then ``TimeoutError``); from the first byte of a message on, every wait is cut
    to what is left until ``deadline`` -- ``message_timeout`` after the first byte, moved
    by ``1/min_rate`` s per byte received, at most ``message_timeout`` ahead (None: no
    deadline) -- and past it the message is refused (``slow``). ``idle_since`` is when
    the connection went idle (between messages, nothing of the next one received), None
    while a message is in progress: the server may close an idle connection to make room
    for another, or, when none is idle, the one whose ``deadline`` comes first."""

    def __init__(self, sock: socket.socket, max_structs: int, event_class=dict,
                 shared: ByteBudget | None = None, *, idle_timeout: float | None = None,
                 message_timeout: float | None = None, min_rate: int = 0):
        self.sock = sock
        self.max_structs = max_structs
        self.event_class = event_class      # what an event struct is read into
        self.shared = shared
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.min_rate = min_rate
        self.held = 0                       # bytes reserved in ``shared``
        self.deadline: float | None = None  # when the message must have progressed
        self.idle_since: float | None = None
        self._buf = b""
        self._pos = 0
        sock.settimeout(idle_timeout)
        self.begin(0)

    def begin(self, budget: int) -> None:
        self.release()
        self.budget = self.left = budget
        self.structs = self.max_structs
        self.end_message()
        self.idle_since = time.monotonic()
        if self._pos < len(self._buf):      # the next message has begun arriving already
            self._started()

    def end_message(self) -> None:
        """The message is read: the deadline no longer applies (writing the answer waits
        up to ``idle_timeout``, as before the message)."""
        if self.deadline is not None:
            self.deadline = None
            self.sock.settimeout(self.idle_timeout)

    @property
    def started(self) -> bool:
        """Some of the current message has arrived."""
        return self.idle_since is None

    def release(self) -> None:
        """Give back what this connection reserved in the shared budget."""
        if self.shared is not None:
            self.shared.release(self.held)
        self.held = 0

    def narrow(self, budget: int, what: str) -> None:
        """The rest of the message gets a smaller budget (methods made of structs)."""
        if self.consumed > budget:
            raise Refused("oversize", f"{what} message over {budget} bytes")
        self.left = budget - self.consumed
        self.budget = budget

    @property
    def consumed(self) -> int:
        return self.budget - self.left

    # ------------------------------------------------------------ bytes

    def _started(self) -> None:
        self.idle_since = None
        if self.message_timeout is not None:
            self.deadline = time.monotonic() + self.message_timeout

    def _progressed(self, n: int) -> None:
        """``n`` more bytes of the message in progress arrived: move the deadline."""
        if self.deadline is not None:
            self.deadline = message_due(self.deadline, time.monotonic(), n,
                                        self.message_timeout, self.min_rate)

    def _arm(self) -> None:
        """Before a wait within a message: cut it to what is left of the deadline."""
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise Refused("slow", f"message arriving slower than {self.min_rate} "
                                      f"bytes/s for {self.message_timeout:g} s")
            self.sock.settimeout(left if self.idle_timeout is None
                                 else min(left, self.idle_timeout))

    def _recv(self, n: int) -> bytes:
        self._arm()
        data = self.sock.recv(n)
        if not data:
            raise Closed("connection closed by the peer")
        if self.idle_since is not None:
            self._started()
        else:
            self._progressed(len(data))
        return data

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes of the message; Refused before reading if over budget."""
        if n < 0:
            raise Refused("malformed", f"negative length {n}")
        if n > self.left:
            raise Refused("oversize", f"a length of {n} bytes where {self.left} of the "
                                      f"{self.budget}-byte bound are left")
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if n <= avail:
            self._pos = pos + n
            self.left -= n
            return buf[pos:pos + n]
        if n > RECV_SIZE:
            data = self._take_long(n, buf, pos, avail)
        else:
            # small reads read ahead; what arrives beyond ``n`` stays in ``_buf``
            chunk = self._recv(RECV_SIZE)
            if not avail and len(chunk) >= n:
                data = chunk
            else:           # one growing buffer, however small the pieces arrive
                acc = bytearray(buf[pos:])
                acc += chunk
                while len(acc) < n:
                    acc += self._recv(RECV_SIZE)
                data = bytes(acc)
            self._buf, self._pos = data, n
            data = data[:n]
        self.left -= n        # only now: a silent peer has consumed nothing
        return data

    def _take_long(self, n: int, buf: bytes, pos: int, avail: int) -> bytes:
        """A long string, read once its ``n`` bytes are reserved in the shared budget.
        Pieces of at least ``PIECE`` bytes are kept as they arrive (then joined: the
        string costs about twice its length, and no extra copy on the hot path); smaller
        ones are gathered into one buffer first, so a peer sending a byte per segment
        costs the same, not a Python object (~40 bytes) per byte."""
        if self.shared is not None:
            if not self.shared.acquire(n):
                raise Refused("busy", f"no room for a string of {n} bytes within "
                                      f"{self.shared.wait:g} s: other connections hold "
                                      f"{self.shared.total} bytes")
            self.held += n
        parts = [buf[pos:]] if avail else []
        self._buf, self._pos = b"", 0
        need = n - avail
        small = bytearray()
        while need > 0:
            chunk = self._recv(min(need, BIG_RECV))
            need -= len(chunk)
            if small or len(chunk) < PIECE:
                small += chunk
                if len(small) >= PIECE:
                    parts.append(bytes(small))
                    small.clear()
            else:
                parts.append(chunk)
        if small:
            parts.append(bytes(small))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def u8(self) -> int:
        return self.take(1)[0]

    def i16(self) -> int:
        return _I16.unpack(self.take(2))[0]

    def i32(self) -> int:
        return _I32.unpack(self.take(4))[0]

    def i64(self) -> int:
        return _I64.unpack(self.take(8))[0]

    def binary(self) -> bytes:
        return self.take(self.i32())

    def text(self) -> str:
        return self.binary().decode("utf-8", "replace")

    # ------------------------------------------------------------ structure

    def message_begin(self) -> tuple[str, int, int]:
        """``(method, type, seqid)`` of the next message."""
        first = self.i32()
        if first < 0:
            if first & 0xFFFF0000 != _VERSION_1:
                raise Refused("malformed", f"bad protocol version {first & 0xFFFFFFFF:#x}")
            mtype = first & 0xFF
            name = self.take(self._name_length(self.i32()))
        else:
            name = self.take(self._name_length(first))
            mtype = self.u8()
        seqid = self.i32()
        if mtype not in (CALL, ONEWAY):
            raise Refused("malformed", f"message of type {mtype}, not a call")
        return name.decode("utf-8", "replace"), mtype, seqid

    @staticmethod
    def _name_length(n: int) -> int:
        # refused before reading it: an unknown name is echoed in the answer
        if not 0 <= n <= MAX_NAME_BYTES:
            raise Refused("malformed", f"a method name of {n} bytes (at most "
                                       f"{MAX_NAME_BYTES})")
        return n

    def fields(self, spec: dict, depth: int = 0) -> dict:
        """A struct's fields: ``spec`` maps field id -> (type, name, read); fields not in
        it, or of another type, are skipped."""
        if depth > MAX_DEPTH:
            raise Refused("malformed", "structs nested too deep")
        out = {}
        while True:
            ftype = self.u8()
            if ftype == T_STOP:
                return out
            fid = self.i16()
            want = spec.get(fid)
            if want is None or want[0] != ftype:
                self.skip(ftype, depth + 1)
                continue
            out[want[1]] = want[2](self, depth + 1)

    def _size(self, etype: int, size: int, per: int) -> int:
        """Check a container's announced size against the bytes left."""
        if size < 0:
            raise Refused("malformed", f"negative container size {size}")
        if size and per == 0:
            raise Refused("malformed", f"container of type {etype}, which takes no bytes")
        if size * per > self.left:
            raise Refused("oversize", f"a container of {size} elements where "
                                      f"{self.left} bytes of the {self.budget}-byte bound "
                                      f"are left")
        return size

    def skip(self, ttype: int, depth: int) -> None:
        """Skip one value of ``ttype``, within the bounds."""
        if depth > MAX_DEPTH:
            raise Refused("malformed", "values nested too deep")
        fixed = _FIXED.get(ttype)
        if fixed is not None:
            self.take(fixed)
        elif ttype == T_STRING:
            n = self.i32()
            while n > 0:         # in pieces: skipped bytes are never held at once
                piece = min(n, BIG_RECV)
                self.take(piece)
                n -= piece
        elif ttype == T_STRUCT:
            self.fields({}, depth)
        elif ttype in (T_LIST, T_SET):
            etype = self.u8()
            for _ in range(self._size(etype, self.i32(), _MIN_SIZE.get(etype, 0))):
                self.skip(etype, depth + 1)
        elif ttype == T_MAP:
            self.skip_map_entries(self.u8(), self.u8(), depth)
        else:
            raise Refused("malformed", f"unknown type {ttype}")

    # ------------------------------------------------------------ the IDL's values

    def event(self, depth: int):
        """One ``ThriftFlumeEvent`` (counted against ``max_structs``). Written out field
        by field: it is read once per event of an ``appendBatch``."""
        self.structs -= 1
        if self.structs < 0:
            raise Refused("events", f"more than {self.max_structs} events in a message")
        buf, pos = self._buf, self._pos
        fast = _parse_event(buf, pos, len(buf))
        if fast is not None and fast[1] - pos <= self.left:
            self.left -= fast[1] - pos
            self._pos = fast[1]
            return self.event_class(*fast[0])
        take, i32, i64 = self.take, _I32.unpack, _I64.unpack
        timestamp = priority = body = nanos = host = attrs = None
        while True:
            head = take(1)[0]
            if head == T_STOP:
                break
            fid = _I16.unpack(take(2))[0]
            if fid == 3 and head == T_STRING:
                body = take(i32(take(4))[0])
            elif fid == 1 and head == T_I64:
                timestamp = i64(take(8))[0]
            elif fid == 4 and head == T_I64:
                nanos = i64(take(8))[0]
            elif fid == 2 and head == T_I32:
                priority = i32(take(4))[0]
            elif fid == 5 and head == T_STRING:
                host = take(i32(take(4))[0]).decode("utf-8", "replace")
            elif fid == 6 and head == T_MAP:
                attrs = self.attrs(depth + 1)
            else:
                self.skip(head, depth + 1)
        return self.event_class(timestamp, priority, body, nanos, host, attrs)

    def events(self, depth: int) -> list:
        etype = self.u8()
        size = self._size(etype, self.i32(), _MIN_SIZE.get(etype, 0))
        if etype != T_STRUCT:
            for _ in range(size):
                self.skip(etype, depth + 1)
            return []
        if size > self.structs:
            raise Refused("events", f"a list of {size} events, more than "
                                    f"{self.max_structs}")
        return [self.event(depth + 1) for _ in range(size)]

    def attrs(self, depth: int) -> dict:
        ktype, vtype = self.u8(), self.u8()
        if ktype != T_STRING or vtype != T_STRING:
            self.skip_map_entries(ktype, vtype, depth)
            return {}
        size = self._size(ktype, self.i32(), 8)
        return {self.text(): self.binary() for _ in range(size)}

    def skip_map_entries(self, ktype: int, vtype: int, depth: int) -> None:
        # an entry takes the bytes of both types; 0 when either takes none (refused)
        per = min(_MIN_SIZE.get(ktype, 0), _MIN_SIZE.get(vtype, 0)) and \
            _MIN_SIZE[ktype] + _MIN_SIZE[vtype]
        for _ in range(self._size(ktype, self.i32(), per)):
            self.skip(ktype, depth + 1)
            self.skip(vtype, depth + 1)


def _parse_event(buf: bytes, pos: int, end: int):
    """``((timestamp, priority, body, nanos, host, fieldss), end)`` of an event struct held
    whole in ``buf[pos:end]`` with only the IDL's fields; None otherwise (then
    :meth:`Reader.event` reads it piece by piece, with every check)."""
    timestamp = priority = body = nanos = host = attrs = None
    i32, i64 = _I32.unpack_from, _I64.unpack_from
    while pos < end:
        head = buf[pos]
        if head == T_STOP:
            return (timestamp, priority, body, nanos, host, attrs), pos + 1
        if pos + 3 > end:
            return None
        fid = buf[pos + 1] << 8 | buf[pos + 2]
        pos += 3
        if head == T_STRING and (fid == 3 or fid == 5):
            if pos + 4 > end:
                return None
            n = i32(buf, pos)[0]
            pos += 4
            if n < 0 or pos + n > end:
                return None
            if fid == 3:
                body = buf[pos:pos + n]
            else:
                host = buf[pos:pos + n].decode("utf-8", "replace")
            pos += n
        elif head == T_I64 and (fid == 1 or fid == 4):
            if pos + 8 > end:
                return None
            if fid == 1:
                timestamp = i64(buf, pos)[0]
            else:
                nanos = i64(buf, pos)[0]
            pos += 8
        elif head == T_I32 and fid == 2:
            if pos + 4 > end:
                return None
            priority = i32(buf, pos)[0]
            pos += 4
        elif head == T_MAP and fid == 6:
            if pos + 6 > end or buf[pos] != T_STRING or buf[pos + 1] != T_STRING:
                return None
            size = i32(buf, pos + 2)[0]
            pos += 6
            if size < 0 or pos + size * 8 > end:
                return None
            attrs = {}
            for _ in range(size):
                n = i32(buf, pos)[0]
                if n < 0 or pos + 8 + n > end:
                    return None
                key = buf[pos + 4:pos + 4 + n].decode("utf-8", "replace")
                pos += 4 + n
                n = i32(buf, pos)[0]
                if n < 0 or pos + 4 + n > end:
                    return None
                attrs[key] = buf[pos + 4:pos + 4 + n]
                pos += 4 + n
        else:
            return None
    return None


def _value(read):
    return lambda r, depth: read(r)


# method -> (argument fields, names in the IDL's order, made of structs)
METHODS = {
    "append": ({1: (T_STRUCT, "evt", Reader.event)}, ("evt",), True),
    "appendBatch": ({1: (T_LIST, "events", Reader.events),
                     2: (T_STRING, "sender", _value(Reader.text)),
                     3: (T_I64, "batch", _value(Reader.i64)),
                     4: (T_I32, "timeoutMs", _value(Reader.i32))},
                    ("events", "sender", "batch", "timeoutMs"), True),
    "appendPacked": ({1: (T_STRING, "payload", _value(Reader.binary)),
                      2: (T_I32, "count", _value(Reader.i32)),
                      3: (T_STRING, "sender", _value(Reader.text)),
                      4: (T_I64, "batch", _value(Reader.i64)),
                      5: (T_I32, "timeoutMs", _value(Reader.i32))},
                     ("payload", "count", "sender", "batch", "timeoutMs"), False),
    "appendGroup": ({1: (T_STRING, "agent", _value(Reader.text)),
                     2: (T_I64, "seq", _value(Reader.i64)),
                     3: (T_I64, "checksum", _value(Reader.i64)),
                     4: (T_STRING, "payload", _value(Reader.binary)),
                     5: (T_I32, "count", _value(Reader.i32))},
                    ("agent", "seq", "checksum", "payload", "count"), False),
    "close": ({}, (), False),
}


def _header(name: str, mtype: int, seqid: int) -> bytes:
    nb = name.encode()
    return _I32.pack(_VERSION_1 - (1 << 32) | mtype) + _I32.pack(len(nb)) + nb + \
        _I32.pack(seqid)


def reply(name: str, seqid: int, status: int, message: str) -> bytes:
    """The answer of an ``AppendResult`` method."""
    mb = message.encode()
    return (_header(name, REPLY, seqid) + b"\x0c\x00\x00"           # field 0: success
            + b"\x08\x00\x01" + _I32.pack(status)
            + b"\x0b\x00\x02" + _I32.pack(len(mb)) + mb + b"\x00\x00")


def void_reply(name: str, seqid: int) -> bytes:
    """The answer of a ``void`` method (``close``)."""
    return _header(name, REPLY, seqid) + b"\x00"


def exception_reply(name: str, seqid: int, kind: int, message: str) -> bytes:
    """A ``TApplicationException`` of ``kind`` (1: unknown method)."""
    mb = message.encode()
    return (_header(name, EXCEPTION, seqid) + b"\x0b\x00\x01" + _I32.pack(len(mb)) + mb
            + b"\x08\x00\x02" + _I32.pack(kind) + b"\x00")
