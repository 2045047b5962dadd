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


class RequestError(GenrecError):
    """A recommendation request that cannot be served as given (unknown items, empty history, bad k).

    ``field`` names the request field at fault and ``values`` the offending values, so the HTTP
    server can answer 422 pointing at them.
    """

    def __init__(self, message: str, field: str | None = None, values: list | None = None) -> None:
        super().__init__(message)
        self.field, self.values = field, list(values or [])
