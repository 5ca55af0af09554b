"""JSON out of a handler: one line per document, exact.

:func:`dumps` writes what :func:`rowhook_guest.emit` sends for a ``dict``:
compact (no spaces), keys in insertion order, and fit for a line sink
(``stdout``, ``file``, ``fifo``, which take no control characters): strings
escape ``"``, ``\\``, the C0 controls, DEL and the C1 controls (U+0080 to
U+009F); other characters are written as they are, as UTF-8.

Values are written as the row change JSON shows them, so a column's value
passed on lands in the output as ``rowhook inspect`` would print it:

* ``int`` exactly, ``bool`` as ``true``/``false``, ``None`` as ``null``;
* ``float`` as the shortest text that reads back as the same double
  (``0.1``, ``1e-7``, ``1.5e300``), a FLOAT column's :class:`Float32` as the
  shortest that reads back as the same 32-bit float; NaN and infinities as
  ``null``;
* ``decimal.Decimal`` as a string of its digits (``"12.50"``), never with an
  exponent, so no digit is lost to a double on the reading side;
* ``bytes`` as a base64 string;
* :class:`JsonText` (a JSON column) as the JSON it holds;
* ``dict`` (string keys), ``list`` and ``tuple``, and ``array.array`` of
  floats, as objects and arrays.

Anything else raises ``TypeError`` naming the type.

:func:`change_json` rebuilds the row change JSON of a whole change, byte for
byte what ``rowhook inspect`` prints.
"""

import base64
import math
from array import array
from decimal import Decimal
from json.encoder import encode_basestring
from struct import Struct

from .change import _ABSENT, Float32, JsonText

_F32 = Struct("<f")


def _line_str(s):
    """``s`` quoted, with DEL and the C1 controls escaped besides what JSON
    requires, so the text stays one line of printable UTF-8."""
    quoted = encode_basestring(s)
    if s.isascii():
        if "\x7f" in s:
            quoted = quoted.replace("\x7f", "\\u007f")
        return quoted
    return quoted.translate(_C1)


_C1 = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}


def _shortest(text, limit, low):
    """Lays out ``text`` (a float as Python prints it: shortest digits) the
    way the host's JSON does (ryu): plain up to ``limit`` integer digits or
    down to ``low`` leading zeros, else ``<d>.<ddd>e<exp>``."""
    negative = text[0] == "-"
    if negative:
        text = text[1:]
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    k = (int(exp) if exp else 0) - len(frac)
    if not digits:
        return "-0.0" if negative else "0.0"
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    kk = length + k
    if 0 <= k and kk <= limit:
        out = digits + "0" * k + ".0"
    elif 0 < kk <= limit:
        out = digits[:kk] + "." + digits[kk:]
    elif low < kk <= 0:
        out = "0." + "0" * -kk + digits
    elif length == 1:
        out = f"{digits}e{kk - 1}"
    else:
        out = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return "-" + out if negative else out


def format_f64(x):
    """A double as JSON: shortest round-trip digits; ``null`` if not finite."""
    if not math.isfinite(x):
        return "null"
    return _shortest(float.__repr__(x), 16, -5)


def _round_f32(x):
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return math.inf


def format_f32(x):
    """A 32-bit float (given as the double it widens to) as JSON: the
    shortest digits that read back as the same 32-bit float."""
    if not math.isfinite(x):
        return "null"
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    for precision in range(9):
        text = f"{x:.{precision}e}"
        if _round_f32(float(text)) == x:
            break
    return _shortest(text, 13, -6)


def _base64(b):
    return '"' + base64.b64encode(b).decode("ascii") + '"'


def _write(out, v, quote):
    t = type(v)
    if t is str:
        out.append(quote(v))
    elif t is int:
        out.append(int.__repr__(v))
    elif v is None:
        out.append("null")
    elif t is bool:
        out.append("true" if v else "false")
    elif t is Decimal:
        out.append('"' + format(v, "f") + '"')
    elif t is float:
        out.append(format_f64(v))
    elif t is Float32:
        out.append(format_f32(v))
    elif t is dict:
        out.append("{")
        first = True
        for key, item in v.items():
            if type(key) is not str:
                raise TypeError(f"JSON object keys are strings; got {type(key).__name__} key {key!r}")
            if not first:
                out.append(",")
            first = False
            out.append(quote(key) + ":")
            _write(out, item, quote)
        out.append("}")
    elif t is list or t is tuple:
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _write(out, item, quote)
        out.append("]")
    elif t is JsonText:
        out.append(str.__str__(v))
    elif t is bytes or t is bytearray or t is memoryview:
        out.append(_base64(v))
    elif t is array and v.typecode in "fd":
        fmt = format_f32 if v.typecode == "f" else format_f64
        out.append("[" + ",".join(fmt(x) for x in v) + "]")
    elif isinstance(v, str):
        out.append(quote(str.__str__(v)))
    elif isinstance(v, bool):
        out.append("true" if v else "false")
    elif isinstance(v, int):
        out.append(int.__repr__(v))
    elif isinstance(v, float):
        out.append(format_f64(v))
    elif isinstance(v, dict):
        _write(out, dict(v), quote)
    else:
        raise TypeError(
            f"cannot write {t.__name__} as JSON: use str, int, float, bool, None, "
            "decimal.Decimal, bytes, dict, list or tuple (or emit bytes you encoded)"
        )


# Object keys as written, with their colon: a handler writes the same few
# keys for every change.
_KEYS = {}
_KEYS_MAX = 1024


def _key(key):
    text = _KEYS.get(key)
    if text is None:
        if type(key) is not str:
            raise TypeError(f"JSON object keys are strings; got {type(key).__name__} key {key!r}")
        text = _line_str(key) + ":"
        if len(_KEYS) < _KEYS_MAX:
            _KEYS[key] = text
    return text


def dumps(value):
    """``value`` as one line of compact JSON (no newline)."""
    if type(value) is dict:
        # The common case, a flat object of strings and integers, without
        # the general writer's calls.
        parts = []
        for key, item in value.items():
            name = _KEYS.get(key) or _key(key)
            t = type(item)
            if t is str:
                if item.isascii() and "\x7f" not in item:
                    parts.append(name + encode_basestring(item))
                else:
                    parts.append(name + _line_str(item))
            elif t is int:
                parts.append(name + str(item))
            else:
                out = [name]
                _write(out, item, _line_str)
                parts.append("".join(out))
        return "{" + ",".join(parts) + "}"
    out = []
    _write(out, value, _line_str)
    return "".join(out)


def change_json(change):
    """The row change JSON of ``change`` (no newline), as ``rowhook inspect``
    prints it: the host escapes only ``"``, ``\\`` and the C0 controls."""
    q = encode_basestring
    out = [
        '{"id":',
        q(change.id),
        ',"op":"',
        change.op,
        '","db":',
        q(change.db),
        ',"table":',
        q(change.table),
        ',"ts":',
        str(change.ts),
        ',"gtid":',
        "null" if change.gtid is None else q(change.gtid),
        ',"file":',
        q(change.file),
        ',"pos":',
        str(change.pos),
        ',"before":',
    ]
    _write_image(out, change, change._before)
    out.append(',"after":')
    _write_image(out, change, change._after)
    out.append("}")
    return "".join(out)


def _write_image(out, change, base):
    if base < 0:
        out.append("null")
        return
    out.append("{")
    first = True
    for i, column in enumerate(change.columns):
        value = change._value(base, i)
        if value is _ABSENT:
            continue
        if not first:
            out.append(",")
        first = False
        out.append(encode_basestring(column.name))
        out.append(":")
        _write(out, value, encode_basestring)
    out.append("}")

