"""The handler's own key-value state, kept by rowhook across events,
restarts and reloads.

Writes are committed with the checkpoint at the end of the transaction
(never applied twice after a crash) and discarded if the call fails; reads
see every earlier write.

>>> from rowhook_guest import state
>>> state.increment("orders:2025-11-21")
1
>>> state.counter("orders:2025-11-21")
1
"""

import struct

from ._host import host

_COUNTER = struct.Struct("<q")


def _bytes(value, what):
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} is bytes or str, not {type(value).__name__}")


def get(key):
    """The value stored under ``key`` as ``bytes``, or ``None``."""
    return host.state_get(key)


def get_str(key):
    """The value under ``key`` as text, or ``None`` if there is none or it is
    not UTF-8."""
    value = host.state_get(key)
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def counter(key):
    """The counter under ``key`` (see :func:`increment`); 0 if there is none
    or the value is not a counter."""
    value = host.state_get(key)
    if value is None or len(value) != 8:
        return 0
    return _COUNTER.unpack(value)[0]


def set(key, value):
    """Stores ``value`` (``bytes``, or ``str`` as UTF-8) under ``key``.
    Raises :class:`~rowhook_guest.StateError` over the quota or a size limit."""
    host.state_set(key, _bytes(value, "a state value"))


def delete(key):
    """Removes ``key``; removing a missing key is not an error."""
    host.state_delete(key)


def increment(key, delta=1):
    """Adds ``delta`` (may be negative) to the counter under ``key`` (a
    missing key counts as 0) and returns the new value, in one step. The
    counter is stored as 8 little-endian bytes; :func:`counter` reads it."""
    return host.state_increment(key, delta)
