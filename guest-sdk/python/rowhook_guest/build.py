"""``python3 -m rowhook_guest build app.py -o app.wasm``: a Python handler
as a component that rowhook loads.

It wraps componentize-py (pinned: :data:`COMPONENTIZE_PY`), which bundles
CPython, the app and this SDK into one component of world ``handler``
(``guest-sdk/wit/handler.wit``) and runs the app's imports at build time, so
an instance starts initialised. The build then reads the component's
imports and fails if rowhook would refuse one.

Why a default build and not ``--stub-wasi``: componentize-py's CPython
imports WASI (clocks, random, stdio, filesystem, sockets). rowhook links
each of them, giving a handler no preopened directory, no environment and
no network (its sockets deny every call), so the default build keeps
Python whole: ``print`` and ``logging`` write to nothing rather than trap,
``time`` reads the clock, ``random`` is seeded per instance. ``--stub-wasi``
replaces every WASI import with a stub that traps when called, so the
component imports only ``rowhook:handler``; but then any call that touches
a clock, stdout or a file traps the handler mid-event (a ``print`` does),
and ``random`` repeats the seed baked in at build time in every instance. The option is kept for an operator who wants
the smallest import list and knows the handler touches none of that.
"""

import argparse
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._imports import component_imports

COMPONENTIZE_PY = "0.25.1"

# What rowhook links for a handler besides rowhook:handler/*: the WASI
# interfaces a language runtime asks for (host/src/runtime/mod.rs,
# ALLOWED_WASI), sockets and HTTP among them, which rowhook links to refuse
# every use.
ALLOWED_WASI = frozenset(
    [
        "wasi:cli/environment",
        "wasi:cli/exit",
        "wasi:cli/stdin",
        "wasi:cli/stdout",
        "wasi:cli/stderr",
        "wasi:cli/terminal-input",
        "wasi:cli/terminal-output",
        "wasi:cli/terminal-stdin",
        "wasi:cli/terminal-stdout",
        "wasi:cli/terminal-stderr",
        "wasi:clocks/monotonic-clock",
        "wasi:clocks/wall-clock",
        "wasi:io/error",
        "wasi:io/poll",
        "wasi:io/streams",
        "wasi:random/random",
        "wasi:random/insecure",
        "wasi:random/insecure-seed",
        "wasi:filesystem/types",
        "wasi:filesystem/preopens",
        "wasi:sockets/network",
        "wasi:sockets/instance-network",
        "wasi:sockets/udp",
        "wasi:sockets/udp-create-socket",
        "wasi:sockets/tcp",
        "wasi:sockets/tcp-create-socket",
        "wasi:sockets/ip-name-lookup",
        "wasi:http/types",
        "wasi:http/outgoing-handler",
    ]
)

WIT = Path(__file__).resolve().parent / "handler.wit"


class BuildError(Exception):
    """The component could not be built, or rowhook would refuse it."""


def refused_imports(names):
    """The imports among ``names`` that rowhook does not link."""
    refused = []
    for name in names:
        base = name.split("@", 1)[0]
        if not (base.startswith("rowhook:handler/") or base in ALLOWED_WASI):
            refused.append(name)
    return refused


def _check_componentize_py():
    try:
        found = importlib.metadata.version("componentize-py")
    except importlib.metadata.PackageNotFoundError:
        found = None
    if found != COMPONENTIZE_PY:
        have = f"componentize-py {found} is installed" if found else "componentize-py is not installed"
        raise BuildError(
            f"{have}; this SDK builds with componentize-py {COMPONENTIZE_PY}: "
            f"{sys.executable} -m pip install componentize-py=={COMPONENTIZE_PY}"
        )


def build(app, output, stub_wasi=False, quiet=False):
    """Builds ``app`` (a .py file marking its handler with @handler) into the
    component ``output``; returns its imports."""
    app = Path(app).resolve()
    output = Path(output).resolve()
    if app.suffix != ".py" or not app.is_file():
        raise BuildError(f"{app}: not a Python file; give the .py file that marks the handler with @handler")
    module = app.stem
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", module) or module in ("rowhook_guest", "wit_world", "rowhook_entry"):
        raise BuildError(f"{app.name}: the app's file name must be a Python module name other than {module!r}")
    _check_componentize_py()
    sdk = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="rowhook-guest-") as tmp:
        staging = Path(tmp) / "staging"
        # Only the package's sources go in; the component bundles every file
        # of its Python path.
        shutil.copytree(sdk, staging / "rowhook_guest", ignore=shutil.ignore_patterns("__pycache__", "*.wit"))
        (staging / "rowhook_entry.py").write_text(
            f"import {module}  # marks the handler\nfrom rowhook_guest._component import WitWorld\n"
        )
        command = [
            sys.executable,
            "-c",
            "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
            "-d",
            str(WIT),
            "-w",
            "handler",
            *(["-q"] if quiet else []),
            "componentize",
            "-p",
            str(staging),
            "-p",
            str(app.parent),
            *(["--stub-wasi"] if stub_wasi else []),
            "-o",
            str(output),
            "rowhook_entry",
        ]
        done = subprocess.run(command)
        if done.returncode != 0:
            raise BuildError(f"componentize-py failed (exit {done.returncode}) building {app}")
    imports = component_imports(output.read_bytes())
    refused = refused_imports(imports)
    if refused:
        raise BuildError(f"{output}: rowhook would refuse these imports: {', '.join(refused)}")
    return imports


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m rowhook_guest",
        description="Build a Python rowhook handler into a WebAssembly component.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="build app.py into a component")
    b.add_argument("app", help="the handler's .py file (its directory is on the component's Python path)")
    b.add_argument("-o", "--output", required=True, help="the component to write (.wasm)")
    b.add_argument(
        "--stub-wasi",
        action="store_true",
        help="replace WASI imports with stubs that trap when called (see the README before using it)",
    )
    b.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    i = commands.add_parser("imports", help="list a component's imports and whether rowhook links them")
    i.add_argument("component")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            started = time.monotonic()
            imports = build(args.app, args.output, stub_wasi=args.stub_wasi, quiet=args.quiet)
            if not args.quiet:
                size = Path(args.output).stat().st_size
                print(
                    f"{args.output}: {size / 1e6:.1f} MB, {len(imports)} imports, all linked by rowhook, "
                    f"built in {time.monotonic() - started:.0f} s"
                )
        else:
            imports = component_imports(Path(args.component).read_bytes())
            refused = set(refused_imports(imports))
            for name in imports:
                print(f"{name}{'  (refused by rowhook)' if name in refused else ''}")
            if refused:
                return 1
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
