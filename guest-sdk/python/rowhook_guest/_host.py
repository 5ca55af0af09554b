"""Where capability calls go: to rowhook through the WIT imports inside a
component (CPython built for WASI), else to the in-memory recorder of
:mod:`rowhook_guest.testing`, so a handler's unit tests run with plain
``python3``."""

import sys

if sys.platform == "wasi":
    from . import _wit as host
else:
    from .testing import _recorder as host

__all__ = ["host"]
