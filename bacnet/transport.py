"""Request fairness on the wire: muted sources dropped unread, segments sized, budgets spent.

The UDP protocol and the server transaction bacpypes3 builds are replaced by these subclasses
(``install_server_ssm``); the per-source token budget itself is ``bacnet.limits.SourceGuard``.
"""

from __future__ import annotations

import socket
from typing import Any

from bacpypes3 import appservice, ipv4
from bacpypes3.apdu import (
    AbortPDU,
    AbortReason,
    APCISequence,
    ComplexAckPDU,
    RejectPDU,
    RejectReason,
)
from bacpypes3.appservice import ABORTED, ServerSSM
from bacpypes3.pdu import PDU

from bacnet.limits import SourceGuard
from bacnet.logs import bad_packets, log
from core.logs import RateLimitedLogger

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


def source_keys(address: Any) -> tuple[str, str]:
    """(host, address) a budget charges: IP and IP:port of a B/IP address, else the address."""
    pair = getattr(address, "addrTuple", None)
    if not pair:
        return str(address), str(address)
    return str(pair[0]), f"{pair[0]}:{pair[1]}"


_muted_log = RateLimitedLogger(log, interval_s=60.0)


def muted(guard: SourceGuard, host: str, address: str) -> bool:
    """True if the source is over its budget while others wait (logged once a minute)."""
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
        if not muted(guard, addr[0], f"{addr[0]}:{addr[1]}"):
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
            if not muted(guard, addr[0], f"{addr[0]}:{addr[1]}"):
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
                bad_packets.warning(
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
        bad_packets.warning(
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


def undecodable(pdu: PDU, exc: Exception, guard: SourceGuard) -> None:
    """Drop an undecodable APDU, spending its source's budget as a refusal."""
    guard.spend(*source_keys(pdu.pduSource), refused=True)
    bad_packets.warning(
        "BACnet: undecodable APDU from %s dropped (%s)", pdu.pduSource, type(exc).__name__
    )
