"""Every confirmed request answered: screened (budget, size, service) before it is decoded.

A mixin of ``OpenDsmApplication``: expensive requests run one at a time behind ``_gate``, the
ones that would cost too much are refused here for the price of a refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bacpypes3.apdu import (
    APDU,
    AbortPDU,
    AbortReason,
    APCISequence,
    ErrorPDU,
    RejectPDU,
    RejectReason,
)
from bacpypes3.app import Application
from bacpypes3.errors import OutOfResources, UnrecognizedService
from bacpypes3.pdu import PDU

from bacnet.logs import bad_packets
from bacnet.reads import MAX_RPM_PROPERTIES
from bacnet.transport import OpenDsmServerSSM, source_keys, undecodable

# Expensive requests (ReadPropertyMultiple, WritePropertyMultiple) run one at a time; at most
# this many wait, further ones are answered Abort out-of-resources at once.
MAX_QUEUED_EXPENSIVE = 4
# An expensive request spends one token more per this many property reads (ReadPropertyMultiple)
# or octets of parameters (WritePropertyMultiple, about 10 per write): 256 reads spend 17.
READS_PER_TOKEN = 16
WPM_OCTETS_PER_TOKEN = 160
# Confirmed services this device executes (ConfirmedServiceChoice names); any other confirmed
# request is answered Reject unrecognized-service, whether or not bacpypes3 has a handler.
CONFIRMED_EXECUTED = frozenset(
    {
        "readProperty",
        "readPropertyMultiple",
        "writeProperty",
        "writePropertyMultiple",
        "subscribeCOV",
        "addListElement",
        "removeListElement",
    }
)
_CONFIRMED_CHOICES = {
    0: "acknowledgeAlarm",
    1: "confirmedCOVNotification",
    2: "confirmedEventNotification",
    3: "getAlarmSummary",
    4: "getEnrollmentSummary",
    5: "subscribeCOV",
    6: "atomicReadFile",
    7: "atomicWriteFile",
    8: "addListElement",
    9: "removeListElement",
    10: "createObject",
    11: "deleteObject",
    12: "readProperty",
    14: "readPropertyMultiple",
    15: "writeProperty",
    16: "writePropertyMultiple",
    17: "deviceCommunicationControl",
    18: "confirmedPrivateTransfer",
    19: "confirmedTextMessage",
    20: "reinitializeDevice",
    26: "readRange",
    28: "subscribeCOVProperty",
    29: "getEventInformation",
}


def _tag(data: bytes, at: int) -> tuple[int, int, int, int]:
    """(tag number, class bit, length/value field, offset after the tag octet(s)) at ``at``."""
    octet = data[at]
    number, context, lvt = octet >> 4, octet & 0x08, octet & 0x07
    at += 1
    if number == 0x0F:
        number = data[at]
        at += 1
    if lvt == 5 and context:
        lvt = data[at]
        at += 1
    return number, context, lvt, at


def rpm_reference_count(data: bytes, defined: Callable[[int, int], int]) -> int | None:
    """Property reads a ReadPropertyMultiple's parameters ask for, from the raw octets.

    all/required/optional count as ``defined(object id, property id)`` reads. None when the octets
    are not a well-formed request (bacpypes3 then decodes and rejects it).
    """
    try:
        at, total, end = 0, 0, len(data)
        if end == 0:
            return None
        while at < end:
            number, context, length, at = _tag(data, at)
            if (number, context, length) != (0, 0x08, 4):
                return None
            object_id = int.from_bytes(data[at : at + 4], "big")
            at += 4
            if data[at] != 0x1E:
                return None
            at += 1
            while data[at] != 0x1F:
                number, context, length, at = _tag(data, at)
                if number != 0 or not context or not 1 <= length <= 4:
                    return None
                prop = int.from_bytes(data[at : at + length], "big")
                at += length
                if at < end and data[at] >> 4 == 1 and data[at] & 0x0F in (9, 10, 11, 12):
                    _number, _context, length, at = _tag(data, at)
                    at += length
                total += defined(object_id, prop) if prop in (8, 80, 105) else 1
            at += 1
        return total if at == end else None
    except IndexError:
        return None


class RequestScreen(Application):  # type: ignore[misc]
    """The application's confirmed-request path: screen, decode once, answer every request."""

    async def response(self, apdu: APDU) -> None:
        """Send a response; an Abort from this server carries SRV (clause 20.1.9.3).

        bacpypes3 builds the Abort for an AbortException raised in a handler without ``srv``,
        so the client never matches it to its request (it times out instead).
        """
        if isinstance(apdu, AbortPDU):
            apdu.apduSrv = True
        if isinstance(apdu, (ErrorPDU, RejectPDU, AbortPDU)):
            self.source_guard.spend(*source_keys(apdu.pduDestination), refused=True)
        await super().response(apdu)

    async def _refuse(self, apdu: APDU) -> None:
        """Send a Reject or Abort built by the screen, spending its source's budget."""
        self.source_guard.spend(*source_keys(apdu.pduDestination), refused=True)
        await self.asap.request(apdu)

    async def _confirmed_request(self, pdu: PDU) -> None:
        """A confirmed request, decoded once: screened, then run by its server transaction.

        bacpypes3's access point decodes the header, its server transaction the parameters;
        the screen needs both first, so it decodes them and hands the result on.
        """
        try:
            apdu = APDU.decode(pdu)
        except Exception as exc:
            undecodable(pdu, exc, self.source_guard)
            return
        if not apdu.apduSeg:  # segments go to their transaction, which decodes the whole
            apdu = await self._screen(apdu)
            if apdu is None:
                return
        # As bacpypes3's access point does: a retry or a segment continues its transaction.
        asap = self.asap
        source, invoke_id = apdu.pduSource, apdu.apduInvokeID
        for transaction in asap.serverTransactions:
            if transaction.invokeID == invoke_id and transaction.pdu_address == source:
                break
        else:
            transaction = OpenDsmServerSSM(asap, apdu.pduSource)
            asap.serverTransactions.append(transaction)
        await transaction.indication(apdu)

    async def _screen(self, apdu: Any) -> Any:
        """The decoded request, or None when it was answered here (Reject or Abort)."""
        name = _CONFIRMED_CHOICES.get(apdu.apduService)
        source = source_keys(apdu.pduSource)
        if name == "writePropertyMultiple":
            self.source_guard.spend(*source, 1 + len(apdu.pduData) / WPM_OCTETS_PER_TOKEN)
        if name == "readPropertyMultiple":
            references = rpm_reference_count(bytes(apdu.pduData), self._expanded_count)
            if references is not None and references > MAX_RPM_PROPERTIES:
                # Refused before it is decoded: decoding 150 references costs ~10 ms.
                bad_packets.warning(
                    "BACnet: ReadPropertyMultiple over %d properties aborted",
                    MAX_RPM_PROPERTIES,
                )
                await self._refuse(
                    AbortPDU(srv=True, reason=AbortReason.outOfResources, context=apdu)
                )
                return None
            # Refused above for the price of a refusal; admitted, for the reads it will make.
            self.source_guard.spend(*source, 1 + (references or 0) / READS_PER_TOKEN)
        if name not in CONFIRMED_EXECUTED:
            bad_packets.warning(
                "BACnet: unexecuted confirmed service %s rejected", apdu.apduService
            )
            await self._reject(apdu, RejectReason.unrecognizedService)
            return None
        expensive = name in ("readPropertyMultiple", "writePropertyMultiple")
        if expensive and self._decode_waiting >= MAX_QUEUED_EXPENSIVE:
            # As many wait to be decoded as may wait to run: refuse now, not after a backlog.
            bad_packets.warning("BACnet: expensive request refused, %d waiting", self._waiting)
            await self._refuse(AbortPDU(srv=True, reason=AbortReason.outOfResources, context=apdu))
            return None
        try:
            if not expensive:
                return APCISequence.decode(apdu)
            # Decoding 256 references holds the loop for 15-45 ms: one such decode per turn of
            # the loop, so requests from other sources are served between them.
            self._decode_waiting += 1
            try:
                async with self._decoding:
                    decoded = APCISequence.decode(apdu)
                    await asyncio.sleep(0)
            finally:
                self._decode_waiting -= 1
            return decoded
        except Exception as exc:
            bad_packets.warning(
                "BACnet: malformed %s request from %s rejected (%s)",
                name,
                apdu.pduSource,
                type(exc).__name__,
            )
            await self._reject(apdu, RejectReason.invalidTag)
            return None

    async def _reject(self, apdu: APDU, reason: Any) -> None:
        await self._refuse(RejectPDU(reason=reason, context=apdu))

    async def do_ReadRangeRequest(self, apdu: Any) -> None:
        """Not executed (not claimed): Reject unrecognized-service."""
        raise UnrecognizedService()

    async def do_DeviceCommunicationControlRequest(self, apdu: Any) -> None:
        """Not executed (not claimed): Reject unrecognized-service."""
        raise UnrecognizedService()

    async def _gate(self) -> None:
        if self._waiting >= MAX_QUEUED_EXPENSIVE:
            bad_packets.warning("BACnet: expensive request refused, %d waiting", self._waiting)
            raise OutOfResources()
        self._waiting += 1
        try:
            await self._expensive.acquire()
        finally:
            self._waiting -= 1
