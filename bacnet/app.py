"""The BACnet application: bacpypes3's, with bounded request handlers and every request answered."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bacpypes3 import appservice, ipv4
from bacpypes3.apdu import (
    APDU,
    AbortPDU,
    AbortReason,
    APCISequence,
    ComplexAckPDU,
    ConfirmedRequestPDU,
    ErrorPDU,
    ReadPropertyMultipleACK,
    RejectPDU,
    RejectReason,
    SimpleAckPDU,
    WritePropertyMultipleError,
)
from bacpypes3.app import Application
from bacpypes3.appservice import ABORTED, ServerSSM
from bacpypes3.basetypes import (
    ErrorType,
    ObjectPropertyReference,
    PropertyIdentifier,
    ReadAccessResult,
    ReadAccessResultElement,
    ReadAccessResultElementChoice,
)
from bacpypes3.constructeddata import Array
from bacpypes3.errors import (
    ExecutionError,
    MissingRequiredParameter,
    ObjectError,
    OutOfResources,
    UnrecognizedService,
)
from bacpypes3.pdu import PDU
from bacpypes3.primitivedata import ObjectIdentifier, ObjectType, Unsigned
from bacpypes3.service.object import read_property_to_result_element

from bacnet.limits import SourceGuard
from core.logs import RateLimitedLogger

log = logging.getLogger(__name__)
# Anyone on the network decides how many bad packets arrive: one line per kind a minute.
_bad_packets = RateLimitedLogger(log, interval_s=60.0)

# One ReadPropertyMultiple may cause at most this many property reads (after expanding
# all/required/optional); more is answered Abort out-of-resources before any is read.
MAX_RPM_PROPERTIES = 256
# Expensive requests (ReadPropertyMultiple, WritePropertyMultiple) run one at a time; at most
# this many wait, further ones are answered Abort out-of-resources at once.
MAX_QUEUED_EXPENSIVE = 4
# A ReadPropertyMultiple yields the event loop after this many property reads.
READS_PER_YIELD = 16
# COV subscriptions held at once, in total and per source (an IP host, whatever its UDP ports);
# a new subscription beyond either answers Error resources/no-space-to-add-list-element (renewals
# always succeed). 8 hosts are needed to fill the device.
MAX_COV_SUBSCRIPTIONS = 64
MAX_COV_PER_SOURCE = 8
# A subscription's lifetime is 1..MAX_COV_LIFETIME_S seconds; indefinite (0 or absent) or longer
# answers Error services/parameter-out-of-range, so a subscriber that goes away frees its slots.
MAX_COV_LIFETIME_S = 3600
# A confirmed subscription whose notifications fail this many times in a row is cancelled.
MAX_COV_NOTIFY_FAILURES = 3
# Per source address (B/IP: host and UDP port): each expensive request (ReadPropertyMultiple,
# WritePropertyMultiple, a segmented response) and each refused one (answered Reject, Abort or
# Error, or undecodable) spends a token (an expensive one more by its size, below); a source has
# SOURCE_BURST tokens and regains SOURCE_RATE_PER_S a second, its host 5 times as many. While
# another address is talking (within the last second), a source or host without a token has its
# datagrams dropped unread, so a flooding source cannot make the device deaf to the others. A
# source alone is held back only while the loop lags (a callback BUSY_LAG_S late within the last
# second) and it has also spent as many tokens on refused requests alone: a lone client polling
# flat out is never held back.
SOURCE_RATE_PER_S = 20.0
SOURCE_BURST = 60.0
BUSY_LAG_S = 0.02
LAG_PROBE_S = 0.05
# Datagrams read per wake-up of the UDP socket beyond asyncio's one.
DRAIN_PER_WAKEUP = 64
# The UDP socket's receive buffer (the kernel caps it at net.core.rmem_max).
RECEIVE_BUFFER_BYTES = 2 * 1024 * 1024
# An expensive request spends one token more per this many property reads (ReadPropertyMultiple)
# or octets of parameters (WritePropertyMultiple, about 10 per write): 256 reads spend 17.
READS_PER_TOKEN = 16
WPM_OCTETS_PER_TOKEN = 160

WILDCARD_DEVICE = 4194303
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
# The protocol-services-supported names of the services this device executes (clause 12.11.29:
# a service it only initiates, I-Am, I-Have and the COV notifications, is not set).
SERVICES_SUPPORTED = (
    "readProperty",
    "readPropertyMultiple",
    "writeProperty",
    "writePropertyMultiple",
    "subscribeCOV",
    "addListElement",
    "removeListElement",
    "whoIs",
    "whoHas",
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
_ALL_KINDS = (PropertyIdentifier.all, PropertyIdentifier.required, PropertyIdentifier.optional)


# Properties clause 12 requires of these object types (always, or in the case this device is in:
# commandable, COV executed, segmentation supported, B/IP, BBMD, foreign device) that bacpypes3's
# classes leave out of their required list; REQUIRED returns them when present.
EXTRA_REQUIRED: dict[str, frozenset[str]] = {
    "device": frozenset({"maxSegmentsAccepted", "apduSegmentTimeout", "activeCovSubscriptions"}),
    "analog-value": frozenset(
        {"priorityArray", "relinquishDefault", "currentCommandPriority", "covIncrement"}
    ),
    "binary-value": frozenset({"priorityArray", "relinquishDefault", "currentCommandPriority"}),
    "network-port": frozenset(
        {
            "networkNumber",
            "networkNumberQuality",
            "apduLength",
            "macAddress",
            "bacnetIPMode",
            "ipAddress",
            "bacnetIPUDPPort",
            "ipSubnetMask",
            "ipDefaultGateway",
            "ipDNSServer",
            "bbmdAcceptFDRegistrations",
            "bbmdBroadcastDistributionTable",
            "bbmdForeignDeviceTable",
            "fdBBMDAddress",
            "fdSubscriptionLifetime",
        }
    ),
}


def expand_properties(obj: Any, which: PropertyIdentifier) -> list[str]:
    """The property names an all/required/optional reference reads on ``obj`` (present ones)."""
    required: set[str] = set(EXTRA_REQUIRED.get(str(obj.objectIdentifier[0]), ()))
    for cls in reversed(type(obj).__mro__):
        required |= set(getattr(cls, "_required", ()))
    present = [
        n
        for n in obj._elements
        if n != "propertyList" and inspect.getattr_static(obj, n, None) is not None
    ]
    if which == PropertyIdentifier.required:
        return [n for n in present if n in required]
    if which == PropertyIdentifier.optional:
        return [n for n in present if n not in required]
    return present


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


class BadPacketLogFilter(logging.Filter):
    """bacpypes3's warnings and errors: one line per logger and message a minute, no traceback.

    bacpypes3 logs each undecodable datagram with a traceback (a remote party controls the
    volume); this keeps one summary line per kind and counts the rest.
    """

    MAX_KINDS = 256

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass the first of each kind per interval, summarised; drop the rest."""
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        if len(self._last) >= self.MAX_KINDS and kind not in self._last:
            oldest = min(self._last, key=self._last.__getitem__)
            del self._last[oldest]
            self._suppressed.pop(oldest, None)
        self._last[kind] = now
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message = f"{message} [{type(error).__name__}: {error}]"
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message = f"{message} ({suppressed} more like it suppressed)"
        record.msg, record.args = message, ()
        record.exc_info, record.exc_text = None, None
        return True


_LOG_FILTER = BadPacketLogFilter()


def guard_bacpypes3_logs() -> None:
    """Rate-limit every bacpypes3 logger (each exists once its module is imported)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (
            name.startswith("bacpypes3")
            and isinstance(logger, logging.Logger)
            and _LOG_FILTER not in logger.filters
        ):
            logger.addFilter(_LOG_FILTER)


def source_key(address: Any) -> str:
    """The source a COV cap counts: the IP host of a B/IP address, else the address."""
    host = getattr(address, "addrTuple", None)
    return str(host[0]) if host else str(address)


def source_keys(address: Any) -> tuple[str, str]:
    """(host, address) a budget charges: IP and IP:port of a B/IP address, else the address."""
    pair = getattr(address, "addrTuple", None)
    if not pair:
        return str(address), str(address)
    return str(pair[0]), f"{pair[0]}:{pair[1]}"


_muted_log = RateLimitedLogger(log, interval_s=60.0)


def _muted(guard: SourceGuard, host: str, address: str) -> bool:
    if not guard.muted(host, address):
        return False
    _muted_log.warning(
        "BACnet: requests from %s dropped while others wait: over its budget of %g "
        "expensive or refused requests a second",
        address,
        guard.addresses.rate_per_s,
        key="muted",  # one line a minute whatever the number of sources
    )
    return True


class GuardedDatagramProtocol(ipv4.IPv4DatagramProtocol):  # type: ignore[misc]
    """bacpypes3's UDP protocol, dropping a muted source's datagrams before anything is decoded.

    bacpypes3 builds a PDU, an address and a task for every datagram before any layer can look
    at it; a source over its budget costs a dictionary look-up here instead.
    """

    _drain: socket.socket | None = None

    def connection_made(self, transport: Any) -> None:
        """As bacpypes3, with a receive buffer that absorbs a flood while the loop is busy."""
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and getattr(self.server, "source_guard", None) is not None:
            # The default (208 kB, ~90 datagrams on loopback) overflows in 0.2 s at 400/s, and
            # the kernel then drops every source's datagrams alike; the kernel caps this at
            # net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            self._drain = sock.dup()  # the same queue, read past asyncio's one per loop turn

    def connection_lost(self, exc: Exception | None) -> None:
        """Close the draining socket too."""
        if self._drain is not None:
            self._drain.close()
            self._drain = None
        super().connection_lost(exc)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Hand the datagram on unless its source is muted; then drain what else is queued.

        asyncio reads one datagram per turn of the loop: while a turn is long (an expensive
        request is running), a flood queues thousands ahead of another source's request. So
        each wake-up also reads up to DRAIN_PER_WAKEUP more, dropping the muted ones at once.
        """
        guard: SourceGuard | None = getattr(self.server, "source_guard", None)
        if guard is None:
            super().datagram_received(data, addr)
            return
        if not _muted(guard, addr[0], f"{addr[0]}:{addr[1]}"):
            super().datagram_received(data, addr)
        for _ in range(DRAIN_PER_WAKEUP):
            if self._drain is None:
                return
            try:
                data, addr = self._drain.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not _muted(guard, addr[0], f"{addr[0]}:{addr[1]}"):
                super().datagram_received(data, addr)


# A segmented ComplexACK's header: type/flags, invoke id, sequence number, window size, service.
SEGMENTED_ACK_HEADER = 5


class OpenDsmServerSSM(ServerSSM):  # type: ignore[misc]
    """bacpypes3's server transaction: segment header counted, screened requests decoded once.

    bacpypes3 cuts a response into segments of max-APDU octets of service data, so every
    datagram carried 5 octets more than the client accepts. And it decodes every request's
    parameters when it hands the request to the application, although the request screen
    has decoded them already.
    """

    async def request(self, apdu: Any) -> None:
        """Hand a request to the application, decoding its parameters only if not done yet."""
        if isinstance(apdu, AbortPDU):
            await super().request(apdu)
            return
        if not isinstance(apdu, APCISequence):  # a reassembled segmented request
            try:
                apdu = APCISequence.decode(apdu)
            except Exception as exc:
                # bacpypes3 hands its Abort for an undecodable request to the application, so
                # the client was never answered: Reject it as an unsegmented one is.
                _bad_packets.warning(
                    "BACnet: malformed segmented request from %s rejected (%s)",
                    self.pdu_address,
                    type(exc).__name__,
                )
                await self.confirmation(
                    RejectPDU(reason=RejectReason.invalidTag, context=self.segmentAPDU)
                )
                return
        apdu.pduSource = self.pdu_address
        apdu.pduDestination = None
        await self.ssmSAP.sap_request(apdu)

    async def confirmation(self, apdu: Any) -> None:
        """Segment a ComplexACK into pieces that fit the client's max-APDU with the header."""
        limit: int | None = getattr(self, "maxApduLengthAccepted", None)
        if apdu.apduType == ComplexAckPDU.pduType and limit and len(apdu.pduData) > limit:
            self._spend()  # a segmented response is an expensive request
            self.maxApduLengthAccepted = limit - SEGMENTED_ACK_HEADER
            try:
                await super().confirmation(apdu)
            finally:
                self.maxApduLengthAccepted = limit
            return
        await super().confirmation(apdu)

    def _spend(self, refused: bool = False) -> None:
        guard: SourceGuard | None = getattr(self.ssmSAP, "source_guard", None)
        if guard is not None:
            guard.spend(*source_keys(self.pdu_address), refused=refused)

    async def segmented_response_timeout(self) -> None:
        """No Segment-ACK in time: resend the window, then give up with an Abort tsm-timeout.

        bacpypes3 resends with ``fill_window``, which asserts a window size that only a Segment-ACK
        sets: a client that never acknowledges the first segment raised AssertionError on every
        timeout (a logged traceback each, no retransmission, no Abort).
        """
        if self.segmentRetryCount < self.numberOfApduRetries:
            self.segmentRetryCount += 1
            self.start_timer(self.segmentTimeout)
            if self.actualWindowSize:
                await self.fill_window(self.initialSequenceNumber)
            else:  # no Segment-ACK yet: the first segment is the whole window
                await self.response(self.get_segment(0))
            return
        _bad_packets.warning(
            "BACnet: segmented response to %s never acknowledged, aborted", self.pdu_address
        )
        self._spend(refused=True)
        self.set_state(ABORTED)
        await self.response(AbortPDU(True, self.invokeID, AbortReason.tsmTimeout))


def install_server_ssm() -> None:
    """Make bacpypes3 build OpenDsmServerSSM transactions and guarded UDP protocols.

    Process-wide; a UDP server without a ``source_guard`` (another application) is unchanged.
    """
    appservice.ServerSSM = OpenDsmServerSSM
    ipv4.IPv4DatagramProtocol = GuardedDatagramProtocol


def _undecodable(pdu: PDU, exc: Exception, guard: SourceGuard) -> None:
    guard.spend(*source_keys(pdu.pduSource), refused=True)
    _bad_packets.warning(
        "BACnet: undecodable APDU from %s dropped (%s)", pdu.pduSource, type(exc).__name__
    )


class OpenDsmApplication(Application):  # type: ignore[misc]
    """bacpypes3's Application with the handlers this device needs to be bounded and truthful."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._expensive = asyncio.Semaphore(1)
        self._waiting = 0
        self._decoding = asyncio.Lock()
        self._decode_waiting = 0
        self._expansions: dict[tuple[Any, int], list[str]] = {}
        self.source_guard = SourceGuard(SOURCE_RATE_PER_S, SOURCE_BURST, busy_lag_s=BUSY_LAG_S)
        self._lag_probe: asyncio.TimerHandle | None = None

    @classmethod
    def from_object_list(cls, objects: list[Any], **kwargs: Any) -> OpenDsmApplication:
        """Build as bacpypes3 does, then take confirmed requests before its state machines."""
        app: OpenDsmApplication = super().from_object_list(objects, **kwargs)
        guard_bacpypes3_logs()
        install_server_ssm()
        for link in app.link_layers.values():
            server = getattr(link, "server", None)
            if server is not None:
                server.source_guard = app.source_guard
        app.asap.source_guard = app.source_guard
        app._probe_lag(asyncio.get_running_loop().time())
        original = app.asap.confirmation

        async def confirmation(pdu: PDU) -> None:
            data = pdu.pduData
            # A request forwarded by a BBMD came from another host than the datagram.
            if _muted(app.source_guard, *source_keys(pdu.pduSource)):
                return
            if (
                data
                and data[0] >> 4 == ConfirmedRequestPDU.pduType
                # bacpypes3 drops requests while communication is disabled (DCC is rejected,
                # so it never is): leave that case to it.
                and app.asap.dccEnableDisable != "disable"
            ):
                await app._confirmed_request(pdu)
                return
            # Anything else goes to bacpypes3 as it came, if its header decodes (bacpypes3
            # would raise out of the datagram handler): check that on a copy.
            copy = PDU(bytearray(data), source=pdu.pduSource, destination=pdu.pduDestination)
            try:
                APDU.decode(copy)
            except Exception as exc:
                _undecodable(pdu, exc, app.source_guard)
                return
            await original(pdu)

        app.asap.confirmation = confirmation
        return app

    def _probe_lag(self, expected: float) -> None:
        """Every LAG_PROBE_S, tell the source guard how late the loop ran this callback."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.source_guard.note_lag(now - expected)
        self._lag_probe = loop.call_later(LAG_PROBE_S, self._probe_lag, now + LAG_PROBE_S)

    def close(self) -> None:
        """Stop the lag probe, then close as bacpypes3 does."""
        if self._lag_probe is not None:
            self._lag_probe.cancel()
            self._lag_probe = None
        super().close()

    # ---- every confirmed request answered -------------------------------------------------

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
            _undecodable(pdu, exc, self.source_guard)
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
                _bad_packets.warning(
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
            _bad_packets.warning(
                "BACnet: unexecuted confirmed service %s rejected", apdu.apduService
            )
            await self._reject(apdu, RejectReason.unrecognizedService)
            return None
        expensive = name in ("readPropertyMultiple", "writePropertyMultiple")
        if expensive and self._decode_waiting >= MAX_QUEUED_EXPENSIVE:
            # As many wait to be decoded as may wait to run: refuse now, not after a backlog.
            _bad_packets.warning("BACnet: expensive request refused, %d waiting", self._waiting)
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
            _bad_packets.warning(
                "BACnet: malformed %s request from %s rejected (%s)",
                name,
                apdu.pduSource,
                type(exc).__name__,
            )
            await self._reject(apdu, RejectReason.invalidTag)
            return None

    def _expand(self, object_id: Any, obj: Any, which: Any) -> list[str]:
        """expand_properties, once per object and kind (getattr_static costs ~0.1 ms a name)."""
        key = (object_id, int(which))
        names = self._expansions.get(key)
        if names is None:
            names = self._expansions[key] = expand_properties(obj, PropertyIdentifier(int(which)))
        return names

    def _expanded_count(self, object_id: int, which: int) -> int:
        """How many properties an all/required/optional reference reads on an object."""
        resolved = self._resolve(ObjectIdentifier(object_id))
        obj = self.get_object_id(resolved)
        return 1 if obj is None else len(self._expand(resolved, obj, which))

    async def _reject(self, apdu: APDU, reason: Any) -> None:
        await self._refuse(RejectPDU(reason=reason, context=apdu))

    async def do_ReadRangeRequest(self, apdu: Any) -> None:
        """Not executed (not claimed): Reject unrecognized-service."""
        raise UnrecognizedService()

    async def do_DeviceCommunicationControlRequest(self, apdu: Any) -> None:
        """Not executed (not claimed): Reject unrecognized-service."""
        raise UnrecognizedService()

    # ---- reads ----------------------------------------------------------------------------

    def _resolve(self, object_identifier: Any) -> Any:
        """The object an identifier names: instance 4194303 of device or network-port is ours.

        bacpypes3 compares with ("device", 4194303), which an ObjectIdentifier never equals, and
        has no network-port wildcard (clause 12.56.1: the port the request came through; this
        device has one).
        """
        object_identifier = ObjectIdentifier(object_identifier)
        if object_identifier[1] != WILDCARD_DEVICE:
            return object_identifier
        if object_identifier[0] == ObjectType.device and self.device_object is not None:
            return self.device_object.objectIdentifier
        if object_identifier[0] == ObjectType.networkPort and self.link_layers:
            return next(iter(self.link_layers))
        return object_identifier

    async def do_ReadPropertyRequest(self, apdu: Any) -> None:
        """bacpypes3's ReadProperty through the wildcard device instance."""
        apdu.objectIdentifier = ObjectIdentifier(self._resolve(apdu.objectIdentifier))
        await super().do_ReadPropertyRequest(apdu)

    async def _gate(self) -> None:
        if self._waiting >= MAX_QUEUED_EXPENSIVE:
            _bad_packets.warning("BACnet: expensive request refused, %d waiting", self._waiting)
            raise OutOfResources()
        self._waiting += 1
        try:
            await self._expensive.acquire()
        finally:
            self._waiting -= 1

    async def do_ReadPropertyMultipleRequest(self, apdu: Any) -> None:
        """ReadPropertyMultiple with at most MAX_RPM_PROPERTIES reads, yielding the loop."""
        plan: list[tuple[Any, Any, list[tuple[Any, Any, bool]]]] = []
        count = 0
        for spec in apdu.listOfReadAccessSpecs:
            object_id = self._resolve(spec.objectIdentifier)
            obj = self.get_object_id(object_id)
            refs: list[tuple[Any, Any, bool]] = []
            for ref in spec.listOfPropertyReferences:
                pid = ref.propertyIdentifier
                if obj is not None and pid in _ALL_KINDS:
                    refs.extend((n, None, True) for n in self._expand(object_id, obj, pid))
                else:
                    refs.append((pid, ref.propertyArrayIndex, False))
                if count + len(refs) > MAX_RPM_PROPERTIES:
                    _bad_packets.warning(
                        "BACnet: ReadPropertyMultiple over %d properties aborted",
                        MAX_RPM_PROPERTIES,
                    )
                    raise OutOfResources()
            count += len(refs)
            plan.append((object_id, obj, refs))
        if all(obj is None for _, obj, _ in plan):
            raise ObjectError("unknown-object")
        await self._gate()
        try:
            results = []
            reads = 0
            for object_id, obj, refs in plan:
                elements = []
                for pid, index, from_all in refs:
                    if obj is None:
                        choice = ReadAccessResultElementChoice(
                            propertyAccessError=ErrorType(
                                errorClass="object", errorCode="unknownObject"
                            )
                        )
                        elements.append(
                            ReadAccessResultElement(
                                propertyIdentifier=pid, propertyArrayIndex=index, readResult=choice
                            )
                        )
                        continue
                    element = await _read_element(obj, pid, index)
                    if from_all and element.readResult.propertyAccessError:
                        continue
                    elements.append(element)
                    reads += 1
                    if reads % READS_PER_YIELD == 0:
                        await asyncio.sleep(0)
                results.append(ReadAccessResult(objectIdentifier=object_id, listOfResults=elements))
        finally:
            self._expensive.release()
        await self.response(ReadPropertyMultipleACK(listOfReadAccessResults=results, context=apdu))

    # ---- writes ---------------------------------------------------------------------------

    async def _write_one(
        self, object_id: Any, pid: Any, index: int | None, value: Any, priority: int | None
    ) -> None:
        """One property write as WriteProperty and WritePropertyMultiple both do it."""
        obj = self.get_object_id(self._resolve(object_id))
        if obj is None:
            raise ExecutionError(errorClass="object", errorCode="unknownObject")
        property_type = obj.get_property_type(pid)
        if property_type is None:
            raise ExecutionError(errorClass="property", errorCode="unknownProperty")
        name = PropertyIdentifier(pid).attr if isinstance(pid, int) else str(pid)
        # Each writable object type says what a network write may change (a point's
        # present-value, a Calendar's date-list, network-port's BBMD setting); the rest is denied.
        if name not in getattr(obj, "network_writable", ()):
            raise ExecutionError(errorClass="property", errorCode="writeAccessDenied")
        if issubclass(property_type, Array) and index is not None:
            property_type = Unsigned if index == 0 else property_type._subtype
        try:
            # Null is accepted with or without a priority: without one it relinquishes 16
            # (clause 15.9); bacpypes3 casts Null only when a priority is given.
            decoded = value.cast_out(property_type, null=True)
        except Exception as exc:
            raise ExecutionError(errorClass="property", errorCode="invalidDataType") from exc
        await obj.write_property(pid, decoded, index, priority)

    async def do_WritePropertyRequest(self, apdu: Any) -> None:
        """WriteProperty: presentValue of commandable inputs only, Null relinquishes."""
        await self._write_one(
            apdu.objectIdentifier,
            apdu.propertyIdentifier,
            apdu.propertyArrayIndex,
            apdu.propertyValue,
            apdu.priority,
        )
        await self.response(SimpleAckPDU(context=apdu))

    async def do_WritePropertyMultipleRequest(self, apdu: Any) -> None:
        """WritePropertyMultiple in order; the first failure answers WritePropertyMultiple-Error."""
        specs = list(apdu.listOfWriteAccessSpecs)
        if sum(len(spec.listOfProperties) for spec in specs) > MAX_RPM_PROPERTIES:
            raise OutOfResources()
        await self._gate()
        try:
            for spec in specs:
                for prop in spec.listOfProperties:
                    try:
                        await self._write_one(
                            spec.objectIdentifier,
                            prop.propertyIdentifier,
                            prop.propertyArrayIndex,
                            prop.value,
                            prop.priority,
                        )
                    except ExecutionError as err:
                        reference = ObjectPropertyReference(
                            objectIdentifier=spec.objectIdentifier,
                            propertyIdentifier=prop.propertyIdentifier,
                        )
                        if prop.propertyArrayIndex is not None:
                            reference.propertyArrayIndex = prop.propertyArrayIndex
                        await self.response(
                            WritePropertyMultipleError(
                                errorType=ErrorType(
                                    errorClass=err.errorClass, errorCode=err.errorCode
                                ),
                                firstFailedWriteAttempt=reference,
                                context=apdu,
                            )
                        )
                        return
        finally:
            self._expensive.release()
        await self.response(SimpleAckPDU(context=apdu))

    async def do_AddListElementRequest(self, apdu: Any) -> None:
        """AddListElement: a Calendar object's date-list (bacnet/calendar.py)."""
        from bacnet.calendar import change_list

        obj = self.get_object_id(self._resolve(apdu.objectIdentifier))
        await change_list(self, obj, apdu, add=True)

    async def do_RemoveListElementRequest(self, apdu: Any) -> None:
        """RemoveListElement: a Calendar object's date-list (bacnet/calendar.py)."""
        from bacnet.calendar import change_list

        obj = self.get_object_id(self._resolve(apdu.objectIdentifier))
        await change_list(self, obj, apdu, add=False)

    # ---- COV ------------------------------------------------------------------------------

    def cov_subscriptions(self) -> list[Any]:
        """Every live COV subscription (bacpypes3 Subscription objects)."""
        return [
            cov
            for detection in self._cov_detections.values()
            for cov in detection.cov_subscriptions
        ]

    async def do_SubscribeCOVRequest(self, apdu: Any) -> None:
        """SubscribeCOV with bounded subscriptions and lifetimes and the standard errors."""
        cancel = apdu.issueConfirmedNotifications is None and apdu.lifetime is None
        obj = self.get_object_id(apdu.monitoredObjectIdentifier)
        if obj is not None and getattr(obj, "_cov_criteria", None) is None and not cancel:
            raise ExecutionError(errorClass="object", errorCode="optionalFunctionalityNotSupported")
        if obj is not None and not cancel:
            if apdu.issueConfirmedNotifications is None:  # a lifetime without it (13.14.1.1.4)
                raise MissingRequiredParameter()
            # No lifetime means indefinite, as 0 does (bacpypes3 compared None with 0 and
            # answered operational-problem): neither is accepted, nor one over the cap.
            if apdu.lifetime is None or not 1 <= apdu.lifetime <= MAX_COV_LIFETIME_S:
                raise ExecutionError(errorClass="services", errorCode="parameterOutOfRange")
            live = self.cov_subscriptions()
            renewal = any(
                cov.client_addr == apdu.pduSource
                and cov.proc_id == apdu.subscriberProcessIdentifier
                and cov.obj_id == apdu.monitoredObjectIdentifier
                for cov in live
            )
            source = source_key(apdu.pduSource)
            from_source = Counter(source_key(cov.client_addr) for cov in live)[source]
            if not renewal and (
                len(live) >= MAX_COV_SUBSCRIPTIONS or from_source >= MAX_COV_PER_SOURCE
            ):
                _bad_packets.warning(
                    "BACnet: COV subscription from %s refused (%d held, %d from it)",
                    apdu.pduSource,
                    len(live),
                    from_source,
                )
                raise ExecutionError(errorClass="resources", errorCode="noSpaceToAddListElement")
        await super().do_SubscribeCOVRequest(apdu)

    def cov_confirmation(self, cov: Any, future: Any) -> None:
        """A confirmed notification's outcome; a subscriber failing repeatedly is cancelled.

        bacpypes3 calls ``future.result()`` here, so every notification that was not
        acknowledged logged an ERROR traceback ("Exception in callback").
        """
        if future.cancelled():
            return
        if future.exception() is None:
            cov.open_dsm_failures = 0
            return
        failures = getattr(cov, "open_dsm_failures", 0) + 1
        cov.open_dsm_failures = failures
        _bad_packets.warning(
            "BACnet: confirmed COV notification to %s not acknowledged", cov.client_addr
        )
        if failures >= MAX_COV_NOTIFY_FAILURES and any(c is cov for c in self.cov_subscriptions()):
            _bad_packets.warning(
                "BACnet: COV subscription of %s cancelled after %d unacknowledged notifications",
                cov.client_addr,
                failures,
            )
            self.cancel_subscription(cov)


async def _read_element(obj: Any, pid: Any, index: Any) -> Any:
    """One ReadPropertyMultiple result element; unknown properties answer unknown-property."""
    try:
        return await read_property_to_result_element(obj, pid, index)
    except (AttributeError, TypeError, ValueError, KeyError):
        choice = ReadAccessResultElementChoice(
            propertyAccessError=ErrorType(errorClass="property", errorCode="unknownProperty")
        )
        return ReadAccessResultElement(
            propertyIdentifier=pid, propertyArrayIndex=index, readResult=choice
        )
