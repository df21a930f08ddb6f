"""The command port's records and the writer a BACnet point holds (pure logic, a fake port)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from core.commands import InputKey
from core.ports import (
    Command,
    InputWriter,
    RelinquishInput,
    SubmitReadings,
    WriteInput,
    WriteInputs,
)


class _RecordingPort:
    """A command port that keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[Command[Any]] = []

    async def command(self, cmd: Command[Any]) -> Any:
        self.sent.append(cmd)
        return None


def test_a_point_writer_sends_one_write_record_with_its_key_priority_and_source() -> None:
    port = _RecordingPort()
    writer = InputWriter(port, InputKey.METER_KW)
    asyncio.run(writer.command(12.5, 8))
    assert port.sent == [WriteInput(InputKey.METER_KW, 12.5, 8, "bacnet")]


def test_a_null_write_is_sent_as_a_relinquish_of_that_priority() -> None:
    port = _RecordingPort()
    writer = InputWriter(port, InputKey.DEMAND_TARGET_KW)
    asyncio.run(writer.command(None, 5))
    assert port.sent == [RelinquishInput(InputKey.DEMAND_TARGET_KW, 5, "bacnet")]


def test_command_records_are_frozen() -> None:
    record = WriteInputs({"pv_power_kw": 3.5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.source = "bacnet"  # type: ignore[misc]
    assert SubmitReadings([]).source == "rest"
