"""COV subscriptions: bounded in number per source and in lifetime; dead subscribers dropped."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bacpypes3.app import Application
from bacpypes3.errors import ExecutionError, MissingRequiredParameter

from bacnet.logs import bad_packets

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


def source_key(address: Any) -> str:
    """The source a COV cap counts: the IP host of a B/IP address, else the address."""
    host = getattr(address, "addrTuple", None)
    return str(host[0]) if host else str(address)


class CovHandlers(Application):  # type: ignore[misc]
    """The application's SubscribeCOV service (a mixin of ``OpenDsmApplication``)."""

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
                bad_packets.warning(
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
        bad_packets.warning(
            "BACnet: confirmed COV notification to %s not acknowledged", cov.client_addr
        )
        if failures >= MAX_COV_NOTIFY_FAILURES and any(c is cov for c in self.cov_subscriptions()):
            bad_packets.warning(
                "BACnet: COV subscription of %s cancelled after %d unacknowledged notifications",
                cov.client_addr,
                failures,
            )
            self.cancel_subscription(cov)
