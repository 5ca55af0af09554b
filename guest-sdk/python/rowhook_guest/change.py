"""Reading a row change from its encoding, lazily.

rowhook hands a handler one change as one byte buffer in the row change
encoding (``guest-sdk/abi/SPEC.md``): a 72-byte header, a column directory
and one 9-byte entry per column and image, with names, texts and bytes in a
data area behind them. :class:`Change` checks the magic, version, operation
and that the index fits when it is made; the header's texts (id, GTID, file,
db, table) together when one of them is first read; a value when it is
read. So a handler pays for what it touches, not for the width of the table:
in a component every Python-level step counts (CPython runs interpreted
inside WebAssembly), and a handler that reads the operation and two columns
never decodes the binlog file's name.

Values come out as these Python types:

=====================  ===================================================
column                 value
=====================  ===================================================
NULL                   ``None``
integers, YEAR, BIT    ``int`` (exact, signed or unsigned 64-bit)
DECIMAL                ``decimal.Decimal``, exact, with the column's scale
FLOAT                  :class:`Float32`, a ``float`` that JSON writes as
                       the FLOAT it came from (``1.1``, not ``1.100000023841858``)
DOUBLE                 ``float``
CHAR, VARCHAR, TEXT,   ``str``; dates and times as rowhook's row change
ENUM, SET, DATE, TIME, JSON shows them (``2025-11-21 08:00:00``,
DATETIME, TIMESTAMP    ``2025-11-21T08:05:00.250Z``, ``0000-00-00`` kept)
JSON                   :class:`JsonText`, a ``str`` of JSON text that JSON
                       output embeds as it is
BINARY, BLOB, ...      ``bytes``
VECTOR                 ``array.array('f')``
=====================  ===================================================

A column that is not in an image (a MINIMAL row image) is not NULL: reading
it raises :class:`~rowhook_guest.errors.NotInImageError`, and ``in`` says
whether it is there.
"""

from array import array
from collections.abc import Mapping
from decimal import Decimal
from struct import Struct

from .errors import FormatError, NoColumnError, NotInImageError

VERSION = 1
INSERT = "insert"
UPDATE = "update"
DELETE = "delete"
# A row as it is, read by a snapshot of its table: an after image only, as
# an insert has.
SNAPSHOT = "snapshot"

_MAGIC = b"RHC\x01"
_OPS = (None, INSERT, UPDATE, DELETE, SNAPSHOT)
_FRONT = Struct("<4sBBH").unpack_from
_REST = Struct("<IIIIQ10I").unpack_from
_HEADER_LEN = 72
_COLUMN = Struct("<IHBB")
_SPAN = Struct("<II").unpack_from
_I64 = Struct("<q").unpack_from
_U64 = Struct("<Q").unpack_from
_F64 = Struct("<d").unpack_from
_FLAG_BEFORE, _FLAG_AFTER, _FLAG_GTID, _FLAG_NAMES = 1, 2, 4, 8


class Float32(float):
    """A FLOAT column's value: the float exactly, and JSON output writes the
    shortest text that reads back as the same 32-bit float."""

    __slots__ = ()


class JsonText(str):
    """A JSON column's value: its JSON text, which JSON output embeds as it
    is rather than as a quoted string. ``json.loads`` it to work with it."""

    __slots__ = ()


class Column:
    """A column of the table: ``name``, the MySQL ``type_code`` of the
    binlog's TABLE_MAP, ``primary_key`` and ``nullable``."""

    __slots__ = ("name", "type_code", "primary_key", "nullable")

    def __init__(self, name, type_code, primary_key, nullable):
        self.name = name
        self.type_code = type_code
        self.primary_key = primary_key
        self.nullable = nullable

    def __repr__(self):
        return (
            f"Column(name={self.name!r}, type_code={self.type_code}, "
            f"primary_key={self.primary_key}, nullable={self.nullable})"
        )


# Not in the image (tag 0): distinct from None, which is SQL NULL.
_ABSENT = object()

# Column directory bytes -> (directory, lo, names bytes, {name: index}).
# Every change of a table carries the same directory, so the names are
# decoded once per table rather than once per change. A hit is taken only
# where the directory and the bytes the names are read from are the same as
# when they were decoded; the table seen last is checked first, in place.
_DIRECTORIES = {}
_DIRECTORIES_MAX = 512
_last = (b"\xff", 0, b"", {})


def _text(buf, off, length):
    try:
        return str(buf[off : off + length], "utf-8")
    except UnicodeDecodeError:
        raise FormatError("utf8") from None


def _column_names(buf, n):
    """{name: index} of the columns; the first of equal names wins."""
    global _last
    directory, lo, blob, names = _last
    if buf.startswith(directory, _HEADER_LEN) and len(directory) == 8 * n and buf.startswith(blob, lo):
        return names
    directory = buf[_HEADER_LEN : _HEADER_LEN + 8 * n]
    hit = _DIRECTORIES.get(directory)
    if hit is not None and buf.startswith(hit[2], hit[1]):
        _last = hit
        return hit[3]
    names = {}
    size = len(buf)
    lo, hi, complete = size, 0, True
    for i, (off, length, _type, _flags) in enumerate(_COLUMN.iter_unpack(directory)):
        end = off + length
        name = ""
        if end <= size:
            try:
                name = str(buf[off:end], "utf-8")
                lo, hi = min(lo, off), max(hi, end)
            except UnicodeDecodeError:
                complete = False
        else:
            complete = False
        names.setdefault(name, i)
    if complete:
        if len(_DIRECTORIES) >= _DIRECTORIES_MAX:
            _DIRECTORIES.clear()
        lo = min(lo, hi)
        _last = _DIRECTORIES[directory] = (directory, lo, buf[lo:hi], names)
    return names


# The first 8 bytes of a change -> (op, column count, flags, before, after,
# row, bytes the index needs): a handler sees a few kinds of change (its
# tables' widths, times the ops), each thousands of times.
_LAYOUTS = {}
_LAYOUTS_MAX = 256


def _layout(buf):
    """The layout of the change ``buf`` (see _LAYOUTS); raises
    :class:`~rowhook_guest.errors.FormatError` where its header is wrong."""
    if len(buf) < _HEADER_LEN:
        raise FormatError("truncated")
    magic, op, flags, n = _FRONT(buf)
    if magic != _MAGIC or not 0 < op < 5:
        raise FormatError("magic", repr(magic)) if magic != _MAGIC else FormatError("op", str(op))
    at = _HEADER_LEN + 8 * n
    before = after = -1
    if flags & _FLAG_BEFORE:
        before = at
        at += 9 * n
    if flags & _FLAG_AFTER:
        after = at
        at += 9 * n
    layout = (_OPS[op], n, flags, before, after, after if after >= 0 else before, at)
    if len(_LAYOUTS) >= _LAYOUTS_MAX:
        _LAYOUTS.clear()
    _LAYOUTS[bytes(buf[:8])] = layout
    return layout


class Change:
    """One row change, read in place from its encoding.

    ``Change(buf)`` checks the header's magic, version and operation and
    that the index fits the buffer, and raises
    :class:`~rowhook_guest.errors.FormatError` if they are wrong. The
    header's texts (id, GTID, file, db, table) are checked together the
    first time one of them is read, and each value when it is read: a
    handler pays only for what it reads.

    ``change["col"]`` reads a column of the row as it is after the change,
    or as it was before a delete; :attr:`before` and :attr:`after` are the
    images as mappings (``None`` where the change has none). :attr:`op` is
    ``"insert"``, ``"update"``, ``"delete"``, or ``"snapshot"``: a row read
    by a snapshot of its table, with an after image only, as an insert has.
    """

    __slots__ = ("_buf", "op", "_n", "_flags", "_before", "_after", "_row", "_names", "_header")

    def __init__(self, buf):
        # What the first 8 bytes (magic, version, operation, flags, column
        # count) say of the layout, worked out once per kind of change.
        try:
            layout = _LAYOUTS.get(buf[:8])
        except TypeError:  # a bytearray: its slices are no dict keys
            layout = None
        if layout is None:
            layout = _layout(buf)
        self.op, self._n, self._flags, self._before, self._after, self._row, size = layout
        if len(buf) < size:
            raise FormatError("truncated")
        self._buf = buf
        self._names = None
        self._header = None

    # The header.

    def _head(self):
        header = self._header
        if header is None:
            header = self._header = _read_header(self._buf, self._flags)
        return header

    @property
    def id(self):
        """The change's stable id, ``<txn>:<event>:<row>``: the same every
        time the same binlog is replayed, so a sink can deduplicate on it.
        A snapshot's is ``snapshot:<db>.<table>:<chunk>:<row>``."""
        return (self._header or self._head())[0]

    @property
    def gtid(self):
        """The transaction's GTID, where the server wrote one, else ``None``."""
        return (self._header or self._head())[1]

    @property
    def file(self):
        """The binlog file of the rows event."""
        return (self._header or self._head())[2]

    @property
    def db(self):
        """The schema (database) name."""
        return (self._header or self._head())[3]

    @property
    def table(self):
        """The table name."""
        return (self._header or self._head())[4]

    @property
    def ts(self):
        """The rows event's header timestamp, seconds since the epoch."""
        return (self._header or self._head())[5]

    @property
    def event_index(self):
        """Index of the rows event within the transaction, from 0 (of the
        chunk, for a snapshot)."""
        return (self._header or self._head())[6]

    @property
    def row_index(self):
        """Index of the row within its rows event, from 0 (within the chunk,
        for a snapshot)."""
        return (self._header or self._head())[7]

    @property
    def txn(self):
        """The transaction part of the id: its GTID, or ``<file>/<pos>`` of
        its first event where the server wrote none; ``snapshot:<db>.<table>``
        for a snapshot."""
        header = self._header or self._head()
        return header[0].encode()[: header[8]].decode()

    @property
    def pos(self):
        """Offset of the rows event in its binlog file."""
        return (self._header or self._head())[9]

    def check(self):
        """Checks the header's texts now (they are checked when first read);
        raises :class:`~rowhook_guest.errors.FormatError`."""
        self._head()

    @property
    def has_column_names(self):
        """Whether column names come from the binlog; if not, they are
        ``@1``, ``@2``, ... by position (``binlog_row_metadata=MINIMAL``)."""
        return bool(self._flags & _FLAG_NAMES)

    @property
    def columns(self):
        """The table's columns, in table order, as :class:`Column`."""
        buf, size = self._buf, len(self._buf)
        out = []
        directory = buf[_HEADER_LEN : _HEADER_LEN + 8 * self._n]
        for off, length, type_code, flags in _COLUMN.iter_unpack(directory):
            name = ""
            if off + length <= size:
                try:
                    name = str(buf[off : off + length], "utf-8")
                except UnicodeDecodeError:
                    pass
            out.append(Column(name, type_code, bool(flags & 1), bool(flags & 2)))
        return out

    # The images.

    @property
    def before(self):
        """The row before the change (update, delete), or ``None``."""
        return Row(self, self._before, "before") if self._before >= 0 else None

    @property
    def after(self):
        """The row after the change (insert, update), or as a snapshot read
        it, or ``None``."""
        return Row(self, self._after, "after") if self._after >= 0 else None

    @property
    def row(self):
        """The image ``change[...]`` reads: after, or before for a delete."""
        return self.after if self._after >= 0 else self.before

    def __getitem__(self, name):
        """Column ``name`` of the row after the change (before, for a delete)."""
        names = self._names
        if names is None:
            names = self._names = _column_names(self._buf, self._n)
        i = names.get(name)
        if i is None:
            raise NoColumnError(f"{self.db}.{self.table}", name)
        value = _decode(self._buf, self._row + 9 * i, i)
        if value is _ABSENT:
            raise NotInImageError(name, "after" if self._after >= 0 else "before")
        return value

    def get(self, name, default=None):
        """Like ``change[name]``, but ``default`` where the table has no such
        column or the image lacks it."""
        i = self._names_index().get(name)
        if i is None:
            return default
        value = _decode(self._buf, self._row + 9 * i, i)
        return default if value is _ABSENT else value

    def __contains__(self, name):
        i = self._names_index().get(name)
        return i is not None and self._buf[self._row + 9 * i] != 0

    def changed(self, name):
        """Whether an update changed column ``name``: its before and after
        values differ (floats compared bit for bit, so an unchanged NaN is
        no change). False for inserts, deletes and snapshots, and where
        either image lacks the column."""
        if self._before < 0 or self._after < 0:
            return False
        i = self._index(name)
        buf = self._buf
        pb = self._before + 9 * i
        pa = self._after + 9 * i
        b = _decode(buf, pb, i)
        a = _decode(buf, pa, i)
        if b is _ABSENT or a is _ABSENT:
            return False
        tag = buf[pb]
        if tag != buf[pa]:
            return True
        if tag == 4 or tag == 5:
            return buf[pb + 1 : pb + 9] != buf[pa + 1 : pa + 9]
        return b != a

    def to_json(self):
        """The whole change as one line of row change JSON (no newline), as
        ``rowhook inspect`` prints it and sinks receive it by default. Reads
        every column: a handler that needs a few does better with
        ``change[...]``."""
        from .jsonline import change_json

        return change_json(self)

    def __repr__(self):
        return f"<Change {self.op} {self.db}.{self.table} {self.id}>"

    # The reader.

    def _names_index(self):
        names = self._names
        if names is None:
            names = self._names = _column_names(self._buf, self._n)
        return names

    def _index(self, name):
        i = self._names_index().get(name)
        if i is None:
            raise NoColumnError(f"{self.db}.{self.table}", name)
        return i

    def _value(self, base, i):
        """The value of column ``i`` in the image at ``base``, or _ABSENT."""
        return _decode(self._buf, base + 9 * i, i)


def _read_header(buf, flags):
    """(id, gtid, file, db, table, ts, event index, row index, txn length,
    pos), the texts checked: spans inside the buffer, UTF-8, the txn length
    on a character boundary of the id."""
    ts, event, row, txn_len, pos, io, il, go, gl, fo, fl, do, dl, to, tl = _REST(buf, 8)
    if not flags & _FLAG_GTID:
        go = gl = 0
    size = len(buf)
    if max(io + il, fo + fl, do + dl, to + tl, go + gl) > size or txn_len > il:
        raise FormatError("span")
    if txn_len < il and 0x80 <= buf[io + txn_len] < 0xC0:
        raise FormatError("span", "txn length")
    gtid = _text(buf, go, gl) if flags & _FLAG_GTID else None
    return (_text(buf, io, il), gtid, _text(buf, fo, fl), _text(buf, do, dl), _text(buf, to, tl), ts, event, row, txn_len, pos)


# Tags whose value is text passed on as ``str``, the most read kind.
_PLAIN_TEXT = frozenset([7, 9, 10, 11, 12, 14, 15])


def _decode(buf, p, i):
    """The value of the entry at ``p`` (column ``i``), or _ABSENT."""
    tag = buf[p]
    if tag in _PLAIN_TEXT:
        off, length = _SPAN(buf, p + 1)
        end = off + length
        if end > len(buf):
            raise FormatError("span", f"value of column {i}")
        try:
            return buf[off:end].decode()
        except UnicodeDecodeError:
            raise FormatError("utf8", f"value of column {i}") from None
    if tag < 6:
        if tag == 2:
            return _I64(buf, p + 1)[0]
        if tag == 3:
            return _U64(buf, p + 1)[0]
        if tag == 1:
            return None
        if tag == 0:
            return _ABSENT
        if tag == 5:
            return _F64(buf, p + 1)[0]
        return Float32(_F64(buf, p + 1)[0])
    if tag == 16:
        return _U64(buf, p + 1)[0]
    if tag > 17:
        raise FormatError("tag", f"tag {tag} of column {i}")
    # Decimal, bytes, JSON, vector: spans with a type of their own.
    off, length = _SPAN(buf, p + 1)
    end = off + length
    if end > len(buf):
        raise FormatError("span", f"value of column {i}")
    if tag == 8:
        return buf[off:end]
    if tag == 17:
        floats = array("f")
        floats.frombytes(buf[off : end - (length & 3)])
        return floats
    try:
        text = buf[off:end].decode()
    except UnicodeDecodeError:
        raise FormatError("utf8", f"value of column {i}") from None
    return Decimal(text) if tag == 6 else JsonText(text)


class Row(Mapping):
    """One image of a change, as a read-only mapping from column name to
    value. It holds the columns present in the image, in table order."""

    __slots__ = ("_change", "_base", "image")

    def __init__(self, change, base, image):
        self._change = change
        self._base = base
        self.image = image

    def __getitem__(self, name):
        c = self._change
        value = c._value(self._base, c._index(name))
        if value is _ABSENT:
            raise NotInImageError(name, self.image)
        return value

    def get(self, name, default=None):
        c = self._change
        i = c._names_index().get(name)
        if i is None:
            return default
        value = c._value(self._base, i)
        return default if value is _ABSENT else value

    def __contains__(self, name):
        c = self._change
        i = c._names_index().get(name)
        return i is not None and c._buf[self._base + 9 * i] != 0

    def __iter__(self):
        for column in self._present():
            yield column.name

    def __len__(self):
        return len(self._present())

    def items(self):
        """(name, value) of the columns present, in table order."""
        c = self._change
        return [(col.name, c._value(self._base, i)) for i, col in self._present_indexed()]

    def values(self):
        return [value for _name, value in self.items()]

    def value_at(self, i):
        """The value of the ``i``-th column (from 0); raises
        :class:`~rowhook_guest.errors.NotInImageError` where the image lacks it."""
        c = self._change
        if not 0 <= i < c._n:
            raise IndexError(f"column {i} of a table of {c._n} columns")
        value = c._value(self._base, i)
        if value is _ABSENT:
            raise NotInImageError(f"@{i + 1}", self.image)
        return value

    def _present_indexed(self):
        buf, base = self._change._buf, self._base
        return [(i, col) for i, col in enumerate(self._change.columns) if buf[base + 9 * i] != 0]

    def _present(self):
        return [col for _i, col in self._present_indexed()]

    def __repr__(self):
        return f"<Row {self.image} of {self._change!r}>"

