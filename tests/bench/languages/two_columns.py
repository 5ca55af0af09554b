"""The languages benchmark's handler in Python: reads `id` and `status` of a
`cdcbench.orders` change and emits them as one JSON line."""

from rowhook_guest import emit, handler


@handler
def on_change(c):
    emit("out", {"id": c["id"], "status": c["status"]})
