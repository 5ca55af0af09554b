#!/usr/bin/env python3
"""A webhook receiver for tests/bench/http.sh: HTTP/1.1 with keep-alive,
one asyncio task per connection. Every POST/PUT is answered 200 once its
body is read; its JSON lines are counted and, with WEBHOOK_SECRET set, its
X-Rowhook-Signature is checked (HMAC-SHA256 of "<X-Rowhook-Timestamp>.<body>").
GET /stats answers "<lines> <requests> <bad signatures> <cpu seconds>".

    WEBHOOK_SECRET=... python3 tests/bench/http_receiver.py PORT
"""

import asyncio
import hashlib
import hmac
import os
import sys
import time

SECRET = os.environb.get(b"WEBHOOK_SECRET")
stats = {"lines": 0, "requests": 0, "bad": 0}


def verified(headers, body):
    ts = headers.get(b"x-rowhook-timestamp", b"")
    sig = headers.get(b"x-rowhook-signature", b"")
    want = b"sha256=" + hmac.new(SECRET, ts + b"." + body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(want, sig)


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target = lines[0].split(b" ")[:2]
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            if method == b"GET" and target == b"/stats":
                text = "%d %d %d %.2f" % (stats["lines"], stats["requests"], stats["bad"], time.process_time())
                out = text.encode()
            else:
                stats["requests"] += 1
                stats["lines"] += body.count(b"\n")
                if SECRET is not None and not verified(headers, body):
                    stats["bad"] += 1
                out = b""
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(serve, "127.0.0.1", port, limit=1 << 26)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
