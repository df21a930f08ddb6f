"""The BACnet application: bacpypes3's, with bounded request handlers and every request answered.

Built from one mixin per job: ``RequestScreen`` (bacnet/screen.py: fairness and refusals),
``ReadHandlers`` (bacnet/reads.py), ``WriteHandlers`` (bacnet/writes.py) and ``CovHandlers``
(bacnet/cov.py); the wire (UDP protocol, server transaction) is bacnet/transport.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bacpypes3.apdu import APDU, ConfirmedRequestPDU
from bacpypes3.pdu import PDU

from bacnet.cov import CovHandlers
from bacnet.limits import SourceGuard
from bacnet.logs import guard_bacpypes3_logs
from bacnet.reads import ReadHandlers
from bacnet.screen import CONFIRMED_EXECUTED, RequestScreen
from bacnet.transport import (
    BUSY_LAG_S,
    LAG_PROBE_S,
    SOURCE_BURST,
    SOURCE_RATE_PER_S,
    install_server_ssm,
    muted,
    source_keys,
    undecodable,
)
from bacnet.writes import WriteHandlers

# The protocol-services-supported names of the services this device executes (clause 12.11.29:
# a service it only initiates, I-Am, I-Have and the COV notifications, is not set): the confirmed
# ones the request screen lets through, and the two unconfirmed ones it answers.
SERVICES_SUPPORTED = (*sorted(CONFIRMED_EXECUTED), "whoIs", "whoHas")


class OpenDsmApplication(CovHandlers, WriteHandlers, ReadHandlers, RequestScreen):
    """bacpypes3's Application with the handlers this device needs to be bounded and truthful."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # RequestScreen's state: the expensive-request gate and the decode queue.
        self._expensive = asyncio.Semaphore(1)
        self._waiting = 0
        self._decoding = asyncio.Lock()
        self._decode_waiting = 0
        # ReadHandlers' cache of all/required/optional expansions.
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
            if muted(app.source_guard, *source_keys(pdu.pduSource)):
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
                undecodable(pdu, exc, app.source_guard)
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
