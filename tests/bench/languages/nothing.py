"""The languages benchmark's do-nothing handler in Python: the SDK parses
the change, and nothing else happens."""

from rowhook_guest import handler


@handler
def on_change(c):
    pass
