"""What the component's `on-change` export does beside calling the handler:
find the @handler function, and turn an exception into the message of the
WIT `err(message)`. Shared by the component (:mod:`rowhook_guest._component`)
and :func:`rowhook_guest.testing.run`.
"""

import traceback

from . import log
from .errors import RowhookError


def handler_function():
    """The function @handler marked; raises if there is none."""
    import rowhook_guest

    fn = rowhook_guest._handler
    if fn is None:
        raise LookupError(
            "no function is marked @rowhook_guest.handler: decorate the function rowhook calls per change"
        )
    return fn


def failure(e):
    """The text rowhook gets for exception ``e``: the SDK's own errors say
    what happened in a sentence; others are prefixed with their type, as
    Python prints them (``KeyError: 'x'``). The traceback of an exception
    of the handler's own goes to the log: the message says what, the
    traceback where."""
    if isinstance(e, RowhookError):
        return str(e)
    text = str(e)
    message = f"{type(e).__name__}: {text}" if text else type(e).__name__
    log.error("handler raised", error=message, traceback="".join(traceback.format_exception(e)))
    return message
