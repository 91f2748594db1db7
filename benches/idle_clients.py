#!/usr/bin/env python3
"""Open N client connections to 127.0.0.1:PORT, make one request on each (HTTP/1.1
keep-alive, or h2c prior knowledge with one stream), keep them open and idle, print
"held N" once all are answered, and hold them until stdin closes. Used by
benches/idle_memory.sh to measure the memory a proxy spends per idle connection."""
import asyncio, sys

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"          # empty SETTINGS
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
# HEADERS, stream 1, END_STREAM|END_HEADERS: :method GET (2), :scheme http (6), :path / (4),
# :authority "x" (literal with incremental indexing, name index 1).
_block = bytes([0x82, 0x86, 0x84, 0x41, 0x01]) + b"x"
HEADERS = len(_block).to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01" + _block

async def one(port, h2, done):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    if h2:
        w.write(H2_PREFACE + SETTINGS + HEADERS)
        await w.drain()
        # read frames until the stream ends (a DATA or HEADERS frame with END_STREAM on stream 1)
        while True:
            head = await r.readexactly(9)
            length = int.from_bytes(head[:3], "big")
            ftype, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7fffffff
            await r.readexactly(length)
            if ftype == 4 and not flags & 1:
                w.write(SETTINGS_ACK)
            if stream == 1 and ftype in (0, 1) and flags & 1:
                break
    else:
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await w.drain()
        data = b""
        while b"hello world" not in data:
            chunk = await r.read(4096)
            if not chunk:
                raise RuntimeError("closed")
            data += chunk
    done.append(1)
    return r, w

async def main():
    port, n, proto = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    done = []
    conns = []
    sem = asyncio.Semaphore(200)
    async def guarded():
        async with sem:
            return await one(port, proto == "h2c", done)
    conns = await asyncio.gather(*[guarded() for _ in range(n)])
    print(f"held {len(done)}", flush=True)
    await asyncio.get_event_loop().run_in_executor(None, sys.stdin.read)
    for _, w in conns:
        w.close()

asyncio.run(main())
