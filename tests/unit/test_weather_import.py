"""Weather history import: auto-detected columns, empty rows, irregular reports, DST, storage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from core.forecast.weather import WeatherImportError, load_weather_csv
from core.readings import CompletedMinute
from core.storage.repository import Storage
from core.timegrid import minute_of

CHICAGO = ZoneInfo("America/Chicago")
HEADER = "Date,HourlyDewPointTemperature,HourlyDryBulbTemperature,HourlyRelativeHumidity\n"


def _utc_minute(year: int, month: int, day: int, hour: int, minute: int) -> int:
    return minute_of(datetime(year, month, day, hour, minute, tzinfo=UTC))


def test_noaa_style_file_with_empty_rows_is_interpolated(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text(
        HEADER + "2022-08-01T00:00:00,60,70,50\n"
        "2022-08-01T00:00:00,,,\n"
        "2022-08-01T00:10:00,,,\n"
        ",,,\n"
        "2022-08-01T00:53:00,61,80,52\n"
        "2022-08-01T00:53:00,61,80,52\n"
        "2022-08-01T01:20:00,,,\n"
        "2022-08-01T01:53:00,62,74s,55\n"
    )
    series = load_weather_csv(path, CHICAGO, clock="local")
    report = series.report
    assert report.time_column == "Date"
    assert report.temp_column == "HourlyDryBulbTemperature"  # not the dew point
    assert report.rows_without_value == 3
    assert report.reports == 3  # the duplicated 00:53 report counts once
    # 2022-08-01 00:00 CDT is 05:00 UTC.
    assert series.start_minute == _utc_minute(2022, 8, 1, 5, 0)
    assert len(series.values) == 114
    assert series.values[0] == pytest.approx(70.0)
    assert series.values[53] == pytest.approx(80.0)
    assert series.values[113] == pytest.approx(74.0)
    # Linear between reports: half-way from 00:53 (80) to 01:53 (74).
    assert series.values[83] == pytest.approx(77.0)
    assert report.minutes_interpolated == 114 - 3


def test_semicolon_file_with_decimal_commas(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("Datum;Außentemperatur °C\n01.08.2022 00:00;20,5\n01.08.2022 01:00;21,5\n")
    series = load_weather_csv(path, ZoneInfo("UTC"))
    assert series.report.temp_column == "Außentemperatur °C"
    assert series.values[0] == pytest.approx(20.5)
    assert series.values[30] == pytest.approx(21.0)


def test_long_gaps_stay_unknown(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("time,temp_c\n2022-08-01 00:00,20\n2022-08-01 06:00,26\n2022-08-01 07:00,27\n")
    series = load_weather_csv(path, ZoneInfo("UTC"), max_gap_minutes=180)
    assert np.isnan(series.values[1:360]).all()
    assert series.values[390] == pytest.approx(26.5)
    assert series.report.minutes_missing == 359


def test_spring_forward_reports_mean_local_standard_time(tmp_path: Path) -> None:
    # NOAA stamps are local standard time: 2023-03-12 02:30 exists there (not on the wall clock).
    path = tmp_path / "w.csv"
    path.write_text(
        HEADER + "2023-03-12T01:53:00,29,30,96\n"
        "2023-03-12T02:30:00,29,32,88\n"
        "2023-03-12T03:53:00,27,31,85\n"
    )
    series = load_weather_csv(path, CHICAGO)
    assert series.report.clock == "standard"
    # CST is UTC-6 all year for these stamps.
    assert series.start_minute == _utc_minute(2023, 3, 12, 7, 53)
    assert series.values[_utc_minute(2023, 3, 12, 8, 30) - series.start_minute] == 32.0
    local = load_weather_csv(path, CHICAGO, clock="local")
    assert local.report.rows_nonexistent_local_time == 1


def test_fall_back_hour_on_the_wall_clock(tmp_path: Path) -> None:
    # A wall-clock file repeats 01:30 on 2022-11-06: first CDT (06:30 UTC), then CST (07:30 UTC).
    path = tmp_path / "w.csv"
    path.write_text(
        "Timestamp,Outdoor Air Temp\n"
        "2022-11-06 00:30,10\n"
        "2022-11-06 01:30,11\n"
        "2022-11-06 01:30,12\n"
        "2022-11-06 02:30,13\n"
    )
    series = load_weather_csv(path, CHICAGO)
    assert series.report.clock == "local"
    assert series.start_minute == _utc_minute(2022, 11, 6, 5, 30)
    stored = series.as_dict()
    assert stored[_utc_minute(2022, 11, 6, 6, 30)] == 11.0
    assert stored[_utc_minute(2022, 11, 6, 7, 30)] == 12.0
    assert stored[_utc_minute(2022, 11, 6, 8, 30)] == 13.0
    assert len(series.values) == 181


def test_unit_conversion_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("date,oat\n2022-08-01 00:00,212\n2022-08-01 00:01,32\n")
    series = load_weather_csv(path, ZoneInfo("UTC"), convert="f_to_c")
    assert series.values.tolist() == pytest.approx([100.0, 0.0])
    bad = tmp_path / "bad.csv"
    bad.write_text("date,humidity\n2022-08-01 00:00,50\n")
    with pytest.raises(WeatherImportError):
        load_weather_csv(bad, ZoneInfo("UTC"))


def test_shared_noaa_file_reads_as_standard_time() -> None:
    path = Path("/work/shared/data/hourly_weather_2022-03_2023-03.csv")
    if not path.exists():
        pytest.skip("shared data not available")
    series = load_weather_csv(path, CHICAGO)
    assert series.report.clock == "standard"
    assert series.report.reports > 8000
    assert float(np.nanmean(np.isnan(series.values))) < 0.01


def test_weather_is_stored_beside_the_kw(storage: Storage) -> None:
    base = _utc_minute(2022, 8, 1, 5, 0)
    storage.insert_missing_minutes(base, np.array([5.0, 6.0, np.nan, 8.0]), "import")
    updated = storage.upsert_weather({base: 70.0, base + 1: 71.0, base + 2: 72.0, base + 9: 1.0})
    assert updated == 2  # minute +2 has no kW row, +9 is outside
    minutes, temps = storage.load_outdoor_air(base, base + 10)
    assert minutes.tolist() == [base, base + 1]
    assert temps.tolist() == [70.0, 71.0]
    # A live close with a temperature sets it; one without keeps what is stored.
    storage.upsert_minutes([CompletedMinute(base + 3, 9.0, 2)], "live", {base + 3: 73.0})
    storage.upsert_minutes([CompletedMinute(base, 5.5, 1)], "live")
    minutes, temps = storage.load_outdoor_air(base, base + 10)
    assert dict(zip(minutes.tolist(), temps.tolist(), strict=True)) == {
        base: 70.0,
        base + 1: 71.0,
        base + 3: 73.0,
    }
    assert storage.minute_bounds() == (base, base + 3)
