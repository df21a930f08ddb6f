"""The BACnet device against hand-encoded frames on loopback: one test per defect of issue #9."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from bacpypes3.apdu import APCISequence
from bacpypes3.primitivedata import ObjectIdentifier

from bacnet import cov as bacnet_cov
from bacnet import screen as bacnet_screen
from bacnet.device import BacnetFace
from core.commands import InputKey
from core.config import Settings
from core.service import DsmCore
from open_dsm.bootstrap import bacnet_writers
from tests import bacnet_wire as wire
from tests.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

INSTANCE = 500777


@contextlib.asynccontextmanager
async def running_device(
    make_core: Callable[..., DsmCore], settings: Settings, **overrides: Any
) -> AsyncIterator[tuple[DsmCore, BacnetFace, wire.WireClient]]:
    """A real core over the migrated database, its BACnet face, and a raw client socket."""
    port = free_port(socket.SOCK_DGRAM)
    update = {"bacnet_address": f"127.0.0.1/8:{port}", "device_instance": INSTANCE, **overrides}
    updated = settings.model_copy(update=update)
    core = make_core(**update)
    await core.start()
    face = BacnetFace(updated, "test")
    face.start(core.snapshot, bacnet_writers(core))
    core.subscribe(face.sync)
    client = wire.WireClient(port)
    try:
        await face.wait_bound(5)
        yield core, face, client
    finally:
        client.close()
        face.close()
        await core.stop()


def _meter(core: DsmCore) -> float | None:
    return core.snapshot.commands[InputKey.METER_KW].present_value


async def test_relinquish_reaches_the_core(make_core: Any, settings: Settings) -> None:
    """Defect 4: @16 = 60, @8 = 123.4, relinquish @8: the core (REST, storage) says 60."""
    async with running_device(make_core, settings) as (core, _face, client):
        for value, priority in ((wire.real(60.0), 16), (wire.real(123.4), 8)):
            reply = await client.ask(
                wire.write_property("analog-value", 1, wire.PRESENT_VALUE, value, priority)
            )
            assert reply.kind == wire.SIMPLE_ACK
        assert _meter(core) == pytest.approx(123.4, rel=1e-6)
        reply = await client.ask(
            wire.write_property("analog-value", 1, wire.PRESENT_VALUE, wire.NULL, 8)
        )
        assert reply.kind == wire.SIMPLE_ACK
        assert _meter(core) == pytest.approx(60.0)
        read = await client.ask(wire.read_property("analog-value", 1, wire.PRESENT_VALUE))
        assert read.real() == pytest.approx(60.0)


async def test_a_refused_write_is_counted_once_and_changes_nothing(
    make_core: Any, settings: Settings
) -> None:
    """An implausible meter value over BACnet: Error value-out-of-range, the meter stays as it
    was, and the core counts one refused BACnet reading (as it counts a refused REST one)."""
    async with running_device(make_core, settings) as (core, _face, client):
        ok = await client.ask(
            wire.write_property("analog-value", 1, wire.PRESENT_VALUE, wire.real(42.0), 16)
        )
        assert ok.kind == wire.SIMPLE_ACK
        reply = await client.ask(
            wire.write_property("analog-value", 1, wire.PRESENT_VALUE, wire.real(1e9), 16)
        )
        assert reply.error == (2, 37)  # property, value-out-of-range
        assert _meter(core) == pytest.approx(42.0)
        assert core.reads.stats.rejected.get("bacnet") == 1
        assert core.reads.stats.accepted.get("bacnet") == 1


async def test_null_without_priority_relinquishes_16(make_core: Any, settings: Settings) -> None:
    """Defect 5: Null with no priority is accepted and relinquishes priority 16."""
    async with running_device(make_core, settings) as (core, _face, client):
        await client.ask(
            wire.write_property("analog-value", 1, wire.PRESENT_VALUE, wire.real(42.0), None)
        )
        assert core.snapshot.commands[InputKey.METER_KW].priority_array[15] == pytest.approx(42.0)
        reply = await client.ask(
            wire.write_property("analog-value", 1, wire.PRESENT_VALUE, wire.NULL, None)
        )
        assert reply.kind == wire.SIMPLE_ACK
        assert core.snapshot.commands[InputKey.METER_KW].priority_array[15] is None


async def test_expensive_rpm_is_refused_before_any_work(make_core: Any, settings: Settings) -> None:
    """Defect 1: 150 x every property of the device is answered Abort out-of-resources fast."""
    async with running_device(make_core, settings) as (_core, _face, client):
        frame = wire.read_property_multiple([("device", INSTANCE, [wire.ALL] * 150)])
        loop = asyncio.get_running_loop()
        started = loop.time()
        reply = await client.ask(frame)
        elapsed = loop.time() - started
        assert (reply.kind, reply.reason) == (wire.ABORT, 9)  # out-of-resources
        assert elapsed < 0.2
        # A request within the cap is still answered in full.
        ok = await client.ask(wire.read_property_multiple([("device", INSTANCE, [wire.ALL])]))
        assert ok.kind == wire.COMPLEX_ACK


async def test_cov_subscriptions_are_capped(make_core: Any, settings: Settings) -> None:
    """Defects 2, 6: a per-address cap (resources/no-space); active-cov-subscriptions lists them."""
    async with running_device(make_core, settings) as (_core, _face, client):
        cap = bacnet_cov.MAX_COV_PER_SOURCE
        kinds = []
        for process_id in range(cap + 5):
            reply = await client.ask(
                wire.subscribe_cov(process_id, "analog-value", 1, invoke_id=process_id % 256)
            )
            kinds.append(reply.kind if reply.kind != wire.ERROR else reply.error)
        assert kinds[:cap] == [wire.SIMPLE_ACK] * cap
        assert kinds[cap:] == [(3, 19)] * 5  # resources / no-space-to-add-list-element
        # A renewal of a held subscription is still acknowledged.
        renewal = await client.ask(wire.subscribe_cov(0, "analog-value", 1))
        assert renewal.kind == wire.SIMPLE_ACK
        listing = await client.ask(
            wire.read_property("device", INSTANCE, wire.ACTIVE_COV_SUBSCRIPTIONS)
        )
        assert listing.kind == wire.COMPLEX_ACK
        # Each COVSubscription opens with context tag 0 (recipient) then 0 again (RecipientProcess).
        assert listing.apdu.count(b"\x0e\x0e") == cap  # \x0e = opening tag 0
        # Defect 12: the device object has no COV: optional-functionality-not-supported.
        device = await client.ask(wire.subscribe_cov(1, "device", INSTANCE))
        assert device.error == (1, 45)


async def test_wpm_is_claimed_and_answers_failures(make_core: Any, settings: Settings) -> None:
    """Defect 3: WPM claimed; a WPM to a read-only point answers WritePropertyMultiple-Error."""
    async with running_device(make_core, settings) as (core, _face, client):
        services = await client.ask(
            wire.read_property("device", INSTANCE, wire.PROTOCOL_SERVICES_SUPPORTED)
        )
        # bit-string: 0x85 len, unused bits, octets; writePropertyMultiple is bit 16.
        bits = services.apdu[services.apdu.index(b"\x3e") + 4 :]
        assert bits[16 // 8] & (0x80 >> (16 % 8))
        assert not bits[35 // 8] & (0x80 >> (35 % 8))  # readRange (bit 35) not claimed
        good = await client.ask(
            wire.write_property_multiple(
                [("analog-value", 1, [(wire.PRESENT_VALUE, wire.real(77.0), 12)])]
            )
        )
        assert good.kind == wire.SIMPLE_ACK
        assert _meter(core) == pytest.approx(77.0)
        bad = await client.ask(
            wire.write_property_multiple(
                [("analog-value", 2, [(wire.PRESENT_VALUE, wire.real(1.0), 16)])]
            )
        )
        assert bad.kind == wire.ERROR
        assert bad.apdu[2] == 16  # service writePropertyMultiple
        assert bad.error == (2, 40)  # property / write-access-denied


async def test_every_confirmed_request_is_answered(make_core: Any, settings: Settings) -> None:
    """Defects 7 and 12: wildcard device, right errors, Reject for unclaimed and malformed."""
    async with running_device(make_core, settings) as (_core, _face, client):
        wildcard = await client.ask(
            wire.read_property_multiple([("device", 4194303, [wire.OBJECT_NAME])])
        )
        assert wildcard.kind == wire.COMPLEX_ACK
        single = await client.ask(wire.read_property("device", 4194303, wire.OBJECT_NAME))
        assert single.kind == wire.COMPLEX_ACK
        # The whole priority-array is not writable.
        array = await client.ask(
            wire.write_property("analog-value", 1, wire.PRIORITY_ARRAY, wire.real(1.0), None)
        )
        assert array.error == (2, 40)
        # An unknown property on write answers unknown-property.
        unknown = await client.ask(
            wire.write_property("analog-value", 1, 9999, wire.real(1.0), None)
        )
        assert unknown.error == (2, 32)
        # ReadRange (26), DeviceCommunicationControl (17), an unknown service (99): Reject 9.
        for service in (26, 17, 99):
            body = wire.ctx(0, wire.object_id("analog-value", 1)) + wire.ctx(1, b"\x55")
            reply = await client.ask(wire.confirmed(service, body))
            assert (reply.kind, reply.reason) == (wire.REJECT, 9), service
        # A truncated ReadProperty: Reject, not silence.
        truncated = await client.ask(wire.confirmed(12, b"\x0c\x00\x80"))
        assert truncated.kind == wire.REJECT


async def test_requests_are_decoded_once_and_still_screened(
    make_core: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The screen decodes a request's parameters once; malformed and segmented still answered."""
    decoded: list[int] = []
    decode = APCISequence.decode.__func__

    def counting(cls: Any, apdu: Any) -> Any:
        if apdu.apduType == 0:  # confirmed requests only
            decoded.append(apdu.apduInvokeID)
        return decode(cls, apdu)

    monkeypatch.setattr(APCISequence, "decode", classmethod(counting))
    async with running_device(make_core, settings) as (_core, _face, client):
        reply = await client.ask(wire.read_property("analog-value", 1, wire.PRESENT_VALUE, 7))
        assert reply.kind == wire.COMPLEX_ACK and reply.apdu[1] == 7
        assert decoded == [7], "a ReadProperty's parameters should be decoded exactly once"
        # Malformed ReadProperty and ReadPropertyMultiple: Reject invalid-tag with the invoke id.
        for frame in (
            wire.confirmed(12, b"\x0c\x00\x80", invoke_id=8),
            wire.confirmed(14, wire.ctx(0, wire.object_id("device", 1)) + b"\x1e\x09", 9),
        ):
            bad = await client.ask(frame)
            assert (bad.kind, bad.apdu[1], bad.reason) == (wire.REJECT, frame[8], 4)
        # A ReadPropertyMultiple sent in two segments is reassembled, decoded and answered.
        body = wire.read_property_multiple(
            [("device", INSTANCE, [wire.OBJECT_NAME]), ("analog-value", 1, [wire.PRESENT_VALUE])]
        )[10:]
        half = len(body) // 2
        for sequence, (flags, part) in enumerate(((0x0C, body[:half]), (0x08, body[half:]))):
            apdu = bytes([flags, 0x05, 11, sequence, 1, 14]) + part
            npdu = b"\x01\x04" + apdu
            ack = await client.ask(b"\x81\x0a" + (len(npdu) + 4).to_bytes(2, "big") + npdu)
            assert (ack.kind, ack.apdu[1], ack.apdu[2]) == (4, 11, sequence)  # Segment-ACK
        answer = await client.receive()
        assert answer is not None
        assert (answer.kind, answer.apdu[1], answer.apdu[2]) == (wire.COMPLEX_ACK, 11, 14)


async def test_property_list_leaves_out_the_four(make_core: Any, settings: Settings) -> None:
    """Defect 9: property-list excludes identifier, name, type and property-list itself."""
    async with running_device(make_core, settings) as (_core, face, client):
        assert face.app is not None
        for kind, instance in (("device", INSTANCE), ("analog-value", 1), ("binary-value", 1)):
            reply = await client.ask(wire.read_property(kind, instance, wire.PROPERTY_LIST))
            assert reply.kind == wire.COMPLEX_ACK
            listed = await face.app.get_object_id(ObjectIdentifier((kind, instance))).read_property(
                "propertyList"
            )
            names = {str(p.attr) for p in listed}
            assert names.isdisjoint(
                {"objectIdentifier", "objectName", "objectType", "propertyList"}
            )
            assert "statusFlags" in names or kind == "device"


async def test_network_port_has_apdu_length(make_core: Any, settings: Settings) -> None:
    """Defect 11: network-port apdu-length reads 1476."""
    async with running_device(make_core, settings) as (_core, _face, client):
        reply = await client.ask(wire.read_property("network-port", 1, 399))  # apdu-length
        assert reply.kind == wire.COMPLEX_ACK
        assert reply.apdu[-4:-1] == b"\x22\x05\xc4"  # Unsigned 1476


async def test_bbmd_keeps_bdt_ports_and_lists_foreign_devices(
    make_core: Any, settings: Settings
) -> None:
    """Defects 8 and 11: a /prefix BDT entry keeps its port; the FDT reads what registered."""
    peer = free_port(socket.SOCK_DGRAM)
    entry = f"127.0.0.1/32:{peer}"
    async with running_device(make_core, settings, bbmd_bdt=[entry]) as (_core, face, client):
        assert face.app is not None
        port_object = face.app.get_object_id(ObjectIdentifier(("network-port", 1)))
        (bdt,) = await port_object.read_property("bbmdBroadcastDistributionTable")
        assert int(bdt.bbmdAddress.port) == peer
        assert bytes(bdt.broadcastMask) == b"\xff\xff\xff\xff"  # the /32 of the entry
        # A Forwarded-NPDU of the device's own broadcast (its I-Am) reaches the peer's port.
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", peer))
        listener.setblocking(False)
        try:
            who_is = b"\x81\x0b\x00\x08\x01\x00\x10\x08"  # Original-Broadcast Who-Is
            await client.send(who_is)
            loop = asyncio.get_running_loop()
            forwarded = await asyncio.wait_for(loop.sock_recv(listener, 1500), 2.0)
            assert forwarded[:2] == b"\x81\x04"  # Forwarded-NPDU
        finally:
            listener.close()
        # Register the raw client as a foreign device (TTL 60 s), then read the FDT.
        await client.send(b"\x81\x05\x00\x06\x00\x3c")
        await client.receive(wait_s=1.0)  # BVLC-Result
        fdt = await port_object.read_property("bbmdForeignDeviceTable")
        assert len(fdt) == 1 and fdt[0].timeToLive == 60
        reply = await client.ask(wire.read_property("network-port", 1, 415))  # bbmd-fdt
        assert reply.kind == wire.COMPLEX_ACK


def test_rpm_references_are_counted_from_the_raw_octets() -> None:
    """The pre-decode count: all counts as the object's defined properties; junk is None."""
    frame = wire.read_property_multiple(
        [("device", 1, [wire.ALL, wire.OBJECT_NAME]), ("analog-value", 1, [85, 111])]
    )
    params = frame[4 + 2 + 4 :]  # BVLC, NPDU, confirmed-request header
    assert bacnet_screen.rpm_reference_count(params, lambda _oid, _prop: 40) == 40 + 1 + 2
    assert bacnet_screen.rpm_reference_count(params[:-1], lambda _oid, _prop: 40) is None
    assert bacnet_screen.rpm_reference_count(b"\x0c\x00", lambda _oid, _prop: 40) is None


async def test_segments_fit_the_clients_max_apdu(make_core: Any, settings: Settings) -> None:
    """Defect 10: every segment of a segmented response, header included, fits max-APDU 206."""
    async with running_device(make_core, settings) as (_core, _face, client):
        body = wire.ctx(0, wire.object_id("device", INSTANCE)) + wire.opening(1)
        body += wire.ctx(0, bytes([wire.ALL])) + wire.closing(1)
        # Segmented response accepted, more than 64 segments, max APDU 206 (code 2).
        apdu = bytes([0x02, 0x72, 9, 14]) + body
        npdu = b"\x01\x04" + apdu
        await client.send(b"\x81\x0a" + (len(npdu) + 4).to_bytes(2, "big") + npdu)
        sizes: list[int] = []
        while True:
            reply = await client.receive(wait_s=2.0)
            assert reply is not None and reply.kind == wire.COMPLEX_ACK
            sizes.append(len(reply.apdu))
            segmented, more = reply.apdu[0] & 0x08, reply.apdu[0] & 0x04
            if not segmented or not more:
                break
            sequence = reply.apdu[2]
            await client.send(  # Segment-ACK from the client for this segment, window 16
                b"\x81\x0a\x00\x0a\x01\x00" + bytes([0x40, 9, sequence, 16])
            )
        assert len(sizes) > 1, "the response should need segments at 206 octets"
        assert max(sizes) <= 206, sizes
