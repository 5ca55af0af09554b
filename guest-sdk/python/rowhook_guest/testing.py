"""Unit-testing handlers with plain ``python3``, without rowhook or a wasm
runtime.

Outside a component, the capability calls (:func:`rowhook_guest.emit`,
:mod:`~rowhook_guest.state`, :mod:`~rowhook_guest.log`,
:mod:`~rowhook_guest.metrics`) go to an in-memory recorder. :func:`run`
calls the @handler function the way rowhook does, and
:class:`ChangeBuilder` encodes the change to give it::

    from rowhook_guest import testing
    from rowhook_guest.testing import ChangeBuilder

    import app  # marks its @handler

    testing.reset()
    change = ChangeBuilder.insert("shop", "orders").column("id", 7).build()
    assert testing.run(change) is None
    assert testing.messages()[0].payload == b'{"id":7}'
"""

import struct
from decimal import Decimal

from .change import Float32, JsonText
from .errors import EmitError, StateError


class Message:
    """A message the handler emitted: ``sink``, ``key``, ``payload`` (bytes)."""

    __slots__ = ("sink", "key", "payload")

    def __init__(self, sink, key, payload):
        self.sink, self.key, self.payload = sink, key, payload

    def __repr__(self):
        return f"Message(sink={self.sink!r}, key={self.key!r}, payload={self.payload!r})"

    def __eq__(self, other):
        return isinstance(other, Message) and (self.sink, self.key, self.payload) == (
            other.sink,
            other.key,
            other.payload,
        )


class _Recorder:
    def __init__(self):
        self.granted = None
        self.emit_limit = None
        self.emitted_this_event = 0
        self.messages = []
        self.state = {}
        self.logs = []
        self.counters = {}
        self.gauges = {}

    # The capability calls, as _wit has them.

    def emit(self, sink, key, payload):
        if self.granted is not None and sink not in self.granted:
            raise EmitError(sink, "denied")
        if self.emit_limit is not None and self.emitted_this_event >= self.emit_limit:
            raise EmitError(sink, "quota")
        self.emitted_this_event += 1
        self.messages.append(Message(sink, key, bytes(payload)))

    # As _wit has them for rowhook_guest.emit: the call raises EmitError
    # itself, so no other exception is turned into one.
    emit_call = emit
    EmitRefused = ()

    @staticmethod
    def emit_error(sink, e):
        return e

    def state_get(self, key):
        return self.state.get(key)

    def state_set(self, key, value):
        self.state[key] = bytes(value)

    def state_delete(self, key):
        self.state.pop(key, None)

    def state_increment(self, key, delta):
        old = self.state.get(key)
        if old is not None and len(old) != 8:
            raise StateError(key, "not-a-counter")
        new = (0 if old is None else struct.unpack("<q", old)[0]) + delta
        if not -(2**63) <= new < 2**63:
            raise StateError(key, "overflow")
        self.state[key] = struct.pack("<q", new)
        return new

    def log(self, level, message, fields):
        self.logs.append((("trace", "debug", "info", "warn", "error")[level], message, list(fields)))

    def counter_add(self, name, delta):
        self.counters[name] = self.counters.get(name, 0) + delta

    def gauge_set(self, name, value):
        self.gauges[name] = value


_recorder = _Recorder()


def run(change):
    """Calls the @handler function with the encoded ``change`` as rowhook
    does: a fresh emit quota, and the call's messages and state writes
    discarded if it fails. Returns ``None``, or the message rowhook would
    get for the failure."""
    from ._export import failure, handler_function
    from .change import Change

    r = _recorder
    r.emitted_this_event = 0
    messages, state = len(r.messages), dict(r.state)
    try:
        handler_function()(Change(change))
    except Exception as e:
        del r.messages[messages:]
        r.state = state
        return failure(e)
    return None


def grant(*sinks):
    """Grants only these sinks; emitting to another raises
    :class:`~rowhook_guest.EmitError` ``denied``. By default every sink is
    granted."""
    _recorder.granted = set(sinks)


def set_emit_limit(limit):
    """Allows ``limit`` emits per :func:`run` (``quota`` past it)."""
    _recorder.emit_limit = limit


def messages():
    """Every :class:`Message` emitted since :func:`reset`."""
    return list(_recorder.messages)


def logs():
    """Every line logged since :func:`reset`: (level, message, [(key, value)])."""
    return list(_recorder.logs)


def state():
    """The handler state: {key: bytes}."""
    return dict(_recorder.state)


def counters():
    """The metric counters: {name: int}."""
    return dict(_recorder.counters)


def gauges():
    """The metric gauges: {name: float}."""
    return dict(_recorder.gauges)


def reset():
    """Forgets everything recorded, grants and limits included."""
    _recorder.__init__()


# Tags of the row change encoding (SPEC.md, "Value entries"), by name.
TAGS = {
    "null": 1,
    "int": 2,
    "uint": 3,
    "float": 4,
    "double": 5,
    "decimal": 6,
    "string": 7,
    "bytes": 8,
    "date": 9,
    "datetime": 10,
    "timestamp": 11,
    "time": 12,
    "json": 13,
    "enum": 14,
    "set": 15,
    "bit": 16,
    "vector": 17,
}

# A plausible MySQL type code for each tag (SPEC.md, "Column directory").
_TYPE_CODES = {1: 6, 2: 8, 3: 8, 4: 4, 5: 5, 6: 246, 7: 15, 8: 252, 9: 10, 10: 18, 11: 17, 12: 19}
_TYPE_CODES.update({13: 245, 14: 247, 15: 248, 16: 16, 17: 242})

# The header's op codes.
_OPS = {"insert": 1, "update": 2, "delete": 3, "snapshot": 4}

# `at` without a GTID: 0-1-1 for a binlog change, none for a snapshot.
_NO_GTID_GIVEN = object()


def _tag_of(value):
    if value is None:
        return 1
    if isinstance(value, bool) or isinstance(value, int):
        return 2 if value < 2**63 else 3
    if isinstance(value, Float32):
        return 4
    if isinstance(value, float):
        return 5
    if isinstance(value, Decimal):
        return 6
    if isinstance(value, JsonText):
        return 13
    if isinstance(value, str):
        return 7
    if isinstance(value, (bytes, bytearray)):
        return 8
    if hasattr(value, "typecode") and value.typecode == "f":
        return 17
    raise TypeError(f"no tag for a {type(value).__name__}: pass tag=")


class ChangeBuilder:
    """Encodes a change for tests, as rowhook would send it.

    Columns appear in the order they are first named. For an update,
    :meth:`column` sets the after value and :meth:`before` the before value;
    a column given only one of them has the same value in both images. The
    tag follows the Python type (``int`` int, ``str`` string, ``bytes``
    bytes, ``Decimal`` decimal, ...); ``tag="datetime"`` (a name of
    :data:`TAGS`) picks another.
    """

    def __init__(self, op, db, table):
        self.op, self.db, self.table = op, db, table
        self.txn = self.gtid = "0-1-1"
        if op == "snapshot":
            self.txn, self.gtid = f"snapshot:{db}.{table}", None
        self.file, self.pos, self.ts = "mysql-bin.000001", 4, 0
        self.event_index = self.row_index = 0
        self._columns = []  # [name, primary_key, before, after]: values as (tag, value)

    @classmethod
    def insert(cls, db, table):
        return cls("insert", db, table)

    @classmethod
    def update(cls, db, table):
        return cls("update", db, table)

    @classmethod
    def delete(cls, db, table):
        return cls("delete", db, table)

    @classmethod
    def snapshot(cls, db, table):
        """A row read by a snapshot of ``db.table``: an after image only, id
        ``snapshot:<db>.<table>:0:0``, no GTID."""
        return cls("snapshot", db, table)

    def at(self, file, pos, ts=0, gtid=_NO_GTID_GIVEN, event_index=0, row_index=0):
        """Where the change is: binlog ``file`` and ``pos``, timestamp, the
        transaction's GTID (``"0-1-1"`` unless given; ``None`` for none: the
        id then starts with ``<file>/<pos>``) and the indexes of the id.

        For a snapshot, ``file`` and ``pos`` are where the stream was when
        it read the row, ``ts`` when it read it, and the indexes the chunk
        and the row in it; it has no GTID."""
        if self.op == "snapshot":
            if gtid is not _NO_GTID_GIVEN and gtid is not None:
                raise ValueError("a snapshot has no GTID")
            self.gtid = None
        else:
            self.gtid = "0-1-1" if gtid is _NO_GTID_GIVEN else gtid
            self.txn = self.gtid if self.gtid is not None else f"{file}/{pos}"
        self.file, self.pos, self.ts = file, pos, ts
        self.event_index, self.row_index = event_index, row_index
        return self

    def _slot(self, name):
        for c in self._columns:
            if c[0] == name:
                return c
        c = [name, False, None, None]
        self._columns.append(c)
        return c

    def column(self, name, value, tag=None):
        """Sets column ``name``: the after value, or the before value of a delete."""
        entry = (TAGS[tag] if tag else _tag_of(value), value)
        self._slot(name)[2 if self.op == "delete" else 3] = entry
        return self

    def before(self, name, value, tag=None):
        """Sets column ``name`` in the before image of an update."""
        self._slot(name)[2] = (TAGS[tag] if tag else _tag_of(value), value)
        return self

    def primary_key(self, name):
        """Marks column ``name`` as part of the primary key."""
        self._slot(name)[1] = True
        return self

    def build(self):
        """The encoded change, as ``bytes``."""
        n = len(self._columns)
        has_before, has_after = self.op in ("update", "delete"), self.op != "delete"
        index_len = 72 + 8 * n + 9 * n * (has_before + has_after)
        data = bytearray()

        def put(b):
            off = index_len + len(data)
            data.extend(b)
            return off, len(b)

        directory = bytearray()
        for name, pk, before, after in self._columns:
            off, length = put(name.encode())
            tag = (after or before or (1, None))[0]
            directory += struct.pack("<IHBB", off, length, _TYPE_CODES[tag], (1 if pk else 0) | 2)
        event_id = f"{self.txn}:{self.event_index}:{self.row_index}".encode()
        id_span = put(event_id)
        gtid_span = put(self.gtid.encode()) if self.gtid is not None else (0, 0)
        file_span, db_span, table_span = put(self.file.encode()), put(self.db.encode()), put(self.table.encode())

        def entry(tv):
            tag, value = tv
            if tag == 1:
                return struct.pack("<BQ", 1, 0)
            if tag == 2:
                return struct.pack("<Bq", 2, value)
            if tag in (3, 16):
                return struct.pack("<BQ", tag, value)
            if tag in (4, 5):
                return struct.pack("<Bd", tag, value)
            if tag in (8, 17):
                raw = bytes(value) if tag == 8 else value.tobytes()
            elif tag == 6:
                raw = format(value, "f").encode() if isinstance(value, Decimal) else value.encode()
            else:
                raw = value.encode()
            return struct.pack("<BII", tag, *put(raw))

        images = bytearray()
        for present, which in ((has_before, 2), (has_after, 3)):
            if present:
                for c in self._columns:
                    tv = c[which] or c[5 - which] or (1, None)
                    images += entry(tv)
        flags = (1 if has_before else 0) | (2 if has_after else 0) | (4 if self.gtid is not None else 0) | 8
        header = struct.pack(
            "<4sBBHIIIIQ10I",
            b"RHC\x01",
            _OPS[self.op],
            flags,
            n,
            self.ts,
            self.event_index,
            self.row_index,
            len(self.txn.encode()),
            self.pos,
            *id_span,
            *gtid_span,
            *file_span,
            *db_span,
            *table_span,
        )
        return bytes(header + directory + images + data)
