"""The names a component imports, read from its binary (the component
model's top-level import section), so the build can check them against
what rowhook links before rowhook is ever asked to load the file."""


class NotAComponent(ValueError):
    """The file is not a WebAssembly component."""


def _leb(data, p):
    result = shift = 0
    while True:
        if p >= len(data):
            raise NotAComponent("truncated LEB128 number")
        b = data[p]
        p += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, p


def _name(data, p):
    n, p = _leb(data, p)
    return data[p : p + n].decode(), p + n


def _extern_desc(data, p):
    """Skips one externdesc, returns the position after it."""
    sort = data[p]
    p += 1
    if sort == 0x00:  # core module: 0x11 typeidx
        return _leb(data, p + 1)[1]
    if sort in (0x01, 0x04, 0x05):  # func, component, instance: typeidx
        return _leb(data, p)[1]
    if sort in (0x02, 0x03):  # value or type bound: 0x00 idx, or 0x01 (type: resource; value: valtype)
        bound = data[p]
        p += 1
        if bound == 0x00:
            return _leb(data, p)[1]
        return p if sort == 0x03 else _leb(data, p)[1]
    raise NotAComponent(f"unknown extern kind 0x{sort:02x}")


def component_imports(data):
    """The names of the top-level imports of the component ``data``, in
    order (``wasi:io/streams@0.2.0``, ``rowhook:handler/emit@0.1.0``, ...)."""
    if data[:4] != b"\0asm" or data[4:8] != b"\x0d\x00\x01\x00":
        raise NotAComponent("not a WebAssembly component (wrong preamble)")
    names = []
    p = 8
    while p < len(data):
        section = data[p]
        size, p = _leb(data, p + 1)
        end = p + size
        if section == 10:  # import section
            count, q = _leb(data, p)
            for _ in range(count):
                kind = data[q]
                name, q = _name(data, q + 1)
                if kind == 0x01:  # a version suffix follows the name
                    q = _name(data, q)[1]
                q = _extern_desc(data, q)
                names.append(name)
        p = end
    return names
