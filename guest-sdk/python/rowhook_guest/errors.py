"""What can go wrong in a handler, as exceptions.

Every exception a handler lets escape fails the change it was given:
rowhook gets the exception's text as the WIT `err(message)` and applies the
handler's `on_error` policy. The SDK's own exceptions derive from
:class:`RowhookError`, so a handler can catch them apart from its own; the
lookup errors also derive from :class:`KeyError`, so a row behaves like any
other mapping.
"""


class RowhookError(Exception):
    """Base of the exceptions the SDK raises."""


class FormatError(RowhookError, ValueError):
    """The change buffer is not in the row change encoding this SDK reads.

    ``kind`` names the fault as SPEC.md and the test vectors do:
    ``truncated``, ``magic``, ``op``, ``span``, ``utf8`` or ``tag``.
    """

    _TEXT = {
        "truncated": "the buffer is shorter than its header and index say",
        "magic": "not a row change of version 1 (rowhook and rowhook-guest of different versions?)",
        "op": "unknown operation code",
        "span": "a span points outside the buffer",
        "utf8": "a text is not UTF-8",
        "tag": "unknown value tag",
    }

    def __init__(self, kind, detail=""):
        self.kind = kind
        text = f"malformed row change: {self._TEXT[kind]}"
        super().__init__(f"{text} ({detail})" if detail else text)


class _LookupError(RowhookError, KeyError):
    # KeyError's str() is the repr of its argument; these carry sentences.
    def __str__(self):
        return self.args[0]


class NoColumnError(_LookupError):
    """The table has no column of this name."""

    def __init__(self, table, column):
        self.column = column
        super().__init__(f"table `{table}` has no column `{column}`")


class NotInImageError(_LookupError):
    """The column is not in this image: the server logs a MINIMAL row image
    and the statement did not touch it. (SQL NULL is a value, ``None``.)"""

    def __init__(self, column, image):
        self.column = column
        self.image = image
        super().__init__(
            f"column `{column}` is not in the {image} image "
            "(the server logs binlog_row_image=MINIMAL; read it with `in` or .get() first)"
        )


class EmitError(RowhookError):
    """A sink did not accept a message; nothing reached any sink.

    ``reason`` is the WIT `emit-error` case: ``denied``, ``quota``,
    ``unavailable``, ``too-large`` or ``invalid``.
    """

    _TEXT = {
        "denied": "denied (the handler has no grant for this sink: add it to the handler's `sinks` in the config)",
        "quota": "emit quota of this event reached (limits.emits_per_event or limits.emit_mb_per_event); stop emitting",
        "unavailable": "sink unavailable",
        "too-large": "message too large (payload over 16 MiB or key over 64 KiB, or over what the sink takes)",
        "invalid": (
            "payload not valid for this sink: a line sink (stdout, file, fifo) takes one line of UTF-8 "
            "text with no control character but tab (no \\n, \\r, NUL or ESC)"
        ),
    }

    def __init__(self, sink, reason):
        self.sink = sink
        self.reason = reason
        super().__init__(f"emit to sink `{sink}`: {self._TEXT[reason]}")


class StateError(RowhookError):
    """A state operation was refused; nothing changed.

    ``reason`` is the WIT `state-error` case: ``too-large``, ``quota``,
    ``not-a-counter`` or ``overflow``.
    """

    _TEXT = {
        "too-large": "key or value too large",
        "quota": "state quota reached (limits.state_mb); delete keys or store less",
        "not-a-counter": "value is not a counter (8 bytes written by increment)",
        "overflow": "counter overflow (past a signed 64-bit integer)",
    }

    def __init__(self, key, reason):
        self.key = key
        self.reason = reason
        super().__init__(f"state key `{key}`: {self._TEXT[reason]}")
