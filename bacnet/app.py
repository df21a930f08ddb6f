"""The BACnet application: bacpypes3's, with bounded request handlers and every request answered."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bacpypes3 import appservice
from bacpypes3.apdu import (
    APDU,
    AbortPDU,
    AbortReason,
    APCISequence,
    ComplexAckPDU,
    ConfirmedRequestPDU,
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
    ObjectError,
    OutOfResources,
    UnrecognizedService,
)
from bacpypes3.pdu import PDU
from bacpypes3.primitivedata import ObjectIdentifier, ObjectType, Unsigned
from bacpypes3.service.object import read_property_to_result_element

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
# COV subscriptions held at once, in total and per subscriber address; a new subscription
# beyond either answers Error resources/no-space-to-add-list-element (renewals always succeed).
MAX_COV_SUBSCRIPTIONS = 64
MAX_COV_PER_ADDRESS = 16

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
    }
)
# The protocol-services-supported names of what the device executes or initiates.
SERVICES_SUPPORTED = (
    "readProperty",
    "readPropertyMultiple",
    "writeProperty",
    "writePropertyMultiple",
    "subscribeCOV",
    "confirmedCOVNotification",
    "unconfirmedCOVNotification",
    "whoIs",
    "iAm",
    "whoHas",
    "iHave",
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


def expand_properties(obj: Any, which: PropertyIdentifier) -> list[str]:
    """The property names an all/required/optional reference reads on ``obj`` (present ones)."""
    required: set[str] = set()
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


def rpm_reference_count(data: bytes, defined: Callable[[int], int]) -> int | None:
    """Property reads a ReadPropertyMultiple's parameters ask for, from the raw octets.

    all/required/optional count as ``defined(object id)`` reads. None when the octets are not a
    well-formed request (bacpypes3 then decodes and rejects it).
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
                total += defined(object_id) if prop in (8, 80, 105) else 1
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
        if apdu.apduType == ComplexAckPDU.pduType and limit:
            self.maxApduLengthAccepted = limit - SEGMENTED_ACK_HEADER
            try:
                await super().confirmation(apdu)
            finally:
                self.maxApduLengthAccepted = limit
            return
        await super().confirmation(apdu)

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
        self.set_state(ABORTED)
        await self.response(AbortPDU(True, self.invokeID, AbortReason.tsmTimeout))


def install_server_ssm() -> None:
    """Make bacpypes3's access point build OpenDsmServerSSM transactions (process-wide)."""
    appservice.ServerSSM = OpenDsmServerSSM


def _undecodable(pdu: PDU, exc: Exception) -> None:
    _bad_packets.warning(
        "BACnet: undecodable APDU from %s dropped (%s)", pdu.pduSource, type(exc).__name__
    )


class OpenDsmApplication(Application):  # type: ignore[misc]
    """bacpypes3's Application with the handlers this device needs to be bounded and truthful."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._expensive = asyncio.Semaphore(1)
        self._waiting = 0

    @classmethod
    def from_object_list(cls, objects: list[Any], **kwargs: Any) -> OpenDsmApplication:
        """Build as bacpypes3 does, then take confirmed requests before its state machines."""
        app: OpenDsmApplication = super().from_object_list(objects, **kwargs)
        guard_bacpypes3_logs()
        install_server_ssm()
        original = app.asap.confirmation

        async def confirmation(pdu: PDU) -> None:
            data = pdu.pduData
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
                _undecodable(pdu, exc)
                return
            await original(pdu)

        app.asap.confirmation = confirmation
        return app

    # ---- every confirmed request answered -------------------------------------------------

    async def response(self, apdu: APDU) -> None:
        """Send a response; an Abort from this server carries SRV (clause 20.1.9.3).

        bacpypes3 builds the Abort for an AbortException raised in a handler without ``srv``,
        so the client never matches it to its request (it times out instead).
        """
        if isinstance(apdu, AbortPDU):
            apdu.apduSrv = True
        await super().response(apdu)

    async def _confirmed_request(self, pdu: PDU) -> None:
        """A confirmed request, decoded once: screened, then run by its server transaction.

        bacpypes3's access point decodes the header, its server transaction the parameters;
        the screen needs both first, so it decodes them and hands the result on.
        """
        try:
            apdu = APDU.decode(pdu)
        except Exception as exc:
            _undecodable(pdu, exc)
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
        if name == "readPropertyMultiple":
            references = rpm_reference_count(bytes(apdu.pduData), self._defined_properties)
            if references is not None and references > MAX_RPM_PROPERTIES:
                # Refused before it is decoded: decoding 150 references costs ~10 ms.
                _bad_packets.warning(
                    "BACnet: ReadPropertyMultiple over %d properties aborted",
                    MAX_RPM_PROPERTIES,
                )
                await self.asap.request(
                    AbortPDU(srv=True, reason=AbortReason.outOfResources, context=apdu)
                )
                return None
        if name not in CONFIRMED_EXECUTED:
            _bad_packets.warning(
                "BACnet: unexecuted confirmed service %s rejected", apdu.apduService
            )
            await self._reject(apdu, RejectReason.unrecognizedService)
            return None
        try:
            return APCISequence.decode(apdu)
        except Exception as exc:
            _bad_packets.warning(
                "BACnet: malformed %s request from %s rejected (%s)",
                name,
                apdu.pduSource,
                type(exc).__name__,
            )
            await self._reject(apdu, RejectReason.invalidTag)
            return None

    def _defined_properties(self, object_id: int) -> int:
        """How many properties an all/required/optional reference may read on an object."""
        obj = self.get_object_id(self._resolve(ObjectIdentifier(object_id)))
        return 1 if obj is None else len(obj._elements)

    async def _reject(self, apdu: APDU, reason: Any) -> None:
        reject = RejectPDU(reason=reason, context=apdu)
        await self.asap.request(reject)

    async def do_ReadRangeRequest(self, apdu: Any) -> None:
        """Not executed (not claimed): Reject unrecognized-service."""
        raise UnrecognizedService()

    async def do_DeviceCommunicationControlRequest(self, apdu: Any) -> None:
        """Not executed (not claimed): Reject unrecognized-service."""
        raise UnrecognizedService()

    # ---- reads ----------------------------------------------------------------------------

    def _resolve(self, object_identifier: Any) -> Any:
        # bacpypes3 compares with ("device", 4194303), which an ObjectIdentifier never equals.
        object_identifier = ObjectIdentifier(object_identifier)
        if (
            object_identifier[0] == ObjectType.device
            and object_identifier[1] == WILDCARD_DEVICE
            and self.device_object is not None
        ):
            return self.device_object.objectIdentifier
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
        # inspect.getattr_static costs ~0.1 ms: expand each object's all/required/optional once.
        expanded: dict[tuple[Any, int], list[str]] = {}
        for spec in apdu.listOfReadAccessSpecs:
            object_id = self._resolve(spec.objectIdentifier)
            obj = self.get_object_id(object_id)
            refs: list[tuple[Any, Any, bool]] = []
            for ref in spec.listOfPropertyReferences:
                pid = ref.propertyIdentifier
                if obj is not None and pid in _ALL_KINDS:
                    key = (object_id, int(pid))
                    if key not in expanded:
                        expanded[key] = expand_properties(obj, pid)
                    refs.extend((n, None, True) for n in expanded[key])
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
        if name != "presentValue" or not getattr(obj, "_writer", None):
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

    # ---- COV ------------------------------------------------------------------------------

    def cov_subscriptions(self) -> list[Any]:
        """Every live COV subscription (bacpypes3 Subscription objects)."""
        return [
            cov
            for detection in self._cov_detections.values()
            for cov in detection.cov_subscriptions
        ]

    async def do_SubscribeCOVRequest(self, apdu: Any) -> None:
        """SubscribeCOV with bounded subscriptions and the standard errors."""
        cancel = apdu.issueConfirmedNotifications is None and apdu.lifetime is None
        obj = self.get_object_id(apdu.monitoredObjectIdentifier)
        if obj is not None and getattr(obj, "_cov_criteria", None) is None and not cancel:
            raise ExecutionError(errorClass="object", errorCode="optionalFunctionalityNotSupported")
        if obj is not None and not cancel:
            live = self.cov_subscriptions()
            renewal = any(
                cov.client_addr == apdu.pduSource
                and cov.proc_id == apdu.subscriberProcessIdentifier
                and cov.obj_id == apdu.monitoredObjectIdentifier
                for cov in live
            )
            per_address = Counter(cov.client_addr for cov in live)
            if not renewal and (
                len(live) >= MAX_COV_SUBSCRIPTIONS
                or per_address[apdu.pduSource] >= MAX_COV_PER_ADDRESS
            ):
                _bad_packets.warning(
                    "BACnet: COV subscription from %s refused (%d held, %d from it)",
                    apdu.pduSource,
                    len(live),
                    per_address[apdu.pduSource],
                )
                raise ExecutionError(errorClass="resources", errorCode="noSpaceToAddListElement")
        await super().do_SubscribeCOVRequest(apdu)


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
