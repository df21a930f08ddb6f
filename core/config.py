"""Settings: one validated object built once in the entry point and passed down."""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MAX_DEVICE_INSTANCE = 4194302
_BACNET_ADDRESS_RE = re.compile(
    r"^(?P<host>host|\d{1,3}(?:\.\d{1,3}){3})(?:/(?P<mask>\d{1,2}))?(?::(?P<port>\d{1,5}))?$"
)


def default_data_dir() -> Path:
    """Where the SQLite file and model artifacts live unless configured (XDG data home)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "open-dsm"


def system_timezone_name() -> str:
    """The host's IANA zone name (from TZ or /etc/localtime), falling back to UTC."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        target = os.path.realpath("/etc/localtime")
        marker = "zoneinfo/"
        if marker in target:
            return target.split(marker, 1)[1]
    except OSError:
        pass
    return "UTC"


def parse_bacnet_address(value: str) -> tuple[str, int | None, int]:
    """Split a bacpypes3 address ``A.B.C.D[/mask][:port]`` or ``host[:port]``; raise ValueError."""
    match = _BACNET_ADDRESS_RE.match(value.strip())
    if not match:
        raise ValueError(
            f"{value!r} is not a BACnet/IP address; use A.B.C.D/prefix:port, "
            "e.g. 192.168.1.10/24:47808, or host:47808 for the primary interface"
        )
    host = match["host"]
    if host != "host":
        ipaddress.IPv4Address(host)  # raises ValueError on 300.1.1.1
    mask = int(match["mask"]) if match["mask"] else None
    if mask is not None and not 0 <= mask <= 32:
        raise ValueError(f"network prefix /{mask} must be 0..32")
    port = int(match["port"]) if match["port"] else 47808
    if not 1 <= port <= 65535:
        raise ValueError(f"UDP port {port} must be 1..65535")
    return host, mask, port


Port = Annotated[int, Field(ge=1, le=65535)]


class Settings(BaseSettings):
    """Every setting of the service; each has an OPEN_DSM_<NAME> variable and a --<name> flag."""

    model_config = SettingsConfigDict(
        env_prefix="OPEN_DSM_", env_file=None, extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory for the SQLite file and model artifacts.",
    )
    db: str | None = Field(
        default=None,
        description="SQLAlchemy database URL; default sqlite:///<data-dir>/open-dsm.sqlite3. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db.",
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="REST API bind address (beyond loopback, writes need --api-token).",
    )
    http_port: Port = Field(default=8000, description="REST API TCP port.")
    bacnet_address: str = Field(
        default="host:47808",
        description="BACnet/IP address in bacpypes3 form, e.g. 192.168.1.10/24:47808; "
        "'host' means the primary interface.",
    )
    device_instance: int = Field(
        default=500001, ge=0, le=MAX_DEVICE_INSTANCE, description="BACnet device instance."
    )
    device_name: str = Field(
        default="OpenDsm", min_length=1, max_length=64, description="BACnet device object name."
    )
    vendor_id: int = Field(
        default=999,
        ge=0,
        le=65535,
        description="BACnet vendor identifier (set your ASHRAE-assigned id; 999 is a placeholder).",
    )
    vendor_name: str = Field(default="open-dsm project", description="BACnet vendor name.")
    location: str = Field(default="", max_length=128, description="BACnet device location.")
    device_description: str = Field(
        default="open-dsm demand side management", max_length=128, description="Device description."
    )
    foreign_bbmd: str | None = Field(
        default=None,
        description="Register as a foreign device with this BBMD (A.B.C.D[:port]).",
    )
    foreign_ttl: int = Field(
        default=900, ge=30, le=65535, description="Foreign-device registration lifetime (s)."
    )
    bbmd_bdt: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Act as a BBMD with this broadcast distribution table "
        "(comma-separated A.B.C.D/prefix:port, this device's own address first).",
    )
    timezone: str = Field(
        default_factory=system_timezone_name,
        description="Site time zone (IANA), used for midnight training and daily schedules.",
    )
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token required for REST writes; reads stay open."
    )
    allow_open_writes: bool = Field(
        default=False,
        description="Start even though --http-host is beyond loopback and no --api-token is set "
        "(anyone on the network can then write; logged as a warning).",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=268_435_456,
        description="Largest REST request body (bytes); larger ones get 413 before parsing.",
    )
    http_keepalive_s: int = Field(
        default=5,
        ge=1,
        le=300,
        description="Idle HTTP keep-alive connections are closed after this many seconds.",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        ge=0.5,
        le=300.0,
        description="A connection that has not sent a complete request head (request line and "
        "headers) this many seconds after it opened or after its last response is closed "
        "(silent and slowloris connections).",
    )
    http_max_connections: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Most concurrent REST connections; more are closed on accept. Also kept "
        "below the open-file limit less a margin for the service itself.",
    )
    start_empty: bool = Field(
        default=False,
        description="Start with a new empty database even though the previous SQLite file "
        "under --data-dir is gone (without it the service refuses to start).",
    )
    stale_after_s: float = Field(
        default=300.0,
        ge=1.0,
        le=86400.0,
        description="Seconds without a write before the input is stale (communication-failure).",
    )
    snapshot_interval_s: float = Field(
        default=60.0, ge=0.5, le=3600.0, description="How often outputs are recomputed (s)."
    )
    min_kw: float = Field(default=-10000.0, description="Lowest plausible meter reading (kW).")
    max_kw: float = Field(default=100000.0, description="Highest plausible meter reading (kW).")
    percentile_window_days: float = Field(
        default=30.0, gt=0.0, le=366.0, description="Trailing window for the load percentiles."
    )
    high_percentile: float = Field(
        default=90.0, gt=0.0, lt=100.0, description="High-load percentile."
    )
    low_percentile: float = Field(
        default=30.0, gt=0.0, lt=100.0, description="Low-load percentile."
    )
    flag_min_dwell_s: float = Field(
        default=900.0, ge=0.0, le=86400.0, description="Minimum time between load-flag changes (s)."
    )
    flag_min_history_minutes: int = Field(
        default=60, ge=1, description="Minutes of history needed before load flags are computed."
    )
    demand_interval_minutes: int = Field(
        default=15, description="Demand interval length (min): 5, 10, 15, 20, 30 or 60."
    )
    demand_window: str = Field(
        default="fixed", description="'fixed' clock-aligned intervals or 'sliding' (every minute)."
    )
    billing_cycle_day: int = Field(
        default=1, ge=1, le=28, description="Day of the month the billing period starts."
    )
    demand_target_kw: float | None = Field(
        default=None, gt=0.0, description="Demand target (kW); writable over BACnet and REST."
    )
    demand_ratchet: bool = Field(
        default=True,
        description="Effective target = max(target, period peak so far): never chase a paid peak.",
    )
    demand_deadband_kw: float = Field(
        default=1.0, ge=0.0, description="Hysteresis band of the demand decisions (kW)."
    )
    demand_min_on_minutes: int = Field(
        default=5, ge=0, le=240, description="Minimum on time of permits and requests (min)."
    )
    demand_min_off_minutes: int = Field(
        default=5, ge=0, le=240, description="Minimum off time of permits and requests (min)."
    )
    chiller_rated_kw: float | None = Field(
        default=None, gt=0.0, description="Chiller electric rating (kW), for the capacity limit."
    )
    chiller_min_pct: float = Field(
        default=40.0, ge=0.0, le=100.0, description="Lowest chiller capacity limit recommended (%)."
    )
    has_battery: bool = Field(default=False, description="A battery is installed.")
    battery_reserve_pct: float = Field(
        default=20.0, ge=0.0, le=100.0, description="Battery SOC kept in reserve (%)."
    )
    battery_charge_kw: float = Field(
        default=0.0, ge=0.0, description="Battery charging power when permitted (kW)."
    )
    has_ev: bool = Field(default=False, description="EV chargers are installed.")
    ev_charge_kw: float = Field(default=0.0, ge=0.0, description="EV charging power (kW).")
    battery_capacity_kwh: float | None = Field(
        default=None,
        description="Usable battery capacity (kWh); set it (with --has-battery) to run the "
        "dispatch planner.",
    )
    battery_discharge_kw: float | None = Field(
        default=None, description="Battery discharge power limit (kW); default = charge limit."
    )
    battery_efficiency: float = Field(
        default=0.92, description="Battery one-way efficiency, in (0, 1]."
    )
    battery_max_pct: float = Field(
        default=100.0, description="Highest SOC the plan charges to (%)."
    )
    ev_max_kw: float | None = Field(
        default=None, ge=0.0, description="EV chargers' maximum power (kW); default --ev-charge-kw."
    )
    ev_min_kw: float = Field(default=0.0, ge=0.0, description="EV chargers' minimum power (kW).")
    demand_charge_per_kw: float = Field(
        default=15.0, ge=0.0, description="Demand charge ($/kW of billed demand) for the plan."
    )
    energy_price_per_kwh: float = Field(
        default=0.10, ge=0.0, description="Energy price ($/kWh) for the plan."
    )
    tou_prices: str = Field(
        default="",
        description="Time-of-use energy prices as 'HOUR:PRICE,...' in local time (e.g. "
        "'0:0.08,14:0.22,20:0.08'); empty: the flat --energy-price-per-kwh.",
    )
    outdoor_air_units: Literal["degrees-fahrenheit", "degrees-celsius"] = Field(
        default="degrees-fahrenheit",
        description="Units of the outdoor-air-temperature point (BACnet engineering units).",
    )
    training_time_budget_s: float = Field(
        default=50.0, ge=5.0, le=3600.0, description="Wall-time budget of one training run (s)."
    )
    log_level: str = Field(default="INFO", description="Logging level.")
    clock_start: datetime | None = Field(
        default=None,
        description="Simulated clock (demos): the service's time at --clock-anchor-unix "
        "(ISO 8601 with offset); unset: the system clock.",
    )
    clock_speed: float = Field(
        default=1.0, ge=0.01, le=1000.0, description="Simulated clock: clock seconds per second."
    )
    clock_anchor_unix: float | None = Field(
        default=None,
        description="Simulated clock: the wall time (Unix seconds) it shows --clock-start at; "
        "unset: when the service starts.",
    )

    @field_validator("bbmd_bdt", mode="before")
    @classmethod
    def _split_bdt(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("bacnet_address")
    @classmethod
    def _check_bacnet_address(cls, value: str) -> str:
        parse_bacnet_address(value)
        return value.strip()

    @field_validator("bbmd_bdt")
    @classmethod
    def _check_bdt(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_bacnet_address(entry)
        return value

    @field_validator("foreign_bbmd")
    @classmethod
    def _check_foreign(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, _ = parse_bacnet_address(value)
            if host == "host":
                raise ValueError("the BBMD must be given as an IPv4 address")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("demand_window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        if value not in ("fixed", "sliding"):
            raise ValueError("must be 'fixed' or 'sliding'")
        return value

    @field_validator("demand_interval_minutes")
    @classmethod
    def _check_interval(cls, value: int) -> int:
        if value not in (5, 10, 15, 20, 30, 60):
            raise ValueError("must be 5, 10, 15, 20, 30 or 60 minutes")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.min_kw >= self.max_kw:
            raise ValueError("min_kw must be below max_kw")
        if self.low_percentile >= self.high_percentile:
            raise ValueError("low_percentile must be below high_percentile")
        if self.foreign_bbmd and self.bbmd_bdt:
            raise ValueError("foreign_bbmd and bbmd_bdt are exclusive")
        if self.battery_capacity_kwh is not None and self.battery_capacity_kwh <= 0:
            raise ValueError("battery_capacity_kwh must be above 0")
        if not 0 < self.battery_efficiency <= 1:
            raise ValueError("battery_efficiency must be in (0, 1]")
        if not 0 < self.battery_max_pct <= 100:
            raise ValueError("battery_max_pct must be within (0, 100]")
        if self.battery_reserve_pct >= self.battery_max_pct:
            raise ValueError("battery_reserve_pct must be below battery_max_pct")
        if self.battery_discharge_kw is not None and self.battery_discharge_kw < 0:
            raise ValueError("battery_discharge_kw must not be negative")
        if self.ev_max_kw is not None and self.ev_min_kw > self.ev_max_kw:
            raise ValueError("ev_min_kw must not exceed ev_max_kw")
        self.tou_schedule()  # raises on a malformed schedule
        if self.clock_start is not None and self.clock_start.tzinfo is None:
            raise ValueError("clock_start needs a time-zone offset (e.g. Z)")
        return self

    def tou_schedule(self) -> tuple[tuple[int, float], ...]:
        """The time-of-use prices as sorted (local start hour, $/kWh) pairs."""
        pairs: list[tuple[int, float]] = []
        for part in filter(None, (p.strip() for p in self.tou_prices.split(","))):
            hour, sep, price = part.partition(":")
            try:
                pairs.append((int(hour), float(price)))
            except ValueError as exc:
                raise ValueError(f"tou_prices: {part!r} is not HOUR:PRICE") from exc
            if not sep or not 0 <= pairs[-1][0] <= 23 or pairs[-1][1] < 0:
                raise ValueError(f"tou_prices: {part!r} needs an hour 0..23 and a price >= 0")
        return tuple(sorted(pairs))

    @property
    def tz(self) -> ZoneInfo:
        """The site's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def database_url(self) -> str:
        """The one place the database is named: --db, or the SQLite file in the data dir."""
        if self.db:
            return self.db
        return f"sqlite:///{self.data_dir / 'open-dsm.sqlite3'}"

    @property
    def models_dir(self) -> Path:
        """Versioned model artifacts, beside the database."""
        return self.data_dir / "models"
