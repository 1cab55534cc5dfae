#!/usr/bin/env python3
"""Loopback TCP tunnel benchmark: the upstream and the client of run.sh's tunnel rows.

  tunnel.py server PORT          the upstream: per connection, the first byte picks the mode:
                                 'B' reads to EOF then answers the byte count; 'P' echoes.
  tunnel.py bulk PORT BYTES      sends BYTES (1 MiB writes), half-closes, checks the count;
                                 prints "gbps=<Gbit/s> seconds=<s>".
  tunnel.py pingpong PORT N      N round trips of 64 bytes (TCP_NODELAY); prints
                                 "rtt_per_s=<n/s> p50_us=<us> p99_us=<us> mean_us=<us>".
The same client for every target, so the rows compare the tunnel, not the tool.
"""
import socket
import sys
import threading
import time


def serve_one(conn):
    with conn:
        mode = conn.recv(1)
        if mode == b"B":
            total = 0
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                total += len(data)
            conn.sendall(str(total).encode())
        elif mode == b"P":
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data)


def server(port):
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


def bulk(port, total):
    chunk = bytes(1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"B")
        start = time.perf_counter()
        sent = 0
        while sent < total:
            n = min(len(chunk), total - sent)
            s.sendall(chunk[:n] if n < len(chunk) else chunk)
            sent += n
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            data = s.recv(64)
            if not data:
                break
            answer += data
        seconds = time.perf_counter() - start
    if answer != str(total).encode():
        print(f"error: upstream counted {answer!r} of {total}", file=sys.stderr)
        return 1
    print(f"gbps={total * 8 / seconds / 1e9:.2f} seconds={seconds:.3f}")
    return 0


def pingpong(port, rounds):
    msg = bytes(64)
    samples = []
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"P")
        clock = time.perf_counter_ns
        for _ in range(rounds):
            t0 = clock()
            s.sendall(msg)
            got = 0
            while got < 64:
                data = s.recv(64 - got)
                if not data:
                    print("error: the tunnel closed", file=sys.stderr)
                    return 1
                got += len(data)
            samples.append(clock() - t0)
    samples.sort()
    p50 = samples[(len(samples) * 50 + 99) // 100 - 1] / 1000
    p99 = samples[(len(samples) * 99 + 99) // 100 - 1] / 1000
    mean = sum(samples) / len(samples) / 1000
    print(f"rtt_per_s={1e6 / mean:.0f} p50_us={p50:.1f} p99_us={p99:.1f} mean_us={mean:.1f}")
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "server":
        server(int(argv[2]))
        return 0
    if len(argv) == 4 and argv[1] == "bulk":
        return bulk(int(argv[2]), int(argv[3]))
    if len(argv) == 4 and argv[1] == "pingpong":
        return pingpong(int(argv[2]), int(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
