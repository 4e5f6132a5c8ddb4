"""A client on the Python `websockets` library: prints `< msg` for every
message received and sends every line read from stdin; closes on EOF."""
import asyncio
import sys

from websockets.asyncio.client import connect


async def main(url):
    async with connect(url) as ws:
        async def pump_in():
            async for message in ws:
                print(f"< {message}", flush=True)

        reader = asyncio.create_task(pump_in())
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            await ws.send(line.rstrip("\n"))
        reader.cancel()


asyncio.run(main(sys.argv[1]))
