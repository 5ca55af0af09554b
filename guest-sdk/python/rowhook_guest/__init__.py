"""Write rowhook handlers in Python.

rowhook reads a MySQL or MariaDB binlog and calls your handler once for
every row change of the tables it subscribed to, in binlog order. The
handler looks at the change, and may emit messages to the sinks the
operator granted it, keep counters and values in its own state, log, and
set metrics. It runs as a WebAssembly component in a sandbox: it has no
filesystem, network, environment or clock of its own.

A handler is one function of a :class:`Change`, marked with
:func:`handler`. Returning means the change is handled; an exception fails
it, and rowhook applies the handler's ``on_error`` policy (halt, skip, or
dead-letter) with the exception's text::

    from rowhook_guest import handler, emit

    @handler
    def on_change(c):
        if c.op == "insert":
            emit("sms_queue", {"id": c["id"], "to": c["phone"]}, key=str(c["id"]))

Build it into a component with ``python3 -m rowhook_guest build app.py -o
app.wasm`` and point the ``module`` of a ``[[handlers]]`` entry at the file.
Outside a component, the capabilities record what they are asked in memory
(:mod:`rowhook_guest.testing`), so handlers are unit-tested with plain
``python3``.
"""

from . import log, metrics, state
from .change import DELETE, INSERT, SNAPSHOT, UPDATE, VERSION, Change, Column, Float32, JsonText, Row
from .errors import EmitError, FormatError, NoColumnError, NotInImageError, RowhookError, StateError
from .jsonline import dumps
from ._host import host as _host

_emit_call = _host.emit_call
_EmitRefused = _host.EmitRefused
_emit_error = _host.emit_error

__all__ = [
    "Change",
    "Column",
    "DELETE",
    "EmitError",
    "Float32",
    "FormatError",
    "INSERT",
    "JsonText",
    "NoColumnError",
    "NotInImageError",
    "Row",
    "RowhookError",
    "SNAPSHOT",
    "StateError",
    "UPDATE",
    "VERSION",
    "dumps",
    "emit",
    "handler",
    "log",
    "metrics",
    "state",
]

# The function @handler marked; the component's export calls it.
_handler = None


def handler(fn):
    """Marks ``fn(change)`` as the function rowhook calls for each change.

    One per component: the build fails if the app marks none, and marking a
    second replaces the first."""
    global _handler
    if not callable(fn):
        raise TypeError(f"@handler marks a function of one Change, not {type(fn).__name__}")
    _handler = fn
    return fn


def emit(sink, value, key=None):
    """Sends ``value`` to the sink named ``sink`` (a key of ``[sinks]`` in the
    configuration), with an optional message ``key`` (a Redis or NATS key;
    a file sink ignores it).

    ``bytes`` and ``str`` are sent as they are; a ``dict`` (or ``list``)
    becomes one line of compact JSON (:func:`dumps`). The message goes out
    when the change's transaction has been handled, and only if this call
    to the handler succeeds. Raises :class:`EmitError` when rowhook refuses
    it: ``denied`` for a sink the handler was not granted, ``quota`` past
    ``limits.emits_per_event``, ``invalid`` for a line sink and a payload
    that is not one line of text.
    """
    t = type(value)
    if t is bytes:
        payload = value
    elif t is dict or t is list:
        payload = dumps(value).encode()
    elif t is str:
        payload = value.encode()
    elif isinstance(value, (bytes, bytearray, memoryview)):
        payload = bytes(value)
    elif isinstance(value, str):
        payload = str.__str__(value).encode()
    elif isinstance(value, (dict, list, tuple)):
        payload = dumps(value).encode()
    else:
        raise TypeError(f"emit takes bytes, str, or a dict to send as a JSON line; got {t.__name__}")
    if key is not None and type(key) is not str:
        raise TypeError(f"an emit key is a str or None; got {type(key).__name__}")
    try:
        _emit_call(sink, key, payload)
    except _EmitRefused as e:
        raise _emit_error(sink, e) from None
