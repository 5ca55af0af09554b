"""Count registrations per day, live, for a dashboard (the Python twin of
examples/handlers/daily-signups).

Who: whoever watches sign-ups: a dashboard that shows today's number as it
grows, without a `SELECT COUNT(*) ... GROUP BY` every few seconds.

In: inserts into `shop.user_info` (the config subscribes to inserts only;
anything else that reaches the handler is ignored). The day is the date part
of `created_at`.

Out: the count per day is kept in the handler's state (counter
`signups:<day>`), which rowhook commits together with its position, so a
restart never counts a registration twice. After each registration:
- the gauge of the day, `signups_2025_11_21`, and the gauge
  `signups_latest_day` are set to that day's count (the dashboard draws a
  bar and a line per day);
- the line `{"day":"2025-11-21","signups":2}` goes to the sink `signups`,
  keyed by the day, so a keyed store (or a reader of the lines) keeps the
  latest count of each day.

Build: `python3 -m rowhook_guest build examples/python/daily-signups/daily_signups.py
-o examples/python/target/daily_signups.wasm`; run: `examples/daily-signups-py.toml`.
"""

import re

from rowhook_guest import INSERT, emit, handler, metrics, state

# The sink the running counts go to; the config must grant it.
SINK = "signups"

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def day_of(created_at):
    """`YYYY-MM-DD` from a DATE, DATETIME or TIMESTAMP value."""
    day = created_at[:10]
    if not _DAY.fullmatch(day):
        raise ValueError(f"created_at `{created_at}` does not start with a date")
    return day


@handler
def on_change(c):
    if c.op != INSERT:
        return
    day = day_of(c["created_at"])
    count = state.increment(f"signups:{day}")
    metrics.gauge_set("signups_" + day.replace("-", "_"), count)
    metrics.gauge_set("signups_latest_day", count)
    emit(SINK, {"day": day, "signups": count}, key=day)
