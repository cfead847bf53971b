#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that delays every chunk by --delay seconds in each direction.

    python benchmarks/delay_proxy.py --port 8081 --upstream 127.0.0.1:8080 --delay 0.02

With 20 ms each way every request/answer exchange costs a 40 ms round trip, while bandwidth stays
loopback's: each chunk is stamped when it is read and written out once its time has come, so
chunks in flight overlap as they would on a long fat pipe (nothing is serialised behind a sleep).
The TCP handshake with the proxy itself is not delayed (the kernel completes it), so opening a
connection costs no extra round trip; that favours neither client.

Runs until SIGTERM/SIGINT; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk `delay` seconds after it arrived; EOF is forwarded late too."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while data := await reader.read(1 << 16):
                queue.put_nowait((loop.time() + delay, data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((loop.time() + delay, b""))

    reading = asyncio.create_task(read())
    try:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()


async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, host: str,
                 port: int, delay: float) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(pump(client_reader, upstream_writer, delay),
                             pump(upstream_reader, client_writer, delay))
    except asyncio.CancelledError:
        pass  # shutting down: end quietly (asyncio would log the cancellation as an error)
    finally:
        for writer in (client_writer, upstream_writer):
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def serve(port: int, upstream: str, delay: float) -> None:
    host, _, upstream_port = upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        raise SystemExit(f"--upstream must be on loopback, not {host}")
    host = host.strip("[]")
    connections: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await handle(reader, writer, host, int(upstream_port), delay)
        finally:
            connections.discard(task)

    server = await asyncio.start_server(connected, "127.0.0.1", port, backlog=256)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for task in list(connections):
        task.cancel()
    await asyncio.gather(*connections, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="listen on 127.0.0.1:PORT")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to (loopback)")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds added in each direction")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.upstream, args.delay))


if __name__ == "__main__":
    main()
