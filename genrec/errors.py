"""User-facing errors: one clear message, no traceback, CLI exit status 2."""

from __future__ import annotations


class GenrecError(Exception):
    """A problem with the user's input or environment that the user can fix.

    The CLI prints ``error: <message>`` and exits with status 2. Messages name the
    offending file / line / key and say what to do.
    """

    exit_code = 2


class DataError(GenrecError):
    """Malformed or inconsistent input data (file, line and fix in the message)."""


class ConfigError(GenrecError):
    """Unknown or invalid configuration key / value."""


class FetchError(GenrecError):
    """An embedded default could not be downloaded or failed its checksum."""
