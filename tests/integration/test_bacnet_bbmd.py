"""Foreign-device registration: a BAS behind a BBMD discovers the device with a global Who-Is."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bacnet.device import BacnetFace
from bacnet.points import POINTS
from core.config import Settings
from core.snapshot import Snapshot
from tests.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _bbmd_client(port: int):  # type: ignore[no-untyped-def]
    """A bacpypes3 application acting as the site's BBMD (and the BAS asking Who-Is)."""
    from bacpypes3.app import Application
    from bacpypes3.basetypes import BDTEntry, IPMode
    from bacpypes3.local.device import DeviceObject
    from bacpypes3.local.networkport import NetworkPortObject

    address = f"127.0.0.1/8:{port}"
    network_port = NetworkPortObject(
        address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
    )
    network_port.bacnetIPMode = IPMode.bbmd
    network_port.bbmdAcceptFDRegistrations = True
    network_port.bbmdForeignDeviceTable = []
    network_port.bbmdBroadcastDistributionTable = [BDTEntry(address)]
    device = DeviceObject(objectIdentifier=("device", 599100), objectName="bas-bbmd")
    return Application.from_object_list([device, network_port])


class _Ignore:
    """A point's writer that accepts and drops every value."""

    async def command(self, value: float | None, priority: int) -> None:
        """Drop the write."""


async def test_global_who_is_reaches_a_foreign_registered_device(tmp_path) -> None:
    bbmd_port = free_port(socket.SOCK_DGRAM)
    device_port = free_port(socket.SOCK_DGRAM)
    bbmd = _bbmd_client(bbmd_port)
    settings = Settings(
        data_dir=tmp_path,
        timezone="UTC",
        device_instance=500321,
        bacnet_address=f"127.0.0.1/8:{device_port}",
        foreign_bbmd=f"127.0.0.1:{bbmd_port}",
        foreign_ttl=60,
    )
    face = BacnetFace(settings, "test")
    # Writes are not exercised here: each input accepts and drops its value.
    writers = {p.input_key: _Ignore() for p in POINTS if p.input_key}
    face.start(Snapshot(), writers)
    try:
        await face.wait_bound(5)
        found: list[int] = []
        for _ in range(20):  # registration takes a round trip
            i_ams = await bbmd.who_is(500321, 500321, timeout=0.5)
            found = [i.iAmDeviceIdentifier[1] for i in i_ams]
            if found:
                break
            await asyncio.sleep(0.1)
        assert found == [500321]
    finally:
        face.close()
        bbmd.close()
