"""What a BTL tester would still write up (issue #28), against hand-encoded frames on loopback."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import subprocess
import sys
from typing import Any

import pytest
from bacpypes3.basetypes import PropertyIdentifier
from bacpypes3.primitivedata import ObjectIdentifier

from bacnet import cov as bacnet_cov
from bacnet import device as bacnet_device
from bacnet import logs as bacnet_logs
from bacnet import reads as bacnet_reads
from bacnet import screen as bacnet_screen
from core.config import Settings
from tests import bacnet_wire as wire
from tests.helpers import free_port
from tests.integration.test_bacnet_device import INSTANCE, running_device

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

OUT_OF_RESOURCES, TSM_TIMEOUT = 9, 10
OBJECT_LIST = 76


def _bacnet_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("bacpypes3", "bacnet", "asyncio"))]


async def test_aborts_from_handlers_carry_srv(make_core: Any, settings: Settings) -> None:
    """A WritePropertyMultiple over 256 writes and a full expensive queue: Abort with SRV."""
    async with running_device(make_core, settings) as (_core, face, client):
        writes = [(wire.PRESENT_VALUE, wire.real(1.0), 16)] * 257
        reply = await client.ask(
            wire.write_property_multiple([("analog-value", 1, writes)], invoke_id=3)
        )
        assert (reply.kind, reply.apdu[1], reply.reason) == (wire.ABORT, 3, OUT_OF_RESOURCES)
        assert reply.srv and reply.apdu[0] == 0x71
        # One expensive request running (held here), then eight: four wait, four are aborted.
        assert face.app is not None
        await face.app._expensive.acquire()
        try:
            for invoke_id in range(20, 28):
                await client.send(
                    wire.read_property_multiple(
                        [("analog-value", 1, [wire.PRESENT_VALUE])], invoke_id=invoke_id
                    )
                )
            aborts = []
            while (answer := await client.receive(wait_s=1.0)) is not None:
                aborts.append(answer)
        finally:
            face.app._expensive.release()
        replies = list(aborts)
        while len(replies) < 8 and (answer := await client.receive(wait_s=2.0)) is not None:
            replies.append(answer)
        assert sorted(r.apdu[1] for r in replies) == list(range(20, 28)), "every one answered"
        assert len(aborts) == 8 - bacnet_screen.MAX_QUEUED_EXPENSIVE
        assert all(r.srv and r.reason == OUT_OF_RESOURCES for r in aborts)


async def test_unacknowledged_segments_are_resent_then_aborted(
    make_core: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """No Segment-ACK: the first segment is resent number-of-APDU-retries times, then Abort."""
    async with running_device(make_core, settings) as (_core, face, client):
        assert face.app is not None
        face.app.device_object.apduSegmentTimeout = 100  # ms: keep the test short
        retries = int(face.app.device_object.numberOfApduRetries)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            frames = []
            for invoke_id in (40, 41):
                frames.clear()
                request = wire.confirmed(
                    12,
                    wire.ctx(0, wire.object_id("device", INSTANCE))
                    + wire.ctx(1, wire.unsigned(OBJECT_LIST)),
                    invoke_id=invoke_id,
                    header=b"\x02\x70",  # segmented response accepted, max APDU 50
                )
                await client.send(request)
                while (reply := await client.receive(wait_s=1.0)) is not None:
                    frames.append(reply)
                    if reply.kind == wire.ABORT:
                        break
                segments = [f for f in frames if f.kind == wire.COMPLEX_ACK]
                assert len(segments) == 1 + retries, [f.apdu[:4].hex() for f in frames]
                assert all(s.apdu[0] & 0x0C == 0x0C and s.apdu[2] == 0 for s in segments)
                assert frames[-1].kind == wire.ABORT and frames[-1].srv
                assert (frames[-1].apdu[1], frames[-1].reason) == (invoke_id, TSM_TIMEOUT)
        records = _bacnet_records(caplog)
        assert not any(r.exc_info for r in records), [r.getMessage() for r in records]
        assert not any("exception" in r.getMessage().lower() for r in records)
        assert len(records) <= 1, [r.getMessage() for r in records]  # one line a minute


async def test_acknowledged_segments_still_complete(make_core: Any, settings: Settings) -> None:
    """A client that acknowledges each segment gets the whole object-list, and no Abort."""
    async with running_device(make_core, settings) as (_core, _face, client):
        request = wire.confirmed(
            12,
            wire.ctx(0, wire.object_id("device", INSTANCE))
            + wire.ctx(1, wire.unsigned(OBJECT_LIST)),
            invoke_id=42,
            header=b"\x02\x70",
        )
        await client.send(request)
        count = 0
        while True:
            reply = await client.receive(wait_s=2.0)
            assert reply is not None and reply.kind == wire.COMPLEX_ACK
            count += 1
            if not reply.apdu[0] & 0x04:
                break
            await client.send(b"\x81\x0a\x00\x0a\x01\x00" + bytes([0x40, 42, reply.apdu[2], 1]))
        assert count > 2
        assert await client.receive(wait_s=0.3) is None


SERVICES, PARAMETER_OUT_OF_RANGE = 5, 80
MISSING_REQUIRED_PARAMETER = 5  # reject reason


async def test_cov_slots_are_shared_fairly_between_sources(
    make_core: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """One host (two UDP ports) gets MAX_COV_PER_SOURCE slots; another host still subscribes."""
    cap = bacnet_cov.MAX_COV_PER_SOURCE
    async with running_device(make_core, settings) as (_core, face, first):
        second_port = wire.WireClient(first.device[1])  # same host, another UDP port
        other_host = wire.WireClient(first.device[1], host="127.0.0.2")
        try:
            answers = []
            for process_id in range(cap + 3):
                client = first if process_id % 2 else second_port
                reply = await client.ask(
                    wire.subscribe_cov(process_id, "analog-value", 1 + process_id % 20)
                )
                answers.append(reply.kind if reply.kind != wire.ERROR else reply.error)
            assert answers[:cap] == [wire.SIMPLE_ACK] * cap
            assert answers[cap:] == [(3, 19)] * 3  # resources / no-space-to-add-list-element
            # A renewal from the full host still succeeds; another host gets its own slots.
            renewal = await first.ask(wire.subscribe_cov(1, "analog-value", 2))
            assert renewal.kind == wire.SIMPLE_ACK
            for process_id in range(cap):
                reply = await other_host.ask(wire.subscribe_cov(process_id, "analog-value", 1))
                assert reply.kind == wire.SIMPLE_ACK
            assert face.app is not None and len(face.app.cov_subscriptions()) == 2 * cap
        finally:
            second_port.close()
            other_host.close()


async def test_cov_lifetime_is_bounded(
    make_core: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Indefinite, absent or over-long lifetimes are refused with the right error, no traceback."""
    async with running_device(make_core, settings) as (_core, face, client):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            cap = bacnet_cov.MAX_COV_LIFETIME_S
            for lifetime, confirmed in ((0, False), (cap + 1, False), (None, True), (None, False)):
                reply = await client.ask(
                    wire.subscribe_cov(
                        7, "analog-value", 1, lifetime=lifetime, confirmed_notifications=confirmed
                    )
                )
                assert reply.error == (SERVICES, PARAMETER_OUT_OF_RANGE), (lifetime, confirmed)
            # A lifetime without issue-confirmed-notifications: Reject missing-required-parameter.
            reply = await client.ask(
                wire.subscribe_cov(7, "analog-value", 1, lifetime=60, confirmed_notifications=None)
            )
            assert (reply.kind, reply.reason) == (wire.REJECT, MISSING_REQUIRED_PARAMETER)
            ok = await client.ask(wire.subscribe_cov(7, "analog-value", 1, lifetime=cap))
            assert ok.kind == wire.SIMPLE_ACK
            # Both absent: a cancellation, acknowledged.
            cancel = await client.ask(
                wire.subscribe_cov(
                    7, "analog-value", 1, lifetime=None, confirmed_notifications=None
                )
            )
            assert cancel.kind == wire.SIMPLE_ACK
            assert face.app is not None and face.app.cov_subscriptions() == []
        records = _bacnet_records(caplog)
        assert not any(r.exc_info for r in records), [r.getMessage() for r in records]


async def test_dead_confirmed_subscriber_is_dropped_quietly(
    make_core: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Unacknowledged confirmed notifications: no traceback, bounded log, subscription cancelled."""
    async with running_device(make_core, settings) as (_core, face, writer):
        assert face.app is not None
        face.app.device_object.apduTimeout = 50  # ms: each notification fails fast
        face.app.device_object.numberOfApduRetries = 0
        dead = wire.WireClient(writer.device[1], host="127.0.0.3")
        try:
            caplog.clear()
            with caplog.at_level(logging.INFO):
                reply = await dead.ask(
                    wire.subscribe_cov(
                        9, "analog-value", 1, lifetime=600, confirmed_notifications=True
                    )
                )
                assert reply.kind == wire.SIMPLE_ACK
                for value in range(1, 2 + bacnet_cov.MAX_COV_NOTIFY_FAILURES):
                    ack = await writer.ask(
                        wire.write_property(
                            "analog-value", 1, wire.PRESENT_VALUE, wire.real(float(value)), 16
                        )
                    )
                    assert ack.kind == wire.SIMPLE_ACK
                    await asyncio.sleep(0.3)  # the notification times out unacknowledged
                assert face.app.cov_subscriptions() == [], "the dead subscriber should be dropped"
            records = _bacnet_records(caplog)
            assert not any(r.exc_info for r in records), [r.getMessage() for r in records]
            assert len(records) <= 3, [r.getMessage() for r in records]
        finally:
            dead.close()


async def test_a_flooding_source_leaves_others_served(
    make_core: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """2 s of refused/expensive requests from one host: another host's ReadProperty stays fast."""
    # The test process's heap (every module the suite imported) makes a full garbage collection
    # hold the loop 200-300 ms, flood or not: freeze it, as a long-running service would.
    gc.collect()
    gc.freeze()
    try:
        await _flood_and_measure(make_core, settings, caplog)
    finally:
        gc.unfreeze()


async def _flood_and_measure(
    make_core: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_device(make_core, settings) as (_core, _face, client):
        flood = subprocess.Popen(
            [sys.executable, "-c", FLOODER, str(client.device[1]), "2.0", "400"],
            stdout=subprocess.PIPE,
        )
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        caplog.clear()
        with caplog.at_level(logging.INFO):
            # Polling from the start, as a BAS is when a flood begins (the flooder's Python
            # takes ~0.2 s to start sending).
            for invoke_id in range(80):
                started = loop.time()
                reply = await client.ask(
                    wire.read_property("analog-value", 1, wire.PRESENT_VALUE, invoke_id)
                )
                assert reply.kind == wire.COMPLEX_ACK and reply.apdu[1] == invoke_id
                latencies.append(loop.time() - started)
                await asyncio.sleep(0.02)
            out, _ = await asyncio.to_thread(flood.communicate)
        sent, answered = map(int, out.split())
        latencies.sort()
        p99 = latencies[int(0.99 * len(latencies))]
        # Generous (2 shared cores): bench/bacnet_fairness.py measures the figure itself.
        assert p99 < 0.5, latencies[-5:]
        assert answered < sent / 2, (sent, answered)  # the flooder was muted most of the time
        records = _bacnet_records(caplog)
        assert len(records) <= 10, [r.getMessage() for r in records]


# A subprocess that sends ReadPropertyMultiple requests the device refuses (over the queue or
# over 256 reads) and unexecuted services from 127.0.0.2 as fast as told; prints sent, answered.
FLOODER = """
import socket, sys, time
port, seconds, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
def frame(service, body, invoke):
    apdu = bytes([0, 5, invoke, service]) + body
    return b"\\x81\\x0a" + (len(apdu) + 6).to_bytes(2, "big") + b"\\x01\\x04" + apdu
pv = bytes([0x09, 85])
rpm = bytes([0x0c, 0x00, 0x80, 0x00, 0x01, 0x1e]) + pv * 250 + bytes([0x1f])
big = bytes([0x0c, 0x02, 0x00, 0x00, 0x01, 0x1e]) + bytes([0x09, 8]) * 40 + bytes([0x1f])
bodies = [(14, rpm), (14, big), (26, bytes([0x0c, 0x00, 0x80, 0x00, 0x01]))]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.2", 0))
s.setblocking(False)
sent = answered = 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    service, body = bodies[sent % 3]
    s.sendto(frame(service, body, sent % 256), ("127.0.0.1", port))
    sent += 1
    try:
        while True:
            s.recv(65536)
            answered += 1
    except BlockingIOError:
        pass
    time.sleep(max(0.0, start + sent / rate - time.monotonic()))
time.sleep(0.5)
try:
    while True:
        s.recv(65536)
        answered += 1
except BlockingIOError:
    pass
print(sent, answered)
"""


REQUIRED = 105
# Clause 12's required properties (property-list aside) of each object type as this device is
# configured (commandable AV 1, COV executed, segmentation supported, B/IP), by identifier.
REQUIRED_BY_OBJECT = {
    ("device", INSTANCE): {75, 77, 79, 112, 121, 120, 70, 44, 12, 98, 139, 97, 96, 76, 62, 107}
    | {167, 10, 11, 73, 30, 155, 152},
    ("analog-value", 1): {75, 77, 79, 85, 111, 36, 81, 117, 87, 104, 431, 22},
    ("analog-value", 2): {75, 77, 79, 85, 111, 36, 81, 117, 22},
    ("binary-value", 1): {75, 77, 79, 85, 111, 36, 81},
    # networkNumber 425, -quality 426, apdu-length 399, link-speed 420, IP ones 400, 408, 412,
    # 411, 401, 406, mac 423, changes-pending 416, network-type 427, protocol-level 482, ...
    ("network-port", 1): {75, 77, 79, 111, 103, 81, 427, 482, 425, 426, 416, 423, 399, 420}
    | {408, 400, 412, 411, 401, 406},
}


def _property_ids(apdu: bytes) -> set[int]:
    """The property identifiers (context tag 2 in a list of results) of an RPM-ACK, by tag walk."""
    found: set[int] = set()
    depth, at = 0, 3  # after the ComplexACK header
    while at < len(apdu):
        octet = apdu[at]
        number, context, lvt = octet >> 4, octet & 0x08, octet & 0x07
        at += 1
        if number == 0x0F:
            number = apdu[at]
            at += 1
        if context and lvt == 6:
            depth += 1
            continue
        if context and lvt == 7:
            depth -= 1
            continue
        if not context and number == 1:  # application Boolean: the value is in the tag
            continue
        if lvt == 5:
            lvt = apdu[at]
            at += 1
            if lvt == 254:
                lvt = int.from_bytes(apdu[at : at + 2], "big")
                at += 2
        if context and number == 2 and depth == 1:
            found.add(int.from_bytes(apdu[at : at + lvt], "big"))
        at += lvt
    return found


async def test_rpm_required_returns_every_required_property(
    make_core: Any, settings: Settings
) -> None:
    """RPM REQUIRED of each object type returns clause 12's required properties."""
    async with running_device(make_core, settings) as (_core, face, client):
        assert face.app is not None
        for (kind, instance), wanted in REQUIRED_BY_OBJECT.items():
            obj = face.app.get_object_id(ObjectIdentifier((kind, instance)))
            names = bacnet_reads.expand_properties(obj, PropertyIdentifier.required)
            assert wanted <= {int(PropertyIdentifier(n)) for n in names}, kind
            reply = await client.ask(
                wire.read_property_multiple([(kind, instance, [REQUIRED])]), wait_s=3.0
            )
            assert reply.kind == wire.COMPLEX_ACK, (kind, reply.apdu[:4].hex())
            missing = wanted - _property_ids(reply.apdu)
            assert not missing, (kind, missing)


async def test_all_is_counted_by_what_the_object_returns(
    make_core: Any, settings: Settings
) -> None:
    """4 x ALL of the device (112 reads), ALL of AV 1..16 (206) are answered; AV 1..23 (288) not."""
    async with running_device(make_core, settings) as (_core, _face, client):
        for specs in (
            [("device", INSTANCE, [wire.ALL] * 4)],
            [("analog-value", i, [wire.ALL]) for i in range(1, 17)],
        ):
            frame = wire.confirmed(
                14, wire.read_property_multiple(specs)[10:], header=b"\x02\x75"
            )  # segmented response accepted, max APDU 1476
            reply = await client.ask(frame, wait_s=3.0)
            assert reply.kind == wire.COMPLEX_ACK, reply.apdu[:4].hex()
            while reply.apdu[0] & 0x04:  # more follows: acknowledge the window
                await client.send(
                    b"\x81\x0a\x00\x0a\x01\x00" + bytes([0x40, reply.apdu[1], reply.apdu[2], 16])
                )
                next_reply = await client.receive(wait_s=2.0)
                assert next_reply is not None and next_reply.kind == wire.COMPLEX_ACK
                reply = next_reply
        for specs in (
            [("device", INSTANCE, [wire.ALL] * 10)],
            [("analog-value", i, [wire.ALL]) for i in range(1, 24)],
        ):
            over = await client.ask(wire.read_property_multiple(specs))
            assert (over.kind, over.reason) == (wire.ABORT, OUT_OF_RESOURCES)


# BACnetServicesSupported bit of each confirmed service choice (clause 21).
CONFIRMED_BIT = {choice: choice for choice in range(26)} | {
    26: 35,  # readRange
    27: 37,  # lifeSafetyOperation
    28: 38,  # subscribeCOVProperty
    29: 39,  # getEventInformation
    30: 41,  # subscribeCOVPropertyMultiple
    31: 42,  # confirmedCOVNotificationMultiple
    32: 44,  # confirmedAuditNotification
    33: 45,  # auditLogQuery
}
WHO_HAS_BIT, WHO_IS_BIT = 33, 34
UNRECOGNIZED_SERVICE = 9


def _bits(apdu: bytes) -> set[int]:
    """The set bits of the bit string in a ReadProperty-ACK (opening tag 3, then the value)."""
    at = apdu.index(b"\x3e") + 1
    length = apdu[at] & 0x07
    at += 1
    if length == 5:
        length = apdu[at]
        at += 1
    octets = apdu[at + 1 : at + length]  # after the unused-bits octet
    return {i * 8 + b for i, octet in enumerate(octets) for b in range(8) if octet & (0x80 >> b)}


async def _unconfirmed_reply(client: wire.WireClient, frame: bytes, service: int) -> bool:
    """Send ``frame``; True when an unconfirmed request of ``service`` comes back."""
    await client.send(frame)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while (left := deadline - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(client.sock, 1500), left)
        except TimeoutError:
            return False
        if data[6] == 0x10 and data[7] == service:  # no NPDU options in the device's replies
            return True
    return False


async def test_services_supported_is_what_the_device_executes(
    make_core: Any, settings: Settings
) -> None:
    """Every confirmed choice not Rejected unrecognized-service, Who-Is and Who-Has: no more."""
    async with running_device(make_core, settings) as (_core, _face, client):
        reply = await client.ask(
            wire.read_property("device", INSTANCE, wire.PROTOCOL_SERVICES_SUPPORTED)
        )
        claimed = _bits(reply.apdu)
        executed = set()
        body = wire.ctx(0, wire.object_id("analog-value", 1)) + wire.ctx(1, b"\x55")
        for choice, bit in CONFIRMED_BIT.items():
            answer = await client.ask(wire.confirmed(choice, body, invoke_id=choice))
            if (answer.kind, answer.reason) != (wire.REJECT, UNRECOGNIZED_SERVICE):
                executed.add(bit)
        instance = wire.unsigned(INSTANCE)
        who_is = b"\x01\x04\x10\x08" + wire.ctx(0, instance) + wire.ctx(1, instance)
        if await _unconfirmed_reply(client, b"\x81\x0a\x00" + bytes([len(who_is) + 4]) + who_is, 0):
            executed.add(WHO_IS_BIT)
        name = b"\x00" + b"input-power-meter"  # character string, UTF-8
        who_has = b"\x01\x04\x10\x07" + bytes([0x3D, len(name)]) + name
        frame = b"\x81\x0a\x00" + bytes([len(who_has) + 4]) + who_has
        if await _unconfirmed_reply(client, frame, 1):  # I-Have
            executed.add(WHO_HAS_BIT)
        # 8, 9: AddListElement, RemoveListElement (the Calendar objects' date-list)
        assert executed == {5, 8, 9, 12, 14, 15, 16, WHO_HAS_BIT, WHO_IS_BIT}
        assert claimed == executed


async def test_max_apdu_is_the_same_everywhere(make_core: Any, settings: Settings) -> None:
    """Device max-apdu-length-accepted, the I-Am and network-port apdu-length all say 1476."""
    async with running_device(make_core, settings) as (_core, _face, client):
        device = await client.ask(wire.read_property("device", INSTANCE, 62))
        port = await client.ask(wire.read_property("network-port", 1, 399))
        assert device.apdu[-4:-1] == port.apdu[-4:-1] == b"\x22\x05\xc4"  # Unsigned 1476
        instance = wire.unsigned(INSTANCE)
        who_is = b"\x01\x04\x10\x08" + wire.ctx(0, instance) + wire.ctx(1, instance)
        await client.send(b"\x81\x0a\x00" + bytes([len(who_is) + 4]) + who_is)
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(client.sock, 1500), 2.0)
        assert data[6:8] == b"\x10\x00"  # I-Am
        assert data[13:16] == b"\x22\x05\xc4"  # max-APDU-length-accepted 1476


async def test_network_port_wildcard_and_ip_properties(make_core: Any, settings: Settings) -> None:
    """network-port 4194303 is the device's port; ip-default-gateway and ip-dns-server read."""
    async with running_device(make_core, settings) as (_core, _face, client):
        reply = await client.ask(wire.read_property("network-port", 4194303, wire.OBJECT_NAME))
        assert reply.kind == wire.COMPLEX_ACK
        assert b"NetworkPort-1" in reply.apdu
        multiple = await client.ask(
            wire.read_property_multiple([("network-port", 4194303, [wire.OBJECT_NAME])])
        )
        assert multiple.kind == wire.COMPLEX_ACK
        assert multiple.apdu[3:8] == wire.ctx(0, wire.object_id("network-port", 1))
        for prop in (401, 406):  # ip-default-gateway, ip-dns-server
            answer = await client.ask(wire.read_property("network-port", 1, prop))
            assert answer.kind == wire.COMPLEX_ACK, prop
        unknown = await client.ask(wire.read_property("analog-value", 4194303, wire.OBJECT_NAME))
        assert unknown.error == (1, 31)  # object / unknown-object


# Lines one cause may log a minute (each is rate-limited to one line a minute).
MAX_LINES_PER_CAUSE_PER_MINUTE = 1


def _misbehaviours(instance: int) -> list[bytes]:
    """One frame of each misbehaviour issue #28 lists, from one client."""
    segmented = wire.confirmed(  # object-list in 50-octet segments, never acknowledged
        12,
        wire.ctx(0, wire.object_id("device", instance)) + wire.ctx(1, wire.unsigned(OBJECT_LIST)),
        header=b"\x02\x70",
    )
    return [
        wire.write_property_multiple(
            [("analog-value", 1, [(wire.PRESENT_VALUE, wire.real(1.0), 16)] * 257)]
        ),
        wire.read_property_multiple([("device", instance, [wire.ALL] * 20)]),
        wire.read_property_multiple([("analog-value", 1, [wire.ALL])]),  # queue overflow
        segmented,
        wire.subscribe_cov(1, "analog-value", 1, lifetime=None, confirmed_notifications=True),
        wire.subscribe_cov(2, "analog-value", 2, lifetime=0),
        wire.confirmed(1, wire.ctx(0, wire.unsigned(1))),  # ConfirmedCOVNotification
        wire.confirmed(26, wire.ctx(0, wire.object_id("analog-value", 1))),  # ReadRange
        wire.confirmed(12, b"\x0c\x00\x80"),  # truncated
    ]


async def test_log_stays_under_the_ceiling_whatever_a_client_sends(
    make_core: Any,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """2.5 s of every misbehaviour at once: at most one line per cause, no traceback."""
    # A fresh minute for every cause (earlier tests in this process logged some already).
    bacnet_logs.bad_packets.reset()
    async with running_device(make_core, settings) as (_core, face, writer):
        assert face.app is not None
        guard = face.app.source_guard  # never muted: every request reaches a handler
        guard.addresses.burst = guard.hosts.burst = 1e9
        face.app.device_object.apduSegmentTimeout = 100
        face.app.device_object.apduTimeout = 50
        face.app.device_object.numberOfApduRetries = 0
        clients = [wire.WireClient(writer.device[1], host=f"127.0.0.{i}") for i in (4, 5, 6)]
        try:
            # Dead confirmed subscribers and subscriptions beyond each one's cap.
            for client in clients:
                for process_id in range(bacnet_cov.MAX_COV_PER_SOURCE + 2):
                    await client.send(
                        wire.subscribe_cov(
                            process_id, "analog-value", 1, confirmed_notifications=True
                        )
                    )
            caplog.clear()
            with caplog.at_level(logging.INFO):
                loop = asyncio.get_running_loop()
                frames = _misbehaviours(INSTANCE)
                end = loop.time() + 2.5
                sent = 0
                while loop.time() < end:
                    client = clients[sent % len(clients)]
                    frame = frames[sent % len(frames)]
                    invoke_id = sent % 256
                    await client.send(frame[:9] + bytes([invoke_id]) + frame[10:])
                    sent += 1
                    if sent % 20 == 0:  # a write: a confirmed notification to each subscriber
                        await writer.send(
                            wire.write_property(
                                "analog-value", 1, wire.PRESENT_VALUE, wire.real(sent / 10), 16
                            )
                        )
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)
            assert sent > 500
        finally:
            for client in clients:
                client.close()
        records = _bacnet_records(caplog)
        assert not any(r.exc_info for r in records), [r.getMessage()[:100] for r in records]
        causes: dict[str, int] = {}
        for record in records:
            cause = str(record.msg).split(" (")[0]  # the template, without "(N more ...)"
            causes[cause] = causes.get(cause, 0) + 1
        assert causes, "the misbehaviours should have been logged once each"
        assert max(causes.values()) <= MAX_LINES_PER_CAUSE_PER_MINUTE, causes
        assert len(records) <= 20, [r.getMessage()[:100] for r in records]


BBMD_ACCEPT_FD_REGISTRATIONS = 413
REGISTER = b"\x81\x05\x00\x06\x00\x3c"  # Register-Foreign-Device, TTL 60 s


async def _bvlc_result(client: wire.WireClient) -> int:
    """The result code of the next BVLC-Result the client receives."""
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(client.sock, 1500), 2.0)
    assert data[:2] == b"\x81\x00", data.hex()
    return int.from_bytes(data[4:6], "big")


async def test_bbmd_accept_fd_registrations_is_writable_and_honoured(
    make_core: Any, settings: Settings
) -> None:
    """In BBMD mode the property is writable and the BBMD follows it; elsewhere it is denied."""
    peer = f"127.0.0.1/32:{free_port(socket.SOCK_DGRAM)}"
    async with running_device(make_core, settings, bbmd_bdt=[peer]) as (_core, _face, client):
        refuse = wire.write_property(
            "network-port", 1, BBMD_ACCEPT_FD_REGISTRATIONS, b"\x10", None
        )  # Boolean FALSE
        assert (await client.ask(refuse)).kind == wire.SIMPLE_ACK
        await client.send(REGISTER)
        assert await _bvlc_result(client) == 0x0030  # Register-Foreign-Device NAK
        accept = wire.write_property("network-port", 1, BBMD_ACCEPT_FD_REGISTRATIONS, b"\x11", None)
        assert (await client.ask(accept)).kind == wire.SIMPLE_ACK
        await client.send(REGISTER)
        assert await _bvlc_result(client) == 0
        wrong = wire.write_property(
            "network-port", 1, BBMD_ACCEPT_FD_REGISTRATIONS, wire.real(1.0), None
        )
        assert (await client.ask(wrong)).error == (2, 9)  # property / invalid-data-type
        other = wire.write_property("network-port", 1, wire.OBJECT_NAME, b"\x72\x00x", None)
        assert (await client.ask(other)).error == (2, 40)  # write-access-denied
    async with running_device(make_core, settings) as (_core, _face, client):
        accept = wire.write_property("network-port", 1, BBMD_ACCEPT_FD_REGISTRATIONS, b"\x11", None)
        assert (await client.ask(accept)).error == (2, 40)  # not a BBMD: write-access-denied


async def test_bbmd_foreign_device_table_is_capped(
    make_core: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_FOREIGN_DEVICES a new registration is NAKed; a registered device renews."""
    monkeypatch.setattr(bacnet_device, "MAX_FOREIGN_DEVICES", 1)
    peer = f"127.0.0.1/32:{free_port(socket.SOCK_DGRAM)}"
    async with running_device(make_core, settings, bbmd_bdt=[peer]) as (_core, _face, first):
        second = wire.WireClient(first.device[1])
        try:
            await first.send(REGISTER)
            assert await _bvlc_result(first) == 0
            await second.send(REGISTER)
            assert await _bvlc_result(second) == 0x0030
            await first.send(REGISTER)  # renewal
            assert await _bvlc_result(first) == 0
        finally:
            second.close()
