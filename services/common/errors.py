"""Domain errors shared by the services; servicers map them to gRPC status codes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldProblem:
    """One reason a field was refused."""

    field: str
    code: str
    message: str


class HandoffError(Exception):
    """Base of every domain error; `retryable` tells callers whether to try again."""

    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(HandoffError):
    """The named thing does not exist (or belongs to another account)."""


class AlreadyExistsError(HandoffError):
    """A create collided with an existing thing that differs."""


class FailedPreconditionError(HandoffError):
    """The thing exists but is not in a state that allows this (e.g. archived)."""


class UnauthenticatedError(HandoffError):
    """The call carries no credential, or one that is malformed, unknown, expired or revoked."""


class PermissionDeniedError(HandoffError):
    """The caller is known but may not make this call (role, scope, archived account)."""


class UnavailableError(HandoffError):
    """A dependency is down; the same call may succeed later."""

    retryable = True


class IdleStreamError(UnavailableError):
    """A client stream sent nothing for too long and was ended; the caller may open a new
    one (its message is meant for the caller, unlike a dependency's)."""


class ResourceExhaustedError(HandoffError):
    """The server is at a limit (calls in flight); the same call may succeed shortly."""

    retryable = True


@dataclass
class InvalidArgumentError(HandoffError):
    """The request is malformed; `problems` names each bad field."""

    message: str
    problems: list[FieldProblem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)
