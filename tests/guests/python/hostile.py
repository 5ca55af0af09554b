"""A Python handler that misbehaves on purpose, one way per table of the
shop binlog, so tests can check each is contained as a Rust handler's is:

- ``news``: loops forever (the deadline stops it);
- ``hits``: raises (the message must reach the dead-letter record);
- ``user_info``: emits far past its quota, swallowing every refusal;
- ``orders``: allocates until memory runs out;
- ``sms_outbox``: emits to a sink it was not granted and reports the
  refusal, then what it sees of the filesystem (nothing) and the clock
  (frozen at the epoch);
- anything else: nothing.
"""

import os
import time

from rowhook_guest import EmitError, emit, handler


@handler
def on_change(c):
    table = c.table
    if table == "news":
        while True:
            c["id"]
    elif table == "hits":
        raise ValueError("hostile handler raises on purpose")
    elif table == "user_info":
        for _ in range(100):
            try:
                emit("out", "flood")
            except EmitError:
                pass
    elif table == "orders":
        hog = []
        while True:
            hog.append(bytearray(b"\x01" * (1 << 20)))
    elif table == "sms_outbox":
        try:
            emit("secret", "stolen")
            emit("out", "NOT DENIED")
        except EmitError as e:
            emit("out", f"denied: {e}")
        try:
            listed = f"ok {len(os.listdir('/'))}"
        except OSError as e:
            listed = type(e).__name__
        emit("out", f"fs: {listed}")
        emit("out", f"clock: {int(time.time())}")
