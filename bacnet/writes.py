"""Writes: WriteProperty, WritePropertyMultiple and a Calendar's list elements, one path each."""

from __future__ import annotations

from typing import Any

from bacpypes3.apdu import SimpleAckPDU, WritePropertyMultipleError
from bacpypes3.app import Application
from bacpypes3.basetypes import ErrorType, ObjectPropertyReference, PropertyIdentifier
from bacpypes3.constructeddata import Array
from bacpypes3.errors import ExecutionError, OutOfResources
from bacpypes3.primitivedata import Unsigned

from bacnet.reads import MAX_RPM_PROPERTIES


class WriteHandlers(Application):  # type: ignore[misc]
    """The application's write services (a mixin of ``OpenDsmApplication``)."""

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
