"""Build the BACnet/IP device from the point table and keep it in step with the core's snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from bacpypes3.basetypes import (
    BDTEntry,
    BinaryPV,
    COVSubscription,
    DeviceAddress,
    EngineeringUnits,
    EventState,
    FDTEntry,
    HostNPort,
    IPMode,
    IPv4OctetString,
    ListOfCOVSubscription,
    ListOfFDTEntry,
    ObjectPropertyReference,
    ObjectTypesSupported,
    PriorityValue,
    PropertyIdentifier,
    Recipient,
    RecipientProcess,
    Reliability,
    ServicesSupported,
)
from bacpypes3.constructeddata import ArrayOf
from bacpypes3.errors import ExecutionError
from bacpypes3.local.analog import AnalogValueObject
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.cmd import Commandable
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address, IPv4Address
from bacpypes3.primitivedata import Null, Real

from bacnet.app import SERVICES_SUPPORTED, OpenDsmApplication
from bacnet.points import (
    DATABASE_REVISION,
    NETWORK_PORT_INSTANCE,
    NETWORK_PORT_NAME,
    POINTS,
    ObjectType,
    PointSpec,
    present_value_limits,
)
from core.commands import DEFAULT_PRIORITY, CommandState
from core.config import Settings
from core.errors import CommandConflict, InvalidReading, InvalidRequest, StorageUnavailable
from core.logs import RateLimitedLogger
from core.ports import CalendarView, CommandPort
from core.snapshot import Snapshot

log = logging.getLogger(__name__)
# A BAS (or anyone on the network) decides how often a write is refused: one line a minute.
_refusals = RateLimitedLogger(log, interval_s=60.0)

# Services this device executes: SERVICES_SUPPORTED in bacnet/app.py (the application's mixins in
# reads.py, writes.py, cov.py and screen.py execute them); bacpypes3's own list is derived by
# introspection and is wrong, so it is stated there.
# BACnet/IP's largest APDU: network-port apdu-length, device max-apdu-length-accepted and I-Am.
MAX_APDU_LENGTH = 1476
# Foreign devices a BBMD registers at once (renewals always succeed); BVLC result code of a refusal.
MAX_FOREIGN_DEVICES = 64
REGISTER_FOREIGN_DEVICE_NAK = 0x0030
OBJECT_TYPES_SUPPORTED = ("device", "analog-value", "binary-value", "network-port", "calendar")


class Writer(Protocol):
    """How a writable point hands a write to the core (``core.ports.InputWriter``: the command
    port and the point's input key), which validates it once, counts a refusal as it does for
    REST, and commands it."""

    async def command(self, value: float | None, priority: int) -> None:
        """Write ``value`` (None relinquishes) at ``priority`` into the input's priority array."""
        ...


def _denied() -> ExecutionError:
    return ExecutionError(errorClass="property", errorCode="writeAccessDenied")


def _attr_name(attr: int | str) -> str:
    if isinstance(attr, int):
        return str(PropertyIdentifier(attr).attr)
    return attr


# Clause 12.1.1.4.1: property-list leaves these out.
_NOT_IN_PROPERTY_LIST = frozenset({"objectIdentifier", "objectName", "objectType", "propertyList"})


class _PropertyList:
    """property-list as the standard defines it (bacpypes3 lists every present property)."""

    _elements: dict[str, Any]

    @property
    def propertyList(self) -> Any:
        """The present properties except identifier, name, type and property-list."""
        names = [
            name
            for name in self._elements
            if name not in _NOT_IN_PROPERTY_LIST
            and inspect.getattr_static(self, name, None) is not None
        ]
        return ArrayOf(PropertyIdentifier)([PropertyIdentifier(n) for n in names])

    @propertyList.setter
    def propertyList(self, value: Any) -> None:
        """Ignored: derived."""


class _WriteGuard(_PropertyList):
    """Refuse every network write: bacpypes3 otherwise accepts writes to almost any property."""

    async def write_property(
        self, attr: int | str, value: Any, index: int | None = None, priority: int | None = None
    ) -> None:
        raise _denied()


class ReadOnlyAnalogValue(_WriteGuard, AnalogValueObject):  # type: ignore[misc]
    """An analogValue the network can read and subscribe to but never write."""


class ReadOnlyBinaryValue(_WriteGuard, BinaryValueObject):  # type: ignore[misc]
    """A binaryValue the network can read and subscribe to but never write."""


class GuardedNetworkPort(_WriteGuard, NetworkPortObject):  # type: ignore[misc]
    """The network port object: read-only from the network but for, as a BBMD, FD acceptance."""

    @property
    def network_writable(self) -> frozenset[str]:
        """Properties a network write may change: bbmd-accept-fd-registrations in BBMD mode."""
        if getattr(self, "bacnetIPMode", None) == IPMode.bbmd:
            return frozenset({"bbmdAcceptFDRegistrations"})
        return frozenset()

    async def write_property(
        self, attr: int | str, value: Any, index: int | None = None, priority: int | None = None
    ) -> None:
        """Accept bbmd-accept-fd-registrations in BBMD mode (effective at once); deny the rest."""
        if _attr_name(attr) not in self.network_writable or index is not None:
            raise _denied()
        if not isinstance(value, int):  # Null (relinquish) has no meaning here
            raise ExecutionError(errorClass="property", errorCode="invalidDataType")
        self.bbmdAcceptFDRegistrations = bool(value)

    def accepts_registration(self, known: bool, table_size: int) -> bool:
        """Whether the BBMD registers a foreign device (a known one always renews)."""
        if not getattr(self, "bbmdAcceptFDRegistrations", False):
            return False
        return known or table_size < MAX_FOREIGN_DEVICES

    @property
    def bbmdForeignDeviceTable(self) -> Any:
        """The BBMD's live foreign-device table (bacpypes3 keeps the property an empty copy)."""
        app = getattr(self, "_app", None)
        link = None if app is None else app.link_layers.get(self.objectIdentifier)
        entries = [
            FDTEntry(
                bacnetIPAddress=fd.fdAddress.addrAddr,
                timeToLive=fd.fdTTL,
                remainingTimeToLive=max(0, int(fd.fdRemain)),
            )
            for fd in getattr(link, "bbmdFDT", [])
        ]
        return ListOfFDTEntry(entries)

    @bbmdForeignDeviceTable.setter
    def bbmdForeignDeviceTable(self, value: Any) -> None:
        """Ignored: derived."""


def host_ip_settings(
    route_path: Path = Path("/proc/net/route"), resolv_path: Path = Path("/etc/resolv.conf")
) -> tuple[str, list[str]]:
    """The host's IPv4 default gateway ("0.0.0.0" when none) and DNS servers (network-port)."""
    gateway = "0.0.0.0"
    try:
        for line in route_path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
                gateway = socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
                break
    except (OSError, ValueError):
        pass
    servers: list[str] = []
    try:
        for line in resolv_path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                with contextlib.suppress(OSError):
                    socket.inet_aton(fields[1])  # IPv4 only
                    servers.append(fields[1])
    except OSError:
        pass
    return gateway, servers


def bdt_entry(entry: str) -> BDTEntry:
    """A BDT entry from ``A.B.C.D[/prefix][:port]``, keeping both port and mask.

    bacpypes3's ``BDTEntry("A.B.C.D/24:47809")`` drops the port (Forwarded-NPDUs then go to 47808).
    """
    address = IPv4Address(entry)
    host, port = address.addrTuple
    return BDTEntry(bbmdAddress=HostNPort(f"{host}:{port}"), broadcastMask=address.netmask.packed)


class OpenDsmDevice(_WriteGuard, DeviceObject):  # type: ignore[misc]
    """The device object, read-only, reporting the services and object types it really has."""

    @property
    def protocolServicesSupported(self) -> ServicesSupported:
        """The services listed in SERVICES_SUPPORTED."""
        supported = ServicesSupported([])
        for name in SERVICES_SUPPORTED:
            supported[getattr(supported, name)] = 1
        return supported

    @protocolServicesSupported.setter
    def protocolServicesSupported(self, value: Any) -> None:
        """Ignored: derived."""

    @property
    def protocolObjectTypesSupported(self) -> ObjectTypesSupported:
        """The object types this device contains."""
        supported = ObjectTypesSupported([])
        for name in OBJECT_TYPES_SUPPORTED:
            supported[getattr(supported, _camel(name))] = 1
        return supported

    @protocolObjectTypesSupported.setter
    def protocolObjectTypesSupported(self, value: Any) -> None:
        """Ignored: derived."""

    @property
    def activeCovSubscriptions(self) -> Any:
        """The application's live COV subscriptions (bacpypes3 always reads an empty list)."""
        app = getattr(self, "_app", None)
        if app is None or not hasattr(app, "cov_subscriptions"):
            return ListOfCOVSubscription([])
        loop_time = asyncio.get_running_loop().time()
        entries = []
        for cov in app.cov_subscriptions():
            handle = cov.cancel_handle
            remaining = 0 if handle is None else max(0, int(handle.when() - loop_time))
            entries.append(
                COVSubscription(
                    recipient=RecipientProcess(
                        recipient=Recipient(address=DeviceAddress(cov.client_addr)),
                        processIdentifier=cov.proc_id,
                    ),
                    monitoredPropertyReference=ObjectPropertyReference(
                        objectIdentifier=cov.obj_id, propertyIdentifier="presentValue"
                    ),
                    issueConfirmedNotifications=bool(cov.confirmed),
                    timeRemaining=remaining,
                )
            )
        return ListOfCOVSubscription(entries)

    @activeCovSubscriptions.setter
    def activeCovSubscriptions(self, value: Any) -> None:
        """Ignored: derived."""


class CommandableInput(_PropertyList, Commandable, AnalogValueObject):  # type: ignore[misc]
    """A commandable input (the meter, the demand target, PV/battery/EV values, outdoor air).

    Only presentValue (with a priority, or Null to relinquish) is writable. The priority array is
    the core's (one truth for every face): a write is handed to the core, which validates it once
    (NaN, infinity or an implausible value answers value-out-of-range, changes nothing and is
    counted), and the object mirrors the core's array when the core publishes
    (``BacnetFace.sync``).
    """

    _writer: Writer

    @property
    def network_writable(self) -> frozenset[str]:
        """Properties a network write may change: present-value, once the core takes writes."""
        return frozenset({"presentValue"}) if getattr(self, "_writer", None) else frozenset()

    async def write_property(
        self, attr: int | str, value: Any, index: int | None = None, priority: int | None = None
    ) -> None:
        """Accept presentValue writes and relinquishes; deny everything else."""
        if _attr_name(attr) != "presentValue":
            raise _denied()
        if index is not None:
            raise ExecutionError(errorClass="property", errorCode="propertyIsNotAnArray")
        if priority is None:
            priority = DEFAULT_PRIORITY  # clause 19.2.1: no priority means 16
        if not 1 <= priority <= 16:
            raise ExecutionError(errorClass="services", errorCode="parameterOutOfRange")
        number: float | None = None
        if not isinstance(value, Null):
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                _refusals.warning("BACnet write to %s refused: %s", self.objectName, exc)
                raise ExecutionError(errorClass="property", errorCode="valueOutOfRange") from exc
        try:
            await self._writer.command(number, priority)
        except (InvalidReading, InvalidRequest) as exc:
            _refusals.warning("BACnet write to %s refused: %s", self.objectName, exc)
            raise ExecutionError(errorClass="property", errorCode="valueOutOfRange") from exc
        except CommandConflict as exc:  # not raised for BACnet writes; mapped for completeness
            raise ExecutionError(errorClass="property", errorCode="writeAccessDenied") from exc
        except StorageUnavailable as exc:
            _refusals.warning("BACnet write to %s refused: %s", self.objectName, exc)
            raise ExecutionError(errorClass="device", errorCode="operationalProblem") from exc

    def mirror(self, state: CommandState, default: float) -> None:
        """Make the priority array and relinquish default the core's (drives COV on change)."""
        changed = False
        relinquish = default if state.relinquish_default is None else state.relinquish_default
        if float(getattr(self, "relinquishDefault")) != float(Real(relinquish)):  # noqa: B009
            self.relinquishDefault = Real(relinquish)
            changed = True
        slots = self.priorityArray
        for index, wanted in enumerate(state.priority_array):
            current = slots[index]
            held = None if current.null is not None else float(getattr(current, current._choice))
            if wanted is None and held is None:
                continue
            if wanted is not None and held is not None and float(Real(wanted)) == held:
                continue
            entry = PriorityValue(null=()) if wanted is None else PriorityValue(Real(wanted))
            list.__setitem__(slots, index, entry)  # one recalculation below, not one per slot
            changed = True
        if changed:
            self.recalculating()


def _camel(name: str) -> str:
    head, *rest = name.split("-")
    return head + "".join(part.title() for part in rest)


def _reliability(point: PointSpec, snapshot: Snapshot) -> Reliability:
    return Reliability(point.reliability(snapshot).value)


def _bacnet_value(point: PointSpec, snapshot: Snapshot) -> Any:
    value = point.present_value(snapshot)
    if point.object_type is ObjectType.BINARY_VALUE:
        return BinaryPV.active if value else BinaryPV.inactive
    return Real(float(value))


def build_objects(
    settings: Settings, snapshot: Snapshot, writers: Mapping[str, Writer], version: str
) -> tuple[OpenDsmDevice, GuardedNetworkPort, dict[str, Any]]:
    """Device, network port and point objects (call inside the running event loop)."""
    device = OpenDsmDevice(
        objectIdentifier=("device", settings.device_instance),
        objectName=settings.device_name,
        vendorIdentifier=settings.vendor_id,
        vendorName=settings.vendor_name,
        modelName="open-dsm",
        firmwareRevision=version,
        applicationSoftwareVersion=version,
        location=settings.location,
        description=settings.device_description,
        databaseRevision=DATABASE_REVISION,
        maxApduLengthAccepted=MAX_APDU_LENGTH,  # as network-port apdu-length (bacpypes3: 1024)
    )
    network_port = GuardedNetworkPort(
        settings.bacnet_address,
        objectIdentifier=("network-port", NETWORK_PORT_INSTANCE),
        objectName=NETWORK_PORT_NAME,
        networkNumberQuality="unknown",
        apduLength=MAX_APDU_LENGTH,
    )
    gateway, dns_servers = host_ip_settings()  # required for B/IP ports (clause 12.56)
    network_port.ipDefaultGateway = gateway
    network_port.ipDNSServer = ArrayOf(IPv4OctetString)(dns_servers)
    if settings.foreign_bbmd:
        network_port.bacnetIPMode = IPMode.foreign
        network_port.fdBBMDAddress = HostNPort(settings.foreign_bbmd)
        network_port.fdSubscriptionLifetime = settings.foreign_ttl
    elif settings.bbmd_bdt:
        network_port.bacnetIPMode = IPMode.bbmd
        network_port.bbmdAcceptFDRegistrations = True
        network_port.bbmdForeignDeviceTable = []
        network_port.bbmdBroadcastDistributionTable = [bdt_entry(a) for a in settings.bbmd_bdt]

    objects: dict[str, Any] = {}
    for point in POINTS:
        common: dict[str, Any] = {
            "objectIdentifier": (point.object_type.value, point.instance),
            "objectName": point.name,
            "description": point.describe(snapshot, settings),
            "presentValue": _bacnet_value(point, snapshot),
            "statusFlags": [0, 0, 0, 0],
            "eventState": EventState.normal,
            "outOfService": False,
            "reliability": _reliability(point, snapshot),
        }
        obj: Any
        if point.object_type is ObjectType.ANALOG_VALUE:
            common["units"] = EngineeringUnits(point.units_for(settings))
            common["covIncrement"] = point.cov_increment
            if point.writable:
                assert point.input_key is not None
                limits = present_value_limits(point, settings)
                if limits is not None:  # the range the core enforces (also in the EDE export)
                    common["minPresValue"], common["maxPresValue"] = map(Real, limits)
                obj = CommandableInput(relinquishDefault=_bacnet_value(point, snapshot), **common)
                obj._writer = writers[point.input_key]
            else:
                obj = ReadOnlyAnalogValue(**common)
        else:
            assert point.state_text is not None
            obj = ReadOnlyBinaryValue(
                inactiveText=point.state_text[0], activeText=point.state_text[1], **common
            )
        objects[point.name] = obj
    return device, network_port, objects


def _guard_registrations(link: Any, network_port: GuardedNetworkPort) -> None:
    """Make the BBMD honour bbmd-accept-fd-registrations and a table size cap.

    bacpypes3's BBMD registers every foreign device whatever the property says, and its table
    grows without bound; a refused registration is answered Register-Foreign-Device NAK.
    """
    register = link.register_foreign_device

    def guarded(addr: Any, ttl: int) -> int:
        known = any(addr == entry.fdAddress for entry in link.bbmdFDT)
        if not network_port.accepts_registration(known, len(link.bbmdFDT)):
            _refusals.warning("BACnet: foreign-device registration from %s refused", addr)
            return REGISTER_FOREIGN_DEVICE_NAK
        return int(register(addr, ttl))

    link.register_foreign_device = guarded


class BacnetFace:
    """The running BACnet application and the sync from snapshots to present values."""

    def __init__(self, settings: Settings, version: str) -> None:
        self._settings = settings
        self._version = version
        self.app: OpenDsmApplication | None = None
        self._objects: dict[str, Any] = {}
        # What ``sync`` last copied into each object: a point whose inputs did not change is not
        # touched (a bacpypes3 property read costs ~0.1 ms, statusFlags far more: reading every
        # object on each meter write stalled the loop for 40-100 ms on a 2-core box).
        self._synced: dict[str, tuple[object, ...]] = {}
        self._calendar_mirror: Any = None  # bacnet.calendar.CalendarMirror when started with one

    @property
    def bound(self) -> bool:
        """True once every UDP endpoint of the application is open."""
        if self.app is None or not self.app.link_layers:
            return False
        return all(
            getattr(link.server, "local_transport", None) is not None
            for link in self.app.link_layers.values()
        )

    def resolve_address(self) -> tuple[str, int]:
        """The (IPv4, UDP port) the device will bind, with 'host' resolved as bacpypes3 does."""
        address = Address(self._settings.bacnet_address)
        host, port = address.addrTuple
        return str(host), int(port)

    async def wait_bound(self, timeout_s: float) -> None:
        """Wait until the endpoint is open; raise TimeoutError naming the address if not."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.bound:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"BACnet/IP did not bind {self._settings.bacnet_address} in {timeout_s:g} s"
                )
            await asyncio.sleep(0.01)

    def start(
        self,
        snapshot: Snapshot,
        writers: Mapping[str, Writer],
        calendar: CalendarView | None = None,
        commands: CommandPort | None = None,
    ) -> None:
        """Create the application and bind UDP (inside the running loop); ``calendar`` (the
        core's calendar, read side) adds the Calendar objects after every point, their
        date-lists writable by calendar commands to ``commands`` (read-only without it)."""
        from bacnet.calendar import CalendarMirror, build_calendar_objects

        device, network_port, self._objects = build_objects(
            self._settings, snapshot, writers, self._version
        )
        self._synced.clear()  # new objects: the next sync copies every point
        calendars = [] if calendar is None else build_calendar_objects(calendar, commands)
        self._calendar_mirror = None if calendar is None else CalendarMirror(calendar, calendars)
        self.app = OpenDsmApplication.from_object_list(
            [device, network_port, *self._objects.values(), *calendars]
        )
        if self._settings.bbmd_bdt:
            # Forward to each peer's configured port and broadcast mask (bacpypes3 drops the port
            # of the /prefix form when it builds its table from the network-port object).
            link = self.app.link_layers.get(network_port.objectIdentifier)
            if link is not None and hasattr(link, "bbmdBDT"):
                link.bbmdBDT = [IPv4Address(a) for a in self._settings.bbmd_bdt]
            if link is not None and hasattr(link, "register_foreign_device"):
                _guard_registrations(link, network_port)
        log.info(
            "BACnet device %d %r on %s with %d points",
            self._settings.device_instance,
            self._settings.device_name,
            self._settings.bacnet_address,
            len(self._objects),
        )

    def close(self) -> None:
        """Release the UDP endpoint."""
        if self.app is not None:
            self.app.close()
            self.app = None

    def sync(self, snapshot: Snapshot) -> None:
        """Copy a snapshot into present values, reliabilities and descriptions (drives COV)."""
        if self._calendar_mirror is not None:
            self._calendar_mirror.refresh()  # a new site-local day moves present-value
        for point in POINTS:
            obj = self._objects.get(point.name)
            if obj is None:
                continue
            reliability = _reliability(point, snapshot)
            description = point.describe(snapshot, self._settings)
            if point.writable:
                assert point.input_key is not None
                shown: object = snapshot.commands.get(point.input_key)
            else:
                shown = _bacnet_value(point, snapshot)
            key = (reliability, description, shown)
            if self._synced.get(point.name) == key:
                continue
            self._synced[point.name] = key
            old_flags = obj.statusFlags
            if obj.reliability != reliability:
                obj.reliability = reliability
            if obj.description != description:
                obj.description = description
            if point.writable:
                self._sync_input(obj, point, snapshot)
            elif obj.presentValue != shown:
                obj.presentValue = shown
            new_flags = obj.statusFlags
            if new_flags != old_flags:
                # statusFlags is derived, so bacpypes3 sends no COV for it on its own.
                for monitor in list(obj._property_monitors["statusFlags"]):
                    monitor(old_flags, new_flags)

    @staticmethod
    def _sync_input(obj: CommandableInput, point: PointSpec, snapshot: Snapshot) -> None:
        """Mirror the core's priority array of this input (the one truth for every face)."""
        assert point.input_key is not None
        state = snapshot.commands.get(point.input_key)
        if state is not None:
            obj.mirror(state, float(point.default))
