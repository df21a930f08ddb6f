"""Hand-encoded BACnet/IP frames for tests: an encoder independent of bacpypes3."""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass

OBJECT_TYPES = {"analog-value": 2, "binary-value": 5, "device": 8, "network-port": 56}
PRESENT_VALUE = 85
OBJECT_NAME = 77
PROPERTY_LIST = 371
PRIORITY_ARRAY = 87
ACTIVE_COV_SUBSCRIPTIONS = 152
PROTOCOL_SERVICES_SUPPORTED = 97
ALL = 8

SIMPLE_ACK, COMPLEX_ACK, ERROR, REJECT, ABORT = 2, 3, 5, 6, 7


def object_id(kind: str, instance: int) -> bytes:
    """The 4 octets of an object identifier."""
    return struct.pack(">I", (OBJECT_TYPES[kind] << 22) | instance)


def ctx(tag: int, payload: bytes) -> bytes:
    """A context-tagged primitive (payload under 5 octets)."""
    return bytes([(tag << 4) | 0x08 | len(payload)]) + payload


def unsigned(value: int) -> bytes:
    """Minimal big-endian octets of an unsigned."""
    length = max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(length, "big")


def opening(tag: int) -> bytes:
    """An opening tag."""
    return bytes([(tag << 4) | 0x0E])


def closing(tag: int) -> bytes:
    """A closing tag."""
    return bytes([(tag << 4) | 0x0F])


def real(value: float) -> bytes:
    """An application-tagged Real."""
    return b"\x44" + struct.pack(">f", value)


NULL = b"\x00"


def confirmed(service: int, body: bytes, invoke_id: int = 1, header: bytes = b"\x00\x05") -> bytes:
    """A BVLC original-unicast NPDU carrying a confirmed request (default: max APDU 1476).

    ``header``: the first two APDU octets (type/flags, max-segments/max-APDU); b"\x02\x70"
    accepts a segmented response of any number of segments of at most 50 octets.
    """
    apdu = header + bytes([invoke_id, service]) + body
    npdu = b"\x01\x04" + apdu
    return b"\x81\x0a" + struct.pack(">H", len(npdu) + 4) + npdu


def read_property(kind: str, instance: int, prop: int, invoke_id: int = 1) -> bytes:
    """ReadProperty."""
    return confirmed(12, ctx(0, object_id(kind, instance)) + ctx(1, unsigned(prop)), invoke_id)


def write_property(
    kind: str, instance: int, prop: int, value: bytes, priority: int | None, invoke_id: int = 1
) -> bytes:
    """WriteProperty with an optional priority."""
    body = ctx(0, object_id(kind, instance)) + ctx(1, unsigned(prop))
    body += opening(3) + value + closing(3)
    if priority is not None:
        body += ctx(4, unsigned(priority))
    return confirmed(15, body, invoke_id)


def read_property_multiple(specs: list[tuple[str, int, list[int]]], invoke_id: int = 1) -> bytes:
    """ReadPropertyMultiple of (object type, instance, property ids)."""
    body = b""
    for kind, instance, props in specs:
        body += ctx(0, object_id(kind, instance)) + opening(1)
        body += b"".join(ctx(0, unsigned(p)) for p in props) + closing(1)
    return confirmed(14, body, invoke_id)


def write_property_multiple(
    specs: list[tuple[str, int, list[tuple[int, bytes, int | None]]]], invoke_id: int = 1
) -> bytes:
    """WritePropertyMultiple of (object type, instance, [(property, value, priority)])."""
    body = b""
    for kind, instance, values in specs:
        body += ctx(0, object_id(kind, instance)) + opening(1)
        for prop, value, priority in values:
            body += ctx(0, unsigned(prop)) + opening(2) + value + closing(2)
            if priority is not None:
                body += ctx(3, unsigned(priority))
        body += closing(1)
    return confirmed(16, body, invoke_id)


def subscribe_cov(
    process_id: int,
    kind: str,
    instance: int,
    lifetime: int | None = 600,
    invoke_id: int = 1,
    confirmed_notifications: bool | None = False,
) -> bytes:
    """SubscribeCOV (unconfirmed notifications by default); None leaves a parameter out."""
    body = ctx(0, unsigned(process_id)) + ctx(1, object_id(kind, instance))
    if confirmed_notifications is not None:
        body += ctx(2, b"\x01" if confirmed_notifications else b"\x00")
    if lifetime is not None:
        body += ctx(3, unsigned(lifetime))
    return confirmed(5, body, invoke_id)


@dataclass(frozen=True)
class Reply:
    """The APDU of a reply."""

    apdu: bytes

    @property
    def kind(self) -> int:
        """PDU type: SIMPLE_ACK, COMPLEX_ACK, ERROR, REJECT or ABORT."""
        return self.apdu[0] >> 4

    @property
    def srv(self) -> bool:
        """The SRV bit of an Abort: set when the server sent it."""
        return bool(self.apdu[0] & 0x01)

    @property
    def reason(self) -> int:
        """Reject or abort reason."""
        return self.apdu[2]

    @property
    def error(self) -> tuple[int, int]:
        """(error class, error code) of a plain Error PDU."""
        assert self.kind == ERROR
        body = self.apdu[3:]
        if body[0] == 0x0E:  # WritePropertyMultiple-Error etc.: opening tag 0
            body = body[1:]
        return body[1], body[3]

    def real(self) -> float:
        """The first application-tagged Real in the reply."""
        at = self.apdu.index(b"\x44", 3)
        return float(struct.unpack(">f", self.apdu[at + 1 : at + 5])[0])


class WireClient:
    """A raw UDP socket on 127.0.0.1 that sends frames and reads replies (inside the loop)."""

    def __init__(self, device_port: int, host: str = "127.0.0.1") -> None:
        self.device = ("127.0.0.1", device_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    async def send(self, frame: bytes) -> None:
        """Send one datagram to the device."""
        await asyncio.get_running_loop().sock_sendto(self.sock, frame, self.device)

    async def receive(self, wait_s: float = 2.0) -> Reply | None:
        """The next reply's APDU (None on timeout); COV notifications are skipped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), left)
            except TimeoutError:
                return None
            npdu = data[4:]
            control = npdu[1]
            offset = 2
            if control & 0x08:  # source specifier
                offset += 3 + npdu[offset + 2]
            apdu = npdu[offset:]
            if apdu and apdu[0] >> 4 == 1:  # unconfirmed request (COV notification, I-Am)
                continue
            return Reply(apdu)

    async def ask(self, frame: bytes, wait_s: float = 2.0) -> Reply:
        """Send a request and return its reply (fails on timeout)."""
        await self.send(frame)
        reply = await self.receive(wait_s)
        assert reply is not None, "no reply"
        return reply
