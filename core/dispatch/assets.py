"""The site's flexible assets: a battery and EV chargers, and the tariff that prices a plan."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Battery:
    """A stationary battery: usable capacity, power limits, one-way efficiency, SOC window."""

    capacity_kwh: float
    charge_kw: float
    discharge_kw: float
    efficiency: float = 0.92  # one way: charging stores eff * kWh, discharging delivers eff * kWh
    reserve_pct: float = 0.0
    max_pct: float = 100.0

    def __post_init__(self) -> None:
        if not self.capacity_kwh > 0:
            raise ValueError(f"battery capacity must be above 0 kWh, got {self.capacity_kwh:g}")
        if self.charge_kw < 0 or self.discharge_kw < 0:
            raise ValueError("battery power limits must not be negative")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"battery efficiency must be in (0, 1], got {self.efficiency:g}")
        if not 0 <= self.reserve_pct <= 100 or not 0 < self.max_pct <= 100:
            raise ValueError("battery SOC reserve and maximum must be within 0..100 %")
        if self.reserve_pct >= self.max_pct:
            raise ValueError(
                f"battery SOC reserve {self.reserve_pct:g} % must be below the maximum "
                f"{self.max_pct:g} %"
            )

    @property
    def min_kwh(self) -> float:
        """Stored energy at the reserve."""
        return self.capacity_kwh * self.reserve_pct / 100.0

    @property
    def max_kwh(self) -> float:
        """Stored energy at the maximum SOC."""
        return self.capacity_kwh * self.max_pct / 100.0

    def kwh(self, soc_pct: float) -> float:
        """Stored energy at ``soc_pct``."""
        return self.capacity_kwh * soc_pct / 100.0

    def pct(self, kwh: float) -> float:
        """SOC of ``kwh`` stored."""
        return 100.0 * kwh / self.capacity_kwh


@dataclass(frozen=True, slots=True)
class EvChargers:
    """EV chargers as one flexible load: the limit the BAS may give them, kW."""

    max_kw: float
    min_kw: float = 0.0

    def __post_init__(self) -> None:
        if self.max_kw <= 0 or not 0 <= self.min_kw <= self.max_kw:
            raise ValueError("EV charger limits need 0 <= minimum <= maximum and maximum > 0")


@dataclass(frozen=True, slots=True)
class Tariff:
    """What a kW of billed demand and a kWh cost; prices only weigh the plan's terms."""

    demand_charge_per_kw: float = 15.0
    energy_price_per_kwh: float = 0.10
    # Optional time-of-use energy prices: (start hour local, price) pairs, sorted by hour.
    tou_prices: tuple[tuple[int, float], ...] = ()
    # A small cost per kWh through the battery: it never cycles for nothing.
    throughput_cost_per_kwh: float = 0.002

    def energy_price(self, local_hour: int) -> float:
        """Energy price at a local hour (time-of-use if configured)."""
        price = self.energy_price_per_kwh
        for hour, value in self.tou_prices:
            if local_hour >= hour:
                price = value
        return price
