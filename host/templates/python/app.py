"""{{name}}: every new order of `shop.orders` as one JSON line to the sink
`out`, keyed by the order id, and a count of the orders in the handler's
state."""

from rowhook_guest import INSERT, emit, handler, state


@handler
def on_change(c):
    if c.op != INSERT:
        return
    emit("out", {"order": c["id"], "amount": c["amount"]}, key=str(c["id"]))
    state.increment("orders", 1)
