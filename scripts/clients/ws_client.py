"""A client on the Python `websockets` library: prints `< msg` for every
message received and sends every line read from stdin; closes on EOF.

    ws_client.py URL [CA]

For a wss:// URL, CA is a PEM file of the certificates to trust (the relay's
self-signed one, say): the certificate is verified against it, host name
included, as for any other server; without CA, against the system's store."""
import asyncio
import ssl
import sys

from websockets.asyncio.client import connect


async def main(url, ca):
    context = None
    if url.startswith("wss://"):
        # Verification stays on: CERT_REQUIRED and check_hostname, only the trust store is ours.
        context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    async with connect(url, ssl=context) as ws:
        async def pump_in():
            async for message in ws:
                print(f"< {message}", flush=True)

        reader = asyncio.create_task(pump_in())
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            await ws.send(line.rstrip("\n"))
        reader.cancel()


asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
