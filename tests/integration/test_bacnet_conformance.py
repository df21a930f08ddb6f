"""What a BTL tester would still write up (issue #28), against hand-encoded frames on loopback."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from core.config import Settings
from tests import bacnet_wire as wire
from tests.integration.test_bacnet_device import INSTANCE, running_device

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

OUT_OF_RESOURCES, TSM_TIMEOUT = 9, 10
OBJECT_LIST = 76


def _bacnet_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("bacpypes3", "bacnet", "asyncio"))]


async def test_aborts_from_handlers_carry_srv(make_core: Any, settings: Settings) -> None:
    """A WritePropertyMultiple over 256 writes and a full expensive queue: Abort with SRV."""
    async with running_device(make_core, settings) as (_core, _face, client):
        writes = [(wire.PRESENT_VALUE, wire.real(1.0), 16)] * 257
        reply = await client.ask(
            wire.write_property_multiple([("analog-value", 1, writes)], invoke_id=3)
        )
        assert (reply.kind, reply.apdu[1], reply.reason) == (wire.ABORT, 3, OUT_OF_RESOURCES)
        assert reply.srv and reply.apdu[0] == 0x71
        # Twelve expensive requests at once: one runs, four wait, the rest are aborted.
        frame_specs = [("analog-value", i, [wire.ALL]) for i in range(1, 12)]
        for invoke_id in range(20, 32):
            await client.send(wire.read_property_multiple(frame_specs, invoke_id=invoke_id))
        replies = []
        while (answer := await client.receive(wait_s=3.0)) is not None:
            replies.append(answer)
            if len(replies) == 12:
                break
        assert sorted(r.apdu[1] for r in replies) == list(range(20, 32)), "every one answered"
        aborts = [r for r in replies if r.kind == wire.ABORT]
        assert aborts, "the queue of expensive requests should have overflowed"
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
