#!/usr/bin/env python3
"""Opens N keep-alive connections to a proxy, sends one request on each, then holds them
idle until stdin closes. Prints 'ready N' once every connection has had its response."""
import asyncio
import sys


async def one(host, port, vhost):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET / HTTP/1.1\r\nHost: {vhost}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return writer


async def main():
    host, port, n, vhost = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    writers = []
    for start in range(0, n, 200):
        writers += await asyncio.gather(*(one(host, port, vhost) for _ in range(start, min(n, start + 200))))
    print(f"ready {len(writers)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in writers:
        w.close()


asyncio.run(main())
