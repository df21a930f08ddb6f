"""An independent BACnet client: the original bacpypes (0.19), run in its own virtual environment.

Usage: client.py <device ip:port> <device instance> <local port>
Prints one JSON object: discovery, a PICS-style walk of every property of every object,
commandable write + relinquish, COV and WritePropertyMultiple results. Python 3 stdlib + bacpypes.
"""

import json
import sys
import threading
import time

from bacpypes.apdu import (
    ReadPropertyACK,
    ReadPropertyRequest,
    SimpleAckPDU,
    SubscribeCOVRequest,
    WhoIsRequest,
    WriteAccessSpecification,
    WritePropertyMultipleRequest,
    WritePropertyRequest,
)
from bacpypes.app import BIPSimpleApplication
from bacpypes.basetypes import PropertyValue
from bacpypes.constructeddata import Any, Array
from bacpypes.core import deferred, run, stop
from bacpypes.iocb import IOCB
from bacpypes.local.device import LocalDeviceObject
from bacpypes.object import get_datatype
from bacpypes.pdu import Address
from bacpypes.primitivedata import Null, ObjectIdentifier, Real, Unsigned

TIMEOUT_S = 3.0
DECODE_FAILURES = []


class Client(BIPSimpleApplication):
    """Records I-Ams and COV notifications."""

    def __init__(self, *args):
        BIPSimpleApplication.__init__(self, *args)
        self.i_ams = []
        self.i_am_seen = threading.Event()
        self.notifications = []

    def do_IAmRequest(self, apdu):
        self.i_ams.append(apdu.iAmDeviceIdentifier[1])
        self.i_am_seen.set()

    def do_UnconfirmedCOVNotificationRequest(self, apdu):
        for element in apdu.listOfValues:
            if element.propertyIdentifier == "presentValue":
                self.notifications.append(element.value.cast_out(Real))


def describe(error):
    """A short text for an error, reject, abort or timeout."""
    name = type(error).__name__
    for attr in ("errorCode", "apduAbortRejectReason"):
        value = getattr(error, attr, None)
        if value is not None:
            return f"{name}:{value}"
    error_type = getattr(error, "errorType", None)
    if error_type is not None:
        return f"{name}:{error_type.errorCode}"
    return f"{name}:{error}"


def ask(app, apdu):
    """Send a confirmed request from the client thread; ('ok', ack) or ('error', text)."""
    iocb = IOCB(apdu)
    deferred(app.request_io, iocb)
    if not iocb.ioComplete.wait(TIMEOUT_S):
        return "error", "timeout"
    if iocb.ioError is not None:
        return "error", describe(iocb.ioError)
    return "ok", iocb.ioResponse


def read(app, address, object_id, prop, index=None):
    """ReadProperty; ('ok', value or None if undecodable) or ('error', text)."""
    request = ReadPropertyRequest(objectIdentifier=object_id, propertyIdentifier=prop)
    if index is not None:
        request.propertyArrayIndex = index
    request.pduDestination = address
    status, response = ask(app, request)
    if status != "ok":
        return status, response
    if not isinstance(response, ReadPropertyACK):
        return "error", f"unexpected {type(response).__name__}"
    datatype = get_datatype(object_id[0], prop)
    if datatype is None:
        return "ok", None
    try:
        if issubclass(datatype, Array) and index is None:
            value = response.propertyValue.cast_out(datatype)
            return "ok", list(value) if isinstance(value, list) else list(value.value[1:])
        return "ok", response.propertyValue.cast_out(datatype)
    except Exception as exc:
        DECODE_FAILURES.append(f"{object_id} {prop}: {exc!r}")
        return "ok", None


def write(app, address, object_id, value, priority):
    """WriteProperty presentValue; 'ack' or an error text."""
    request = WritePropertyRequest(objectIdentifier=object_id, propertyIdentifier="presentValue")
    request.propertyValue = Any()
    request.propertyValue.cast_in(value)
    if priority is not None:
        request.priority = priority
    request.pduDestination = address
    status, response = ask(app, request)
    if status == "ok":
        return "ack" if isinstance(response, SimpleAckPDU) else type(response).__name__
    return response


def jsonable(value):
    """Decoded values as JSON-friendly data."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def scenario(app, address, instance, result):
    """The whole session, run on the client thread."""
    who_is = WhoIsRequest(
        deviceInstanceRangeLowLimit=instance, deviceInstanceRangeHighLimit=instance
    )
    who_is.pduDestination = address
    deferred(app.request, who_is)
    app.i_am_seen.wait(TIMEOUT_S)
    result["i_am"] = app.i_ams

    device = ("device", instance)
    status, objects = read(app, address, device, "objectList")
    result["object_list"] = jsonable(objects) if status == "ok" else objects
    walk = {}
    errors = []
    for object_id in objects if status == "ok" else []:
        key = f"{object_id[0]},{object_id[1]}"
        status, props = read(app, address, object_id, "propertyList")
        if status != "ok":
            errors.append([key, "propertyList", props])
            continue
        values = {"propertyList": [str(p) for p in props]}
        for prop in ["objectIdentifier", "objectName", "objectType", *list(props)]:
            status, value = read(app, address, object_id, str(prop))
            if status != "ok":
                errors.append([key, str(prop), value])
            values[str(prop)] = jsonable(value)
        walk[key] = values
    result["walk"] = walk
    result["walk_errors"] = errors
    # Through the wildcard device instance, as discovery tools do.
    result["wildcard"] = jsonable(read(app, address, ("device", 4194303), "objectName"))

    meter = ("analogValue", 1)
    result["writes"] = [
        write(app, address, meter, Real(60.0), 16),
        write(app, address, meter, Real(123.4), 8),
    ]
    result["after_write"] = jsonable(read(app, address, meter, "presentValue")[1])
    result["relinquish"] = write(app, address, meter, Null(), 8)
    result["after_relinquish"] = jsonable(read(app, address, meter, "presentValue")[1])
    result["relinquish_16_without_priority"] = write(app, address, meter, Null(), None)

    subscribe = SubscribeCOVRequest(
        subscriberProcessIdentifier=7,
        monitoredObjectIdentifier=ObjectIdentifier(meter),
        issueConfirmedNotifications=False,
        lifetime=Unsigned(120),
    )
    subscribe.pduDestination = address
    status, response = ask(app, subscribe)
    result["subscribe"] = "ack" if status == "ok" else response
    time.sleep(0.3)
    write(app, address, meter, Real(70.5), 16)
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline and 70.5 not in app.notifications:
        time.sleep(0.05)
    result["cov_values"] = list(app.notifications)
    status, subscriptions = read(app, address, device, "activeCovSubscriptions")
    result["active_cov"] = len(subscriptions) if status == "ok" and subscriptions else subscriptions
    status, response = ask(app, subscribe_cancel(address, meter))
    result["cancel"] = "ack" if status == "ok" else response
    status, subscriptions = read(app, address, device, "activeCovSubscriptions")
    result["active_cov_after_cancel"] = len(subscriptions) if status == "ok" else subscriptions

    wpm = WritePropertyMultipleRequest(
        listOfWriteAccessSpecs=[
            WriteAccessSpecification(
                objectIdentifier=ObjectIdentifier(meter),
                listOfProperties=[
                    PropertyValue(
                        propertyIdentifier="presentValue", value=Any(Real(55.0)), priority=16
                    )
                ],
            )
        ]
    )
    wpm.pduDestination = address
    status, response = ask(app, wpm)
    result["wpm_ok"] = "ack" if status == "ok" else response
    result["after_wpm"] = jsonable(read(app, address, meter, "presentValue")[1])
    bad = WritePropertyMultipleRequest(
        listOfWriteAccessSpecs=[
            WriteAccessSpecification(
                objectIdentifier=ObjectIdentifier(("analogValue", 2)),
                listOfProperties=[
                    PropertyValue(
                        propertyIdentifier="presentValue", value=Any(Real(1.0)), priority=16
                    )
                ],
            )
        ]
    )
    bad.pduDestination = address
    status, response = ask(app, bad)
    result["wpm_read_only"] = "ack" if status == "ok" else response
    # Over the device's 256 writes: an Abort from the server, matched to this request.
    too_many = WritePropertyMultipleRequest(
        listOfWriteAccessSpecs=[
            WriteAccessSpecification(
                objectIdentifier=ObjectIdentifier(meter),
                listOfProperties=[
                    PropertyValue(
                        propertyIdentifier="presentValue", value=Any(Real(1.0)), priority=16
                    )
                    for _ in range(257)
                ],
            )
        ]
    )
    too_many.pduDestination = address
    status, response = ask(app, too_many)
    result["wpm_too_many"] = "ack" if status == "ok" else response


def subscribe_cancel(address, object_id):
    """SubscribeCOV without confirmed/lifetime: cancels."""
    request = SubscribeCOVRequest(
        subscriberProcessIdentifier=7, monitoredObjectIdentifier=ObjectIdentifier(object_id)
    )
    request.pduDestination = address
    return request


def main():
    """Run the session and print the JSON result."""
    target, instance, local_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    local = LocalDeviceObject(
        objectName="legacy-client",
        objectIdentifier=("device", 599042),
        maxApduLengthAccepted=1024,
        segmentationSupported="segmentedBoth",
        vendorIdentifier=15,
    )
    app = Client(local, f"127.0.0.1/8:{local_port}")
    result = {}
    failure = []

    def worker():
        try:
            scenario(app, Address(target), instance, result)
        except Exception as exc:
            failure.append(repr(exc))
        finally:
            deferred(stop)

    threading.Thread(target=worker, daemon=True).start()
    run(sigterm=None, sigusr1=None)
    result["failure"] = failure
    result["decode_failures"] = DECODE_FAILURES
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
