"""Core exceptions. Messages are safe to show to a client; each adapter maps them once."""

from __future__ import annotations


class CoreError(Exception):
    """Base class of errors the core raises on purpose."""


class InvalidReading(CoreError):
    """A meter reading was rejected (not finite, outside the plausible range, bad timestamp)."""


class InvalidRequest(CoreError):
    """A query or command was malformed (e.g. an empty time range)."""


class NotReady(CoreError):
    """The thing asked for does not exist yet (no forecast, no model)."""


class Busy(CoreError):
    """The requested work is already under way."""


class CommandConflict(CoreError):
    """A write was refused because a higher BACnet priority commands the input."""


class StorageUnavailable(CoreError):
    """The database cannot keep a write now; it was refused rather than acknowledged and lost."""
