#!/usr/bin/env python3
"""Writes what the C reader must make of each test vector, one fact a line.

Reads every `*.json` of the vectors directory (guest-sdk/abi/SPEC.md, "Test
vectors") and prints, per vector, the lines test_vectors.c prints for its
decode of the `.bin`, so the two compare line by line. Every field a vector's
JSON states is turned into a line (`source` and `description` say where a
vector comes from and are not decoded); a key this script does not know
stops it, so a new field in the vectors cannot go unchecked. Texts are
written as hex, so any byte compares exactly.

Usage: expect.py VECTORS_DIR > expected.txt
"""

import json
import pathlib
import sys

HEADER = ["op", "flags", "id", "txn", "event_index", "row_index", "gtid", "file", "pos", "ts", "db", "table",
          "has_column_names", "columns", "before", "after"]
TEXTS = {"id", "txn", "gtid", "file", "db", "table"}
VALUE_KEYS = {"int", "uint", "f64_bits", "text", "hex"}
ERRORS = {"truncated", "magic", "op", "tag", "span", "utf8"}


def fail(name, what):
    sys.exit(f"expect.py: vector {name}: {what}; teach test/expect.py and test_vectors.c about it")


def hexs(text):
    return text.encode("utf-8").hex() if text else "-"


def check_keys(name, obj, known, where):
    unknown = set(obj) - set(known)
    if unknown:
        fail(name, f"unknown key(s) {sorted(unknown)} in {where}")


def value_line(name, image, i, v):
    check_keys(name, v, {"tag"} | VALUE_KEYS, f"{image}[{i}]")
    payload = [k for k in v if k != "tag"]
    if len(payload) > 1:
        fail(name, f"{image}[{i}] has several payloads {payload}")
    line = f"value {image} {i} tag {v['tag']}"
    for k in payload:
        line += f" {k} {hexs(v[k]) if k == 'text' else v[k]}"
    return line


def lines(name, doc):
    if "error" in doc:
        check_keys(name, doc, {"description", "error", "at"}, "the vector")
        if doc["error"] not in ERRORS:
            fail(name, f"unknown error {doc['error']!r}")
        at = doc["at"]
        if at == "parse":
            yield f"error {doc['error']} parse"
        else:
            check_keys(name, at, {"image", "column"}, "at")
            yield f"error {doc['error']} {at['image']} {at['column']}"
        return
    check_keys(name, doc, {"source", "json", "expect"}, "the vector")
    e = doc["expect"]
    check_keys(name, e, HEADER, "expect")
    missing = set(HEADER) - set(e)
    if missing:
        fail(name, f"expect lacks {sorted(missing)}")
    for k in HEADER[:13]:
        v = e[k]
        if k in TEXTS:
            v = "null" if v is None else hexs(v)
        elif isinstance(v, bool):
            v = "true" if v else "false"
        yield f"{k} {v}"
    yield f"column_count {len(e['columns'])}"
    for i, col in enumerate(e["columns"]):
        check_keys(name, col, {"name", "type_code", "primary_key", "nullable"}, f"columns[{i}]")
        yield (f"column {i} {hexs(col['name'])} {col['type_code']} "
               f"{'pk' if col['primary_key'] else '-'} {'nullable' if col['nullable'] else '-'}")
    for image in ("before", "after"):
        values = e[image]
        if values is None:
            yield f"{image} null"
            continue
        yield f"{image} {len(values)}"
        for i, v in enumerate(values):
            yield value_line(name, image, i, v)
    yield f"json {hexs(doc['json'])}"


def main():
    root = pathlib.Path(sys.argv[1])
    names = sorted(p.stem for p in root.glob("*.json"))
    if not names:
        sys.exit(f"expect.py: no vectors in {root}")
    for name in names:
        doc = json.loads((root / f"{name}.json").read_text())
        print(f"vector {name}")
        for line in lines(name, doc):
            print(line)
        print("end")


if __name__ == "__main__":
    main()
