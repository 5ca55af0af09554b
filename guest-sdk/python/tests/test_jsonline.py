"""JSON lines: what emit sends for a dict, and the number layout the host
uses (ryu), checked against values whose host output is known."""

import json
import math
import struct
import unittest
from array import array
from decimal import Decimal

from rowhook_guest import Float32, JsonText, dumps
from rowhook_guest.jsonline import format_f32, format_f64


def f32(x):
    return Float32(struct.unpack("<f", struct.pack("<f", x))[0])


class Numbers(unittest.TestCase):
    def test_doubles_laid_out_like_the_host(self):
        cases = {
            1.0: "1.0",
            -3.5: "-3.5",
            1.1: "1.1",
            100.0: "100.0",
            1e-5: "0.00001",
            1.5e-5: "0.000015",
            1e-6: "1e-6",
            1e-7: "1e-7",
            1.25e-7: "1.25e-7",
            1e15: "1000000000000000.0",
            1e16: "1e16",
            1.2345678e16: "1.2345678e16",
            123456789012345.67: "123456789012345.67",
            5e-324: "5e-324",
            1.7976931348623157e308: "1.7976931348623157e308",
            0.1 + 0.2: "0.30000000000000004",
        }
        for value, text in [(0.0, "0.0"), (-0.0, "-0.0"), *cases.items()]:
            with self.subTest(value=value):
                self.assertEqual(format_f64(value), text)
                self.assertEqual(float(text), value)

    def test_floats_written_as_the_float32_they_are(self):
        cases = {
            1.1: "1.1",
            0.1: "0.1",
            3.4028235e38: "3.4028235e38",
            1e-6: "0.000001",
            1e-7: "1e-7",
            1e12: "1000000000000.0",
            1e13: "1e13",
            16777216.0: "16777216.0",
            1.4e-45: "1e-45",
            -2.5: "-2.5",
        }
        for value, text in cases.items():
            with self.subTest(value=value):
                self.assertEqual(format_f32(f32(value)), text)
                self.assertEqual(f32(float(text)), f32(value))

    def test_not_finite_is_null(self):
        for x in (math.nan, math.inf, -math.inf):
            self.assertEqual(format_f64(x), "null")
            self.assertEqual(format_f32(x), "null")


class Lines(unittest.TestCase):
    def test_a_dict_becomes_one_compact_line(self):
        doc = {
            'a"b': "x\ny\x7f\x85\xa0\x9fé\t\\",
            "i": -3,
            "big": 18446744073709551615,
            "f": math.inf,
            "g": 0.5,
            "h": f32(1.1),
            "t": True,
            "n": None,
            "d": Decimal("-1.50"),
            "small": Decimal("0.0000001"),
            "b": b"ab",
            "j": JsonText('{"k":[1]}'),
            "l": [1, "two", (3,)],
            "v": array("f", [1.5, 0.25]),
        }
        text = dumps(doc)
        # U+00A0 is no control: it stays as it is.
        self.assertEqual(
            text,
            r'{"a\"b":"x\ny\u007f\u0085' + "\xa0" + r'\u009fé\t\\","i":-3,"big":18446744073709551615,'
            r'"f":null,"g":0.5,"h":1.1,"t":true,"n":null,"d":"-1.50","small":"0.0000001",'
            r'"b":"YWI=","j":{"k":[1]},"l":[1,"two",[3]],"v":[1.5,0.25]}',
        )
        self.assertFalse(any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text))
        self.assertEqual(json.loads(text)["a\"b"], doc['a"b'])
        self.assertEqual(dumps({}), "{}")

    def test_ascii_strings_escape_only_what_they_must(self):
        self.assertEqual(dumps("plain"), '"plain"')
        self.assertEqual(dumps('q"\\\x01\x1f\x7f'), r'"q\"\\\u0001\u001f\u007f"')

    def test_what_json_cannot_hold_is_named(self):
        with self.assertRaisesRegex(TypeError, "cannot write set as JSON"):
            dumps({"s": {1}})
        with self.assertRaisesRegex(TypeError, "keys are strings"):
            dumps({1: 2})


if __name__ == "__main__":
    unittest.main()


class FlatObjects(unittest.TestCase):
    def test_the_fast_path_writes_what_the_general_writer_does(self):
        # dumps writes objects of strings and integers from a template per
        # key set; the general writer is the reference for every object.
        from rowhook_guest.jsonline import _line_str, _write

        def reference(value):
            out = []
            _write(out, value, _line_str)
            return "".join(out)

        texts = ["", "paid", "a\"b\\c", "tab\there", "nl\n", "\x00\x1f", "\x7f", "x\x85y", "\x9f\xa0", "é€𝄞", "%s%d%%", "\ud800"]
        keys = ["id", "status", "%", "a%sb", "é", "\x7f", "\x85k", "", "k\"q"]
        values = texts + [0, -1, 2**63, -(2**70), 123456]
        others = [True, None, 1.5, Float32(1.1), Decimal("12.50"), JsonText('{"a":"\x85"}'), b"\x00\xff", [1, "\x85"], {"n": "\x7f"}]
        objects = [{}]
        for i, k in enumerate(keys):
            for j in range(len(values)):
                objects.append({k: values[j], "other": values[(i + j) % len(values)]})
            for o in others:
                objects.append({k: "\x85", "x": o})
                objects.append({"x": o, k: 1})
        objects.append({k: i for i, k in enumerate(keys)})
        objects.append({f"k{i}": i for i in range(100)})
        for _ in range(2):  # the second time from the templates
            for o in objects:
                self.assertEqual(dumps(o), reference(o), repr(o))
        with self.assertRaises(TypeError):
            dumps({1: "x"})
        with self.assertRaises(TypeError):
            dumps({"a": 1, 2: "x"})
