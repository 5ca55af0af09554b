"""The handler API: reading a change, the capabilities, and how a handler's
failure reaches rowhook, through the in-memory recorder."""

import unittest
from decimal import Decimal

import rowhook_guest
from rowhook_guest import (
    Change,
    EmitError,
    FormatError,
    NoColumnError,
    NotInImageError,
    StateError,
    emit,
    handler,
    log,
    metrics,
    state,
    testing,
)
from rowhook_guest.testing import ChangeBuilder


def update():
    return (
        ChangeBuilder.update("shop", "orders")
        .at("mysql-bin.000003", 1234, ts=1_763_712_000, gtid="0-1-42", event_index=2, row_index=5)
        .primary_key("id")
        .column("id", 7)
        .before("status", "new", tag="enum")
        .column("status", "paid", tag="enum")
        .column("amount", Decimal("12.50"))
        .column("note", None)
        .build()
    )


class Reading(unittest.TestCase):
    def test_header_and_columns(self):
        c = Change(update())
        self.assertEqual((c.op, c.db, c.table), ("update", "shop", "orders"))
        self.assertEqual((c.id, c.txn, c.gtid), ("0-1-42:2:5", "0-1-42", "0-1-42"))
        self.assertEqual((c.event_index, c.row_index), (2, 5))
        self.assertEqual((c.file, c.pos, c.ts), ("mysql-bin.000003", 1234, 1_763_712_000))
        self.assertEqual([(col.name, col.primary_key) for col in c.columns], [
            ("id", True), ("status", False), ("amount", False), ("note", False)
        ])
        self.assertEqual(c["id"], 7)
        self.assertEqual(c.before["status"], "new")
        self.assertEqual(c.after["status"], "paid")
        self.assertEqual(c["amount"], Decimal("12.50"))
        self.assertEqual(str(c["amount"]), "12.50")
        self.assertIsNone(c["note"])
        self.assertTrue(c.changed("status"))
        self.assertFalse(c.changed("id"))
        self.assertEqual(dict(c.after), {"id": 7, "status": "paid", "amount": Decimal("12.50"), "note": None})
        self.assertEqual(list(c.before), ["id", "status", "amount", "note"])

    def test_a_delete_reads_the_row_it_removed(self):
        c = Change(ChangeBuilder.delete("shop", "orders").column("id", -1).build())
        self.assertEqual(c["id"], -1)
        self.assertIsNone(c.after)
        self.assertFalse(c.changed("id"))
        c = Change(ChangeBuilder.insert("shop", "orders").column("id", 1).build())
        self.assertIsNone(c.before)
        self.assertEqual(c.after["id"], 1)

    def test_a_snapshot_reads_like_an_insert(self):
        buf = (
            ChangeBuilder.snapshot("shop", "orders")
            .at("mysql-bin.000003", 1234, ts=1_763_719_200, event_index=3, row_index=17)
            .primary_key("id")
            .column("id", 7)
            .column("status", "paid", tag="enum")
            .build()
        )
        self.assertEqual(buf[4], 4)
        c = Change(buf)
        self.assertEqual(c.op, rowhook_guest.SNAPSHOT)
        self.assertEqual((c.id, c.txn, c.gtid), ("snapshot:shop.orders:3:17", "snapshot:shop.orders", None))
        self.assertEqual((c.event_index, c.row_index), (3, 17))
        self.assertEqual((c.file, c.pos, c.ts), ("mysql-bin.000003", 1234, 1_763_719_200))
        self.assertIsNone(c.before)
        self.assertEqual(c.row.image, "after")
        self.assertEqual(c["id"], 7)
        self.assertEqual(c.after["status"], "paid")
        self.assertFalse(c.changed("status"))
        self.assertEqual(
            c.to_json(),
            '{"id":"snapshot:shop.orders:3:17","op":"snapshot","db":"shop","table":"orders","ts":1763719200,'
            '"gtid":null,"file":"mysql-bin.000003","pos":1234,"before":null,"after":{"id":7,"status":"paid"}}',
        )
        with self.assertRaises(ValueError):
            ChangeBuilder.snapshot("shop", "orders").at("mysql-bin.000003", 4, gtid="0-1-1")

    def test_lookup_errors_name_the_column(self):
        c = Change(update())
        with self.assertRaises(NoColumnError) as caught:
            c["nope"]
        self.assertEqual(str(caught.exception), "table `shop.orders` has no column `nope`")
        self.assertIsInstance(caught.exception, KeyError)
        self.assertIsNone(c.get("nope"))
        self.assertEqual(c.after.get("nope", 0), 0)
        self.assertNotIn("nope", c)

    def test_absent_columns_are_not_null(self):
        buf = bytearray(update())
        # Clear the after entry of `note` (column 3): a MINIMAL row image.
        after = 72 + 4 * 8 + 4 * 9
        buf[after + 3 * 9] = 0
        c = Change(bytes(buf))
        with self.assertRaises(NotInImageError) as caught:
            c["note"]
        self.assertIn("not in the after image", str(caught.exception))
        self.assertNotIn("note", c.after)
        self.assertIn("note", c.before)
        self.assertEqual(len(c.after), 3)
        self.assertEqual(c.get("note", "absent"), "absent")
        self.assertFalse(c.changed("note"))

    def test_malformed_buffers(self):
        buf = update()
        for cut, kind in ((40, "truncated"), (72 + 8, "truncated")):
            with self.assertRaises(FormatError) as caught:
                Change(buf[:cut])
            self.assertEqual(caught.exception.kind, kind)
        with self.assertRaises(FormatError) as caught:
            Change(buf[:3] + b"\x02" + buf[4:])
        self.assertEqual(caught.exception.kind, "magic")
        # Tags are checked when read.
        bad = bytearray(buf)
        bad[72 + 4 * 8] = 99
        c = Change(bytes(bad))
        with self.assertRaises(FormatError) as caught:
            c.before["id"]
        self.assertEqual(caught.exception.kind, "tag")
        self.assertEqual(c.after["id"], 7)

    def test_the_layout_cache_checks_every_buffer(self):
        # A change of the same kind (first 8 bytes) as one read before
        # still has its length, magic and operation checked.
        buf = update()
        self.assertEqual(Change(buf).op, "update")
        for cut in (8, 40, 71, 72 + 8 * 4, 72 + 8 * 4 + 9 * 4 * 2 - 1):
            with self.assertRaises(FormatError) as caught:
                Change(buf[:cut])
            self.assertEqual(caught.exception.kind, "truncated", cut)
        for op in (0, 5, 255):
            with self.assertRaises(FormatError) as caught:
                Change(buf[:4] + bytes([op]) + buf[5:])
            self.assertEqual(caught.exception.kind, "op")
        self.assertEqual(Change(buf[:4] + bytes([3]) + buf[5:]).op, "delete")
        self.assertEqual(Change(buf[:4] + bytes([4]) + buf[5:]).op, "snapshot")
        with self.assertRaises(FormatError):
            Change(b"RHC")
        with self.assertRaises(FormatError):
            Change(b"")

    def test_the_directory_cache_tells_tables_apart(self):
        # Same directory bytes, other names behind them: no stale hit.
        a = ChangeBuilder.insert("d", "t").column("aa", 1).column("bb", 2).build()
        b = ChangeBuilder.insert("d", "t").column("bb", 1).column("aa", 2).build()
        self.assertEqual(a[72:88], b[72:88])
        self.assertEqual(Change(a)["aa"], 1)
        self.assertEqual(Change(b)["aa"], 2)
        self.assertEqual(Change(a)["aa"], 1)

    def test_the_whole_change_as_json(self):
        c = Change(ChangeBuilder.insert("shop", "t").column("id", 3).column("b", b"\x00\xff").build())
        self.assertEqual(
            c.to_json(),
            '{"id":"0-1-1:0:0","op":"insert","db":"shop","table":"t","ts":0,"gtid":"0-1-1",'
            '"file":"mysql-bin.000001","pos":4,"before":null,"after":{"id":3,"b":"AP8="}}',
        )


class Capabilities(unittest.TestCase):
    def setUp(self):
        testing.reset()

    def test_emit_sends_bytes_and_text_as_they_are_and_dicts_as_json(self):
        emit("a", b"\x01raw")
        emit("a", "text", key="k")
        emit("a", {"id": 1, "amount": Decimal("2.50")})
        self.assertEqual(
            [(m.sink, m.key, m.payload) for m in testing.messages()],
            [("a", None, b"\x01raw"), ("a", "k", b"text"), ("a", None, b'{"id":1,"amount":"2.50"}')],
        )
        with self.assertRaisesRegex(TypeError, "emit takes bytes, str, or a dict"):
            emit("a", 5)

    def test_emit_errors_are_exceptions_naming_the_sink(self):
        testing.grant("granted")
        with self.assertRaises(EmitError) as caught:
            emit("other", b"x")
        self.assertEqual(caught.exception.reason, "denied")
        self.assertTrue(str(caught.exception).startswith("emit to sink `other`: denied"))
        testing.set_emit_limit(1)
        emit("granted", b"x")
        with self.assertRaises(EmitError) as caught:
            emit("granted", b"y")
        self.assertEqual(caught.exception.reason, "quota")

    def test_state(self):
        self.assertIsNone(state.get("k"))
        state.set("k", "v")
        self.assertEqual(state.get("k"), b"v")
        self.assertEqual(state.get_str("k"), "v")
        self.assertEqual(state.increment("n", 5), 5)
        self.assertEqual(state.increment("n", -2), 3)
        self.assertEqual(state.counter("n"), 3)
        state.delete("n")
        self.assertEqual(state.counter("n"), 0)
        with self.assertRaises(StateError) as caught:
            state.increment("k")
        self.assertEqual(caught.exception.reason, "not-a-counter")
        self.assertIn("state key `k`", str(caught.exception))

    def test_log_and_metrics(self):
        log.info("paid", order=42, amount=Decimal("1.50"))
        log.warn("odd")
        metrics.counter_add("orders", 2)
        metrics.counter_add("orders")
        metrics.gauge_set("latest", 7)
        self.assertEqual(testing.logs(), [("info", "paid", [("order", "42"), ("amount", "1.50")]), ("warn", "odd", [])])
        self.assertEqual(testing.counters(), {"orders": 3})
        self.assertEqual(testing.gauges(), {"latest": 7.0})


class Failures(unittest.TestCase):
    def setUp(self):
        testing.reset()
        self.addCleanup(setattr, rowhook_guest, "_handler", rowhook_guest._handler)

    def test_an_exception_becomes_the_error_text_and_drops_the_call_s_writes(self):
        @handler
        def on_change(c):
            emit("out", {"id": c["id"]})
            state.increment("seen")
            if c["id"] < 0:
                raise ValueError(f"negative id {c['id']}")

        self.assertIsNone(testing.run(ChangeBuilder.insert("d", "t").column("id", 1).build()))
        err = testing.run(ChangeBuilder.insert("d", "t").column("id", -1).build())
        self.assertEqual(err, "ValueError: negative id -1")
        self.assertEqual(len(testing.messages()), 1)
        self.assertEqual(state.counter("seen"), 1)
        level, message, fields = testing.logs()[-1]
        self.assertEqual((level, message), ("error", "handler raised"))
        self.assertIn("raise ValueError", dict(fields)["traceback"])

    def test_sdk_errors_keep_their_sentence(self):
        @handler
        def on_change(c):
            c["missing"]

        err = testing.run(ChangeBuilder.insert("d", "t").column("id", 1).build())
        self.assertEqual(err, "table `d.t` has no column `missing`")


if __name__ == "__main__":
    unittest.main()
