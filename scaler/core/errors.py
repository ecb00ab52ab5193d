"""How an external API call failed: worth retrying, or not. Adapters raise these; the actuators decide."""

from __future__ import annotations


class TransientError(Exception):
    """An API call failed in a way worth retrying (throttled, 5xx, conflict, connection)."""


class ConflictError(TransientError):
    """The object changed between read and write (HTTP 409): the API is alive, a re-read and retry will do."""


class PermanentError(Exception):
    """An API call failed in a way a retry cannot fix (not found, forbidden, invalid)."""
