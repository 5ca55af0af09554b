"""The reader against every test vector of ``guest-sdk/abi/vectors`` (SPEC.md,
"Test vectors"): valid vectors decode to their ``expect`` object and rebuild
their row change JSON byte for byte; malformed ones are rejected with the
named error, where the vector says.
"""

import json
import struct
import unittest
from array import array
from decimal import Decimal
from pathlib import Path

from rowhook_guest import DELETE, INSERT, SNAPSHOT, UPDATE, Change, Float32, FormatError, JsonText

VECTORS = Path(__file__).resolve().parents[2] / "abi" / "vectors"


def vectors():
    names = sorted(p.stem for p in VECTORS.glob("*.json"))
    if not names:
        raise RuntimeError(f"no test vectors in {VECTORS}")
    for name in names:
        yield name, (VECTORS / f"{name}.bin").read_bytes(), json.loads((VECTORS / f"{name}.json").read_text())


def tag_of(change, image, i):
    """The tag byte of a value entry, read from the layout (SPEC.md) to check
    that each value came out as the Python type its tag maps to."""
    base = change._before if image == "before" else change._after
    return change._buf[base + 9 * i]


def described(tag, value):
    """A decoded value as the vectors describe one."""
    out = {"tag": tag}
    if tag in (0, 1):
        return out
    if tag == 2:
        assert type(value) is int
        out["int"] = str(value)
    elif tag in (3, 16):
        assert type(value) is int and value >= 0
        out["uint"] = str(value)
    elif tag in (4, 5):
        assert type(value) is (Float32 if tag == 4 else float)
        out["f64_bits"] = struct.pack("<d", value)[::-1].hex()
    elif tag == 8:
        assert type(value) is bytes
        out["hex"] = value.hex()
    elif tag == 17:
        assert type(value) is array and value.typecode == "f"
        out["hex"] = value.tobytes().hex()
    elif tag == 6:
        assert type(value) is Decimal
        out["text"] = format(value, "f")
    else:
        assert type(value) is (JsonText if tag == 13 else str)
        out["text"] = str(value)
    return out


def image_described(change, image):
    row = getattr(change, image)
    if row is None:
        return None
    out = []
    for i in range(len(change.columns)):
        tag = tag_of(change, image, i)
        out.append(described(tag, None if tag in (0, 1) else row.value_at(i)))
    return out


class Vectors(unittest.TestCase):
    def test_valid_vectors_decode_to_their_json(self):
        seen = 0
        ops = set()
        for name, buf, vector in vectors():
            if "expect" not in vector:
                continue
            seen += 1
            with self.subTest(vector=name):
                c = Change(buf)
                e = vector["expect"]
                header = {
                    "op": c.op,
                    "flags": buf[5],
                    "id": c.id,
                    "txn": c.txn,
                    "event_index": c.event_index,
                    "row_index": c.row_index,
                    "gtid": c.gtid,
                    "file": c.file,
                    "pos": c.pos,
                    "ts": c.ts,
                    "db": c.db,
                    "table": c.table,
                    "has_column_names": c.has_column_names,
                }
                self.assertEqual(header, {k: e[k] for k in header})
                columns = [
                    {
                        "name": col.name,
                        "type_code": col.type_code,
                        "primary_key": col.primary_key,
                        "nullable": col.nullable,
                    }
                    for col in c.columns
                ]
                self.assertEqual(columns, e["columns"])
                self.assertEqual(image_described(c, "before"), e["before"])
                self.assertEqual(image_described(c, "after"), e["after"])
                self.assertEqual(c.to_json(), vector["json"])
                ops.add(c.op)
        self.assertGreater(seen, 0)
        self.assertEqual(ops, {INSERT, UPDATE, DELETE, SNAPSHOT}, "every op")

    def test_malformed_vectors_are_rejected(self):
        seen = 0
        for name, buf, vector in vectors():
            if "error" not in vector:
                continue
            seen += 1
            with self.subTest(vector=name):
                at = vector["at"]
                if at == "parse":
                    # The header's texts are checked when first read.
                    with self.assertRaises(FormatError) as caught:
                        Change(buf).check()
                else:
                    c = Change(buf)
                    c.check()
                    row = getattr(c, at["image"])
                    with self.assertRaises(FormatError) as caught:
                        row.value_at(at["column"])
                    # The whole-change JSON reads that value too.
                    with self.assertRaises(FormatError):
                        c.to_json()
                self.assertEqual(caught.exception.kind, vector["error"])
        self.assertGreater(seen, 0)

    def test_every_truncation_fails_cleanly(self):
        for name, buf, vector in vectors():
            if "expect" not in vector:
                continue
            with self.subTest(vector=name):
                for n in range(len(buf)):
                    try:
                        Change(buf[:n]).to_json()
                    except FormatError:
                        pass


if __name__ == "__main__":
    unittest.main()
