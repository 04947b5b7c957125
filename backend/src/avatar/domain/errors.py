"""Errors the domain and the use cases raise; each carries a stable code for clients.

The error shape clients see is in docs/design-notes.md §6 and docs/protocol.md.
"""

from __future__ import annotations


class AvatarError(Exception):
    """Base of every error AVATAR reports to a caller.

    Attributes:
        code: Stable machine-readable code (upper snake case), e.g. ``SESSION_NOT_FOUND``.
        message: Human-readable explanation saying what to do.
    """

    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class DomainError(AvatarError):
    """A domain invariant was violated."""

    code = "INVALID_ARGUMENT"


class NotFoundError(AvatarError):
    code = "NOT_FOUND"


class InvalidInputError(AvatarError):
    """The caller sent something unusable (bad audio, malformed message, ...)."""

    code = "INVALID_INPUT"


class CapacityError(AvatarError):
    """A bounded resource is full (sessions, work queue); retry later.

    Attributes:
        retry_after_s: When the caller may retry, in seconds, if known (``Retry-After``).
    """

    code = "BUSY"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class DependencyError(AvatarError):
    """A dependency (database, model server, object store) failed or is unreachable."""

    code = "DEPENDENCY_UNAVAILABLE"


class ConflictError(AvatarError):
    """The request clashes with what exists (a user name already taken)."""

    code = "CONFLICT"


class UnauthenticatedError(AvatarError):
    """No valid credential came with the request (docs/security.md)."""

    code = "UNAUTHENTICATED"


class ForbiddenError(AvatarError):
    """The caller is known but may not do this (not an admin, CSRF token missing)."""

    code = "FORBIDDEN"


class RateLimitedError(AvatarError):
    """Too many requests of one kind from one user or address; retry after ``retry_after_s``."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
