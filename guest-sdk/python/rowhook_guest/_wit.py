"""The capability calls of a component: the WIT imports of world `handler`,
through the bindings componentize-py generates at build time.

Each function turns the WIT error case into the SDK's exception.
"""

from componentize_py_types import Err
from wit_world.imports import emit as _emit
from wit_world.imports import log as _log
from wit_world.imports import metrics as _metrics
from wit_world.imports import state as _state

from .errors import EmitError, StateError

_EMIT_REASONS = {e: e.name.lower().replace("_", "-") for e in _emit.EmitError}
_STATE_REASONS = {e: e.name.lower().replace("_", "-") for e in _state.StateError}
LEVELS = (_log.Level.TRACE, _log.Level.DEBUG, _log.Level.INFO, _log.Level.WARN, _log.Level.ERROR)


def emit(sink, key, payload):
    try:
        _emit.emit(sink, key, payload)
    except Err as e:
        raise EmitError(sink, _EMIT_REASONS[e.value]) from None


# emit without the wrapper above, for rowhook_guest.emit (one Python call
# less per message): the binding, what it raises, and the SDK's error for it.
emit_call = _emit.emit
EmitRefused = Err


def emit_error(sink, e):
    return EmitError(sink, _EMIT_REASONS[e.value])


def state_get(key):
    return _state.get(key)


def state_set(key, value):
    try:
        _state.set(key, value)
    except Err as e:
        raise StateError(key, _STATE_REASONS[e.value]) from None


def state_delete(key):
    _state.delete(key)


def state_increment(key, delta):
    try:
        return _state.increment(key, delta)
    except Err as e:
        raise StateError(key, _STATE_REASONS[e.value]) from None


def log(level, message, fields):
    _log.log(LEVELS[level], message, fields)


counter_add = _metrics.counter_add
gauge_set = _metrics.gauge_set
