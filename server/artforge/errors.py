"""The one error type the server's layers raise; the API turns it into a gRPC status.

Codes carry the names of gRPC status codes so the API maps them by name, while jobs, engines
and models stay free of grpc imports.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16
    CANCELLED = 1


class ArtForgeError(Exception):
    """A failure with a code and a sentence a person can act on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(field: str, problem: str) -> ArtForgeError:
    """INVALID_ARGUMENT whose sentence starts with the offending field."""
    return ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"{field}: {problem}")


def shown(value: str, limit: int = 64) -> str:
    """A client's string as an error or a log line quotes it: repr'd, and cut to `limit` characters
    with its full length said, so that no request can make a message as long as itself."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"
