"""The exceptions maas raises. Every one is a :class:`MaasError` and carries its details
as attributes, not only in its message:

- :class:`ValidationError` (also a ``ValueError``): a request was refused; ``report`` is
  the whole :class:`~maas.results.Rejection` (every problem at once) when the server sent
  one.
- :class:`OverlapError`: a ``ValidationError`` whose hosts are held by other active
  batches; ``conflicts``, ``hosts`` and ``batches`` say which.
- :class:`PermissionDenied` (also a ``PermissionError``): with ``unauthorized`` listing
  what was missing when a submission was refused only for permissions.
- :class:`NotFound` (also a ``LookupError``).
- :class:`InvalidState`: the batch cannot do that now (resume a finished batch).
- :class:`IdempotencyConflict`: the idempotency key was used with another request.
- :class:`Unavailable` (also a ``ConnectionError``): the server could not be reached or
  did not answer in time.
- :class:`WaitTimeout` (also a ``TimeoutError``): ``wait`` gave up; ``batch`` is the
  batch as last seen.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, List, Optional

from .results import Conflict, Rejection

if TYPE_CHECKING:
    from .results import Batch

__all__ = [
    "MaasError",
    "ValidationError",
    "OverlapError",
    "PermissionDenied",
    "NotFound",
    "InvalidState",
    "IdempotencyConflict",
    "Unavailable",
    "WaitTimeout",
]


class MaasError(Exception):
    """Any maas failure. ``code`` is the gRPC status name (``"NotFound"``, ...) or
    ``"Local"`` for problems found before a request was sent."""

    def __init__(self, message: str, *, code: str = "Local") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ValidationError(MaasError, ValueError):
    """The request was refused. ``report`` holds every problem when the server sent them."""

    def __init__(self, message: str, *, code: str = "Local", report: Optional[Rejection] = None) -> None:
        super().__init__(message, code=code)
        self.report = report

    @property
    def unknown_hosts(self) -> List[str]:
        return self.report.unknown_hosts if self.report else []


class OverlapError(ValidationError):
    """Hosts in the request are held by other active batches: ``conflicts`` pairs each
    host with its batch; ``hosts`` and ``batches`` list them (sorted, unique)."""

    @property
    def conflicts(self) -> List[Conflict]:
        return self.report.conflicts if self.report else []

    @property
    def hosts(self) -> List[str]:
        return sorted({c.hostname for c in self.conflicts})

    @property
    def batches(self) -> List[str]:
        return sorted({c.batch_id for c in self.conflicts})


class PermissionDenied(MaasError, PermissionError):
    """The caller may not do this (or the server did not accept its certificate). When a
    submission was refused only for permissions, ``report`` is the whole rejection and
    ``unauthorized`` says what was missing, host by host."""

    def __init__(self, message: str, *, code: str = "Local", report: Optional[Rejection] = None) -> None:
        super().__init__(message, code=code)
        self.report = report

    @property
    def unauthorized(self) -> List[str]:
        return self.report.unauthorized if self.report else []


class NotFound(MaasError, LookupError):
    """No such batch or host."""


class InvalidState(MaasError):
    """The batch is in a state that does not allow this."""


class IdempotencyConflict(MaasError):
    """The idempotency key was already used for a different request."""


class Unavailable(MaasError, ConnectionError):
    """The server could not be reached, or did not answer in time."""


class WaitTimeout(MaasError, TimeoutError):
    """``wait`` gave up before the batch finished; ``batch`` is how it was last seen."""

    def __init__(self, message: str, *, batch: "Optional[Batch]" = None) -> None:
        super().__init__(message, code="DeadlineExceeded")
        self.batch = batch


def _from_status(code: str, message: str, details: Optional[str]) -> MaasError:
    """The exception for a gRPC status (called by the Rust half for every refused or
    failed call). ``details`` is the Rejection as JSON, when the status carried one."""
    report = Rejection._from_wire(json.loads(details)) if details else None
    if report is not None:
        only_permissions = report.unauthorized and not (
            report.conflicts or report.unknown_hosts or report.decommissioned_hosts or report.in_use_hosts or report.other
        )
        if only_permissions:
            return PermissionDenied(message, code=code, report=report)
        kind = OverlapError if report.conflicts else ValidationError
        return kind(message, code=code, report=report)
    if code in ("InvalidArgument", "OutOfRange"):
        return ValidationError(message, code=code)
    if code == "FailedPrecondition":
        return InvalidState(message, code=code)
    if code in ("PermissionDenied", "Unauthenticated"):
        return PermissionDenied(message, code=code)
    if code == "NotFound":
        return NotFound(message, code=code)
    if code == "AlreadyExists":
        return IdempotencyConflict(message, code=code)
    if code in ("Unavailable", "DeadlineExceeded", "Unknown", "Cancelled"):
        return Unavailable(message, code=code)
    return MaasError(message, code=code)
