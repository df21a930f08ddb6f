"""Bounded fuzz: malformed datagrams never stall the device nor flood the log (issue #9, 13)."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest

from core.config import Settings
from tests import bacnet_wire as wire
from tests.integration.test_bacnet_device import INSTANCE, running_device

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DATAGRAMS = 3000
# Lines the whole fuzz run may log (rate-limited: one per kind of bad packet).
MAX_LOG_LINES = 60


def _valid_frames() -> list[bytes]:
    return [
        wire.read_property("analog-value", 1, wire.PRESENT_VALUE),
        wire.read_property_multiple([("device", INSTANCE, [wire.ALL])]),
        wire.write_property("analog-value", 1, wire.PRESENT_VALUE, wire.real(5.0), 16),
        wire.write_property_multiple(
            [("analog-value", 1, [(wire.PRESENT_VALUE, wire.real(6.0), 16)])]
        ),
        wire.subscribe_cov(3, "analog-value", 1),
        b"\x81\x0b\x00\x0c\x01\x20\xff\xff\x00\xff\x10\x08",  # global Who-Is
    ]


def _mutant(rng: random.Random, frames: list[bytes]) -> bytes:
    """One malformed datagram: random bytes, a truncated, flipped or re-lengthed frame."""
    base = bytearray(rng.choice(frames))
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 64))
    if kind == 1:
        return bytes(base[: rng.randrange(1, len(base))])
    if kind == 2:
        for _ in range(rng.randrange(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        return bytes(base)
    if kind == 3:  # the BVLC length lies
        base[2:4] = rng.randrange(65536).to_bytes(2, "big")
        return bytes(base)
    if kind == 4:  # a confirmed request with an unknown or unclaimed service
        return wire.confirmed(rng.choice([0, 6, 7, 8, 10, 17, 20, 26, 29, 40, 99]), b"\x09\x01")
    tail = rng.randbytes(rng.randrange(0, 12))
    return bytes(base[: max(7, len(base) - 3)]) + tail  # a valid header, garbage parameters


async def test_malformed_datagrams_neither_stall_nor_flood(
    make_core: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """3,000 mutants: the device answers a ReadProperty within 1 s and logs a few lines."""
    rng = random.Random(9)
    frames = _valid_frames()
    async with running_device(make_core, settings) as (_core, face, client):
        assert face.app is not None
        # Every mutant reaches the decoders: the per-source budget (which would mute this
        # client after SOURCE_BURST refusals under contention) is tested on its own.
        guard = face.app.source_guard
        guard.addresses.burst = guard.hosts.burst = 1e9
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for index in range(DATAGRAMS):
                await client.send(_mutant(rng, frames))
                if index % 50 == 0:
                    await asyncio.sleep(0)  # let the device read its socket
            await asyncio.sleep(0.5)
            # Drain whatever the mutants caused, then ask.
            while await client.receive(wait_s=0.2) is not None:
                pass
            loop = asyncio.get_running_loop()
            started = loop.time()
            reply = await client.ask(
                wire.read_property("analog-value", 1, wire.OBJECT_NAME, invoke_id=200),
                wait_s=1.0,
            )
            assert reply.kind == wire.COMPLEX_ACK
            assert loop.time() - started < 1.0
        lines = [r for r in caplog.records if r.name.startswith(("bacpypes3", "bacnet"))]
        assert len(lines) <= MAX_LOG_LINES, [r.getMessage()[:120] for r in lines[:80]]
        assert not any(r.exc_info for r in lines), "tracebacks in the log"
