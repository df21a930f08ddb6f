"""Reads: ReadProperty through the wildcard instances, ReadPropertyMultiple bounded and yielding."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from bacpypes3.apdu import ReadPropertyMultipleACK
from bacpypes3.app import Application
from bacpypes3.basetypes import (
    ErrorType,
    PropertyIdentifier,
    ReadAccessResult,
    ReadAccessResultElement,
    ReadAccessResultElementChoice,
)
from bacpypes3.errors import ObjectError, OutOfResources
from bacpypes3.primitivedata import ObjectIdentifier, ObjectType
from bacpypes3.service.object import read_property_to_result_element

from bacnet.logs import bad_packets

# One ReadPropertyMultiple may cause at most this many property reads (after expanding
# all/required/optional); more is answered Abort out-of-resources before any is read.
MAX_RPM_PROPERTIES = 256
# A ReadPropertyMultiple yields the event loop after this many property reads.
READS_PER_YIELD = 16

WILDCARD_DEVICE = 4194303
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


class ReadHandlers(Application):  # type: ignore[misc]
    """The application's read services (a mixin of ``OpenDsmApplication``)."""

    def _expand(self, object_id: Any, obj: Any, which: Any) -> list[str]:
        """expand_properties, once per object and kind (getattr_static costs ~0.1 ms a name)."""
        key = (object_id, int(which))
        names: list[str] | None = self._expansions.get(key)
        if names is None:
            names = self._expansions[key] = expand_properties(obj, PropertyIdentifier(int(which)))
        return names

    def _expanded_count(self, object_id: int, which: int) -> int:
        """How many properties an all/required/optional reference reads on an object."""
        resolved = self._resolve(ObjectIdentifier(object_id))
        obj = self.get_object_id(resolved)
        return 1 if obj is None else len(self._expand(resolved, obj, which))

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
                    bad_packets.warning(
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
