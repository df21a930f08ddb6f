"""Settings validation and the one-line errors of the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import Settings, parse_bacnet_address


def test_defaults_match_the_documentation(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.http_port == 8000
    assert settings.device_instance == 500001
    assert settings.device_name == "OpenDsm"
    assert settings.bacnet_address == "host:47808"
    assert settings.database_url == f"sqlite:///{tmp_path / 'open-dsm.sqlite3'}"
    assert settings.stale_after_s == 300
    assert settings.percentile_window_days == 30


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPEN_DSM_HTTP_PORT", "8123")
    monkeypatch.setenv("OPEN_DSM_BBMD_BDT", "10.0.0.1/24:47808, 10.0.1.1/24:47808")
    settings = Settings()
    assert settings.http_port == 8123
    assert settings.bbmd_bdt == ["10.0.0.1/24:47808", "10.0.1.1/24:47808"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("http_port", 70000),
        ("device_instance", 4194303),
        ("bacnet_address", "300.1.1.1/24:47808"),
        ("bacnet_address", "192.168.1.10/24:99999"),
        ("bacnet_address", "not an address"),
        ("timezone", "Mars/Olympus"),
        ("high_percentile", 100),
    ],
)
def test_bad_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_address_parsing() -> None:
    assert parse_bacnet_address("192.168.1.10/24:47808") == ("192.168.1.10", 24, 47808)
    assert parse_bacnet_address("host") == ("host", None, 47808)


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "open_dsm", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_flags_stop_start_up_with_one_clear_line(tmp_path: Path) -> None:
    result = _serve("--http-port", "70000", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "open-dsm: invalid --http-port (OPEN_DSM_HTTP_PORT): "
        "Input should be less than or equal to 65535"
    ]
    result = _serve("--device-instance", "4194303", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "--device-instance" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = _serve("--data-dir", str(blocker / "sub"), "--bacnet-address", "127.0.0.1/8:47999")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"open-dsm: data directory {blocker / 'sub'} is not writable")
    assert "Traceback" not in result.stderr


def test_help_lists_every_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "open_dsm", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in result.stdout
    assert "OPEN_DSM_API_TOKEN" in result.stdout
