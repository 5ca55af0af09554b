"""The handler's unit tests, with the SDK's in-memory capabilities:
`python3 -m unittest` in this directory (with guest-sdk/python on PYTHONPATH)."""

import unittest

import daily_signups
from rowhook_guest import state, testing
from rowhook_guest.testing import ChangeBuilder


def signup(created_at):
    return ChangeBuilder.insert("shop", "user_info").column("id", 1, tag="uint").column(
        "created_at", created_at, tag="datetime"
    ).build()


def lines():
    return [m.payload.decode() for m in testing.messages()]


class DailySignups(unittest.TestCase):
    def setUp(self):
        testing.reset()

    def test_counts_per_day_in_state_and_emits_a_running_line(self):
        for at in ["2025-11-21 08:00:00", "2025-11-21 09:30:00", "2025-11-22 10:15:00"]:
            self.assertIsNone(testing.run(signup(at)))
        self.assertEqual(
            lines(),
            [
                '{"day":"2025-11-21","signups":1}',
                '{"day":"2025-11-21","signups":2}',
                '{"day":"2025-11-22","signups":1}',
            ],
        )
        self.assertEqual(state.counter("signups:2025-11-21"), 2)
        self.assertEqual(state.counter("signups:2025-11-22"), 1)
        self.assertEqual(testing.messages()[2].key, "2025-11-22")
        self.assertEqual(testing.gauges()["signups_latest_day"], 1.0)
        self.assertEqual(testing.gauges()["signups_2025_11_21"], 2.0)
        self.assertEqual(testing.gauges()["signups_2025_11_22"], 1.0)

    def test_only_inserts_count(self):
        update = ChangeBuilder.update("shop", "user_info").column(
            "created_at", "2025-11-21 08:00:00", tag="datetime"
        ).build()
        self.assertIsNone(testing.run(update))
        self.assertEqual(testing.messages(), [])
        self.assertEqual(testing.state(), {})

    def test_a_failed_emit_counts_nothing(self):
        testing.grant()
        err = testing.run(signup("2025-11-21 08:00:00"))
        self.assertIn("denied", err)
        # rowhook discards the state writes of a failed call, as the recorder does.
        self.assertEqual(state.counter("signups:2025-11-21"), 0)

    def test_days_come_from_dates_and_timestamps(self):
        self.assertEqual(daily_signups.day_of("2025-11-21 08:00:00"), "2025-11-21")
        self.assertEqual(daily_signups.day_of("2025-11-21T08:00:00.250Z"), "2025-11-21")
        self.assertEqual(daily_signups.day_of("2025-11-21"), "2025-11-21")
        for bad in ["", "2025-11", "20251121 08:00", "2025/11/21 08:00:00", "2025-1-210"]:
            with self.assertRaises(ValueError):
                daily_signups.day_of(bad)

    def test_a_bad_date_fails_the_change_with_its_text(self):
        err = testing.run(signup("yesterday"))
        self.assertEqual(err, "ValueError: created_at `yesterday` does not start with a date")


if __name__ == "__main__":
    unittest.main()
