#!/usr/bin/env python3
"""Idle keep-alive clients for tests/bench (the idle_conns row).

    idle_conns.py HOST:PORT COUNT

Opens COUNT HTTP/1.1 connections to HOST:PORT, 64 at a time, each sending one GET and reading
its whole answer (Content-Length), and keeps them all open and idle. Then prints
`ready opened=N failed=F` and waits for a line on stdin (the bench measures the proxy's memory
meanwhile). Then sends a second GET on every open connection and prints
`reused ok=N failed=F`: an idle connection the proxy dropped or cannot answer on counts as
failed. Every wait is bounded (10 s per request, 600 s in all).
"""
import asyncio
import resource
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle-conns\r\n\r\n"
BATCH = 64
TIMEOUT = 10.0
DEADLINE = time.monotonic() + 600


async def exchange(reader, writer):
    """One request and its whole answer; True when it was a 2xx."""
    writer.write(REQUEST)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
    return status.startswith(b"2")


async def open_one(host, port):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        if await exchange(reader, writer):
            return reader, writer
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
        pass
    writer.close()
    return None


async def reuse(conn):
    reader, writer = conn
    try:
        return await exchange(reader, writer)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
        return False


async def main():
    host, _, port = sys.argv[1].rpartition(":")
    count = int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, count + 256)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    conns = []
    failed = 0
    for start in range(0, count, BATCH):
        if time.monotonic() > DEADLINE:
            break
        batch = await asyncio.gather(
            *(open_one(host, int(port)) for _ in range(min(BATCH, count - start)))
        )
        for conn in batch:
            if conn is None:
                failed += 1
            else:
                conns.append(conn)
    print(f"ready opened={len(conns)} failed={failed}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    ok = 0
    for start in range(0, len(conns), BATCH):
        results = await asyncio.gather(*(reuse(c) for c in conns[start:start + BATCH]))
        ok += sum(1 for r in results if r)
    print(f"reused ok={ok} failed={len(conns) - ok + failed}", flush=True)
    for _, writer in conns:
        writer.close()


asyncio.run(main())
