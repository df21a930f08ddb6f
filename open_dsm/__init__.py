"""open-dsm entry points: the command line and the composition root."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The installed package version (firmware/application version on the BACnet device)."""
    try:
        return version("open-dsm")
    except PackageNotFoundError:
        return "0+unknown"
