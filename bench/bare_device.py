"""The baseline: a bare bacpypes3 device with seven plain objects, and a static REST endpoint.

Run as its own process by ``open-dsm bench service`` so it is measured with the same client, on
the same machine, in the same run as the real service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket

import uvicorn
from bacpypes3.app import Application
from bacpypes3.local.analog import AnalogValueObject
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

NAMES = [
    "input-power-meter",
    "one-hour-future-power",
    "power-rate-of-change",
    "model-rsme",
    "model-training-time",
    "high-load-conditions",
    "low-load-conditions",
]


async def main(address: str, instance: int, http_port: int, points_json: str) -> None:
    """Serve until SIGTERM."""
    device = DeviceObject(objectIdentifier=("device", instance), objectName="bare")
    port = NetworkPortObject(
        address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
    )
    objects = [
        AnalogValueObject(
            objectIdentifier=("analog-value", i + 1),
            objectName=name,
            presentValue=1.0,
            units="kilowatts",
            covIncrement=0.1,
            statusFlags=[0, 0, 0, 0],
        )
        for i, name in enumerate(NAMES[:5])
    ] + [
        BinaryValueObject(
            objectIdentifier=("binary-value", i + 1),
            objectName=name,
            presentValue="inactive",
            statusFlags=[0, 0, 0, 0],
        )
        for i, name in enumerate(NAMES[5:])
    ]
    app = Application.from_object_list([device, port, *objects])
    body = points_json.encode()

    async def points(_request: Request) -> Response:
        return Response(body, media_type="application/json")

    web = Starlette(routes=[Route("/api/v1/points", points)])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the service does
    sock.bind(("127.0.0.1", http_port))
    server = uvicorn.Server(uvicorn.Config(web, log_config=None, access_log=False, lifespan="off"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    await stop.wait()
    server.should_exit = True
    with contextlib.suppress(Exception):
        await serving
    app.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--instance", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--points-json", default=json.dumps([{"name": n} for n in NAMES]))
    args = parser.parse_args()
    asyncio.run(main(args.address, args.instance, args.http_port, args.points_json))
