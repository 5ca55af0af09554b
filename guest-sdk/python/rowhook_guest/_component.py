"""The export of world `handler`, for componentize-py.

``python3 -m rowhook_guest build`` makes the component's entry module
import the app (whose @handler marks its function) and then this module,
whose :class:`WitWorld` is the class componentize-py exports. Both imports
run at build time, when componentize-py snapshots the initialised
interpreter, so a call pays for nothing but the change.
"""

import wit_world
from componentize_py_types import Err

from ._export import failure, handler_function
from .change import Change

_handler = handler_function()


class WitWorld(wit_world.WitWorld):
    def on_change(self, change: bytes) -> None:
        try:
            _handler(Change(change))
        except BaseException as e:
            raise Err(failure(e)) from None
