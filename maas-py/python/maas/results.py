"""Typed results: what maas answers, as frozen dataclasses with readable reprs.

Every collection is a :class:`Records` list with ``to_records()`` (a list of flat dicts),
so ``pandas.DataFrame(client.batches().to_records())`` just works. Timestamps are
timezone-aware :class:`datetime.datetime` objects in UTC.

The ``_from_wire`` constructors read the ``maas.v1`` proto's JSON (field names as in
``maas-grpc/proto/maas/v1/maas.proto``); they are the only place that knows it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Generic, List, Optional, TypeVar

__all__ = [
    "Records",
    "Counts",
    "HostRun",
    "Batch",
    "Submission",
    "Conflict",
    "Rejection",
    "DryRun",
    "Event",
    "Ticket",
    "SiteActivity",
    "Durations",
    "Stats",
    "Period",
    "Host",
    "AuditEntry",
    "TERMINAL_BATCH_STATES",
]

#: Batch states after which nothing changes.
TERMINAL_BATCH_STATES = frozenset({"completed", "cancelled"})

T = TypeVar("T")


def _time(ms: Optional[int]) -> Optional[datetime]:
    """Milliseconds since the epoch as an aware UTC datetime (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)


class Records(List[T], Generic[T]):
    """A list of results that also converts to rows: ``to_records()`` gives one flat dict
    per item (nested values spread into columns), ready for ``pandas.DataFrame``."""

    def to_records(self) -> List[Dict[str, Any]]:
        return [item.to_dict() for item in self]  # type: ignore[attr-defined]

    def to_dataframe(self) -> Any:
        """A pandas DataFrame of :meth:`to_records` (needs pandas installed)."""
        import pandas  # noqa: PLC0415 - optional dependency

        return pandas.DataFrame(self.to_records())


class _Result:
    def to_dict(self) -> Dict[str, Any]:
        """This result as a flat dict (one row)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Counts(_Result):
    """A batch's host runs by state."""

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.queued + self.running + self.succeeded + self.failed + self.cancelled

    @property
    def done(self) -> int:
        """Host runs that finished, however they ended."""
        return self.succeeded + self.failed + self.cancelled

    @classmethod
    def _from_wire(cls, w: Optional[Dict[str, Any]]) -> "Counts":
        w = w or {}
        return cls(**{f.name: int(w.get(f.name, 0)) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class HostRun(_Result):
    """One host's part in a batch."""

    hostname: str
    site: str
    state: str
    step: str
    step_state: str
    attempts: int
    last_error: str
    straggler: bool

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "HostRun":
        return cls(
            hostname=w["hostname"],
            site=w["site"],
            state=w["state"],
            step=w["step"],
            step_state=w["step_state"],
            attempts=int(w["attempts"]),
            last_error=w["last_error"],
            straggler=bool(w["straggler"]),
        )


@dataclass(frozen=True, repr=False)
class Batch(_Result):
    """A batch: its action, state, counts and (when asked for) its hosts."""

    id: str
    submitter: str
    action: str
    state: str
    pause_reason: str
    counts: Counts
    created_at: datetime
    updated_at: datetime
    finished_at: Optional[datetime]
    idempotency_key: str
    hosts: "Records[HostRun]" = field(default_factory=Records)

    @property
    def finished(self) -> bool:
        """Whether nothing will change any more (completed or cancelled)."""
        return self.state in TERMINAL_BATCH_STATES

    @property
    def succeeded(self) -> bool:
        """Completed with every host succeeded."""
        c = self.counts
        return self.state == "completed" and c.failed == 0 and c.cancelled == 0

    def __repr__(self) -> str:
        c = self.counts
        paused = f" ({self.pause_reason})" if self.pause_reason else ""
        return (
            f"<Batch {self.id} {self.action} {self.state}{paused} by {self.submitter}: "
            f"{c.done}/{c.total} done, {c.succeeded} succeeded, {c.failed} failed, "
            f"{c.cancelled} cancelled, {c.running} running, {c.queued} queued>"
        )

    def to_dict(self) -> Dict[str, Any]:
        row = {k: v for k, v in super().to_dict().items() if k not in ("counts", "hosts")}
        row.update(self.counts.to_dict())
        return row

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "Batch":
        return cls(
            id=w["id"],
            submitter=w["submitter"],
            action=w["action"],
            state=w["state"],
            pause_reason=w["pause_reason"],
            counts=Counts._from_wire(w.get("counts")),
            created_at=_time(w["created_at_ms"]),  # type: ignore[arg-type]
            updated_at=_time(w["updated_at_ms"]),  # type: ignore[arg-type]
            finished_at=_time(w.get("finished_at_ms")),
            idempotency_key=w["idempotency_key"],
            hosts=Records(HostRun._from_wire(h) for h in w.get("hosts", [])),
        )


@dataclass(frozen=True)
class Submission(_Result):
    """An accepted batch. ``created`` is False when an idempotency key returned an
    earlier batch."""

    batch_id: str
    created: bool
    warnings: List[str]

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "Submission":
        return cls(batch_id=w["batch_id"], created=bool(w["created"]), warnings=list(w["warnings"]))


@dataclass(frozen=True)
class Conflict(_Result):
    """A host already held by another active batch."""

    hostname: str
    batch_id: str


@dataclass(frozen=True)
class Rejection(_Result):
    """Every reason a submission was refused, at once."""

    summary: str
    conflicts: List[Conflict]
    unknown_hosts: List[str]
    decommissioned_hosts: List[str]
    in_use_hosts: List[str]
    unauthorized: List[str]
    other: List[str]
    #: How many problems there are in all.
    total_problems: int = 0
    #: Whether the lists hold only the first problems (the server's refusal carried those
    #: and the client could not fetch the rest with a dry run).
    truncated: bool = False

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "Rejection":
        return cls(
            summary=w.get("summary", ""),
            conflicts=[Conflict(c["hostname"], c["batch_id"]) for c in w.get("conflicts", [])],
            unknown_hosts=list(w.get("unknown_hosts", [])),
            decommissioned_hosts=list(w.get("decommissioned_hosts", [])),
            in_use_hosts=list(w.get("in_use_hosts", [])),
            unauthorized=list(w.get("unauthorized", [])),
            other=list(w.get("other", [])),
            total_problems=int(w.get("total_problems", 0)),
            truncated=bool(w.get("truncated", False)),
        )


@dataclass(frozen=True, repr=False)
class DryRun(_Result):
    """What a submission would do now: whether it is acceptable, the expanded hosts, the
    steps each host goes through, and every problem."""

    acceptable: bool
    hosts: List[str]
    plan: List[str]
    problems: Optional[Rejection]
    warnings: List[str]

    def __repr__(self) -> str:
        verdict = "acceptable" if self.acceptable else f"refused: {self.problems.summary if self.problems else ''}"
        return f"<DryRun {len(self.hosts)} hosts, plan {' -> '.join(self.plan)}; {verdict}>"

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "DryRun":
        problems = w.get("problems")
        return cls(
            acceptable=bool(w["acceptable"]),
            hosts=list(w["expanded_hosts"]),
            plan=list(w["plan"]),
            problems=Rejection._from_wire(problems) if problems else None,
            warnings=list(w["warnings"]),
        )


@dataclass(frozen=True)
class Event(_Result):
    """Something that happened to a batch. ``data`` holds the event's own fields (the
    host, the error, the summary, ...)."""

    seq: int
    batch_id: str
    at: datetime
    kind: str
    data: Dict[str, Any]

    @property
    def host(self) -> Optional[str]:
        return self.data.get("host")

    def to_dict(self) -> Dict[str, Any]:
        row = {k: v for k, v in super().to_dict().items() if k != "data"}
        row.update({k: v for k, v in self.data.items() if k != "event" and not isinstance(v, (dict, list))})
        return row

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "Event":
        import json  # noqa: PLC0415

        return cls(
            seq=int(w["seq"]),
            batch_id=w["batch_id"],
            at=_time(w["at_ms"]),  # type: ignore[arg-type]
            kind=w["kind"],
            data=json.loads(w["json"]) if w.get("json") else {},
        )


@dataclass(frozen=True)
class Ticket(_Result):
    """A ticket raised for a human: a failure budget exceeded, a wedged host, a straggler."""

    id: str
    kind: str
    batch_id: str
    host: str
    step: str
    summary: str
    at: datetime

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "Ticket":
        return cls(
            id=w["id"],
            kind=w["kind"],
            batch_id=w["batch_id"],
            host=w["host"],
            step=w["step"],
            summary=w["summary"],
            at=_time(w["at_ms"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class SiteActivity(_Result):
    """One site right now: hosts in flight, jobs by state, live workers."""

    site: str
    hosts_in_flight: int
    jobs_queued: int
    jobs_running: int
    jobs_waiting: int
    live_workers: int

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "SiteActivity":
        return cls(**{f.name: w[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Durations(_Result):
    """Duration percentiles (seconds) of host runs or steps for one action, step, SKU and
    site."""

    action: str
    step: str
    sku: str
    site: str
    count: int
    p50_seconds: float
    p90_seconds: float
    p95_seconds: float
    p99_seconds: float
    max_seconds: float

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "Durations":
        p = w.get("durations") or {}
        return cls(
            action=w["action"],
            step=w["step"],
            sku=w["sku"],
            site=w["site"],
            count=int(p.get("count", 0)),
            p50_seconds=float(p.get("p50_seconds", 0.0)),
            p90_seconds=float(p.get("p90_seconds", 0.0)),
            p95_seconds=float(p.get("p95_seconds", 0.0)),
            p99_seconds=float(p.get("p99_seconds", 0.0)),
            max_seconds=float(p.get("max_seconds", 0.0)),
        )


@dataclass(frozen=True, repr=False)
class Stats(_Result):
    """Outcomes over a window: batches by state, host runs by outcome with the success
    rate, and duration percentiles of host runs and of steps."""

    batches_by_state: Dict[str, int]
    succeeded: int
    failed: int
    cancelled: int
    success_rate: Optional[float]
    host_runs: "Records[Durations]"
    steps: "Records[Durations]"
    #: With ``by``: host-run outcomes and durations per action and period, oldest first.
    periods: "Records[Period]" = dataclasses.field(default_factory=lambda: Records())

    def __repr__(self) -> str:
        rate = "-" if self.success_rate is None else f"{self.success_rate:.1%}"
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.batches_by_state.items())) or "no batches"
        return (
            f"<Stats {states}; hosts {self.succeeded} succeeded, {self.failed} failed, "
            f"{self.cancelled} cancelled; success rate {rate}>"
        )

    def to_dict(self) -> Dict[str, Any]:
        row = {k: v for k, v in super().to_dict().items() if k not in ("host_runs", "steps", "batches_by_state", "periods")}
        row.update({f"batches_{s}": n for s, n in self.batches_by_state.items()})
        return row

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "Stats":
        return cls(
            batches_by_state={k: int(v) for k, v in w.get("batches_by_state", {}).items()},
            succeeded=int(w["succeeded"]),
            failed=int(w["failed"]),
            cancelled=int(w["cancelled"]),
            success_rate=w.get("success_rate"),
            host_runs=Records(Durations._from_wire(d) for d in w.get("host_runs", [])),
            steps=Records(Durations._from_wire(d) for d in w.get("steps", [])),
            periods=Records(Period._from_wire(p) for p in w.get("periods", [])),
        )


@dataclass(frozen=True)
class Period(_Result):
    """One action's host runs in one period (a day, an ISO week or a calendar month, UTC),
    from the daily rollups retention keeps: outcomes, the success rate, and duration
    percentiles (bucket upper bounds, within a factor of two)."""

    start: datetime
    action: str
    succeeded: int
    failed: int
    cancelled: int
    success_rate: Optional[float]
    p50_seconds: Optional[float]
    p95_seconds: Optional[float]

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "Period":
        return cls(
            start=_time(w["start_ms"]),  # type: ignore[arg-type]
            action=w["action"],
            succeeded=int(w["succeeded"]),
            failed=int(w["failed"]),
            cancelled=int(w["cancelled"]),
            success_rate=w.get("success_rate"),
            p50_seconds=w.get("p50_seconds"),
            p95_seconds=w.get("p95_seconds"),
        )


@dataclass(frozen=True)
class Host(_Result):
    """An inventory record. ``rack`` and ``owner_group`` may be empty; ``state`` is
    ready, allocated, defunct or decommissioned."""

    hostname: str
    site: str
    pool: str
    sku: str
    bmc_address: str
    #: 0: the protocol's port (623 for IPMI, 443 for Redfish).
    bmc_port: int = 0
    credentials_ref: str = ""
    rack: str = ""
    owner_group: str = ""
    state: str = "ready"
    #: The MAC it network-boots from (empty: none; it cannot be reimaged or wiped).
    mac: str = ""
    #: Who holds it while allocated (a step refused on it later names them).
    allocated_to: str = ""
    #: When its state last changed (None: unknown). Read only: imports ignore it.
    state_since: Optional[datetime] = None
    #: The protocol its BMC speaks: ipmi or redfish (empty on import: ipmi).
    bmc_protocol: str = ""
    #: Redfish: the ComputerSystem id when the BMC manages several.
    redfish_system_id: str = ""
    #: Redfish: how the certificate is checked: "" (the CA), "ca:NAME", "sha256:..." or "insecure".
    bmc_tls: str = ""
    #: network or virtual_media (empty on import: network).
    boot_method: str = ""

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "Host":
        fields = {f.name: w[f.name] for f in dataclasses.fields(cls) if f.name != "state_since"}
        return cls(**fields, state_since=_time(w["state_since_ms"] or None))


@dataclass(frozen=True)
class AuditEntry(_Result):
    """One mutating call in the audit trail, accepted or refused: who (``principal``),
    what (``op``: submit, cancel, pause, resume, import_hosts, set_host_state,
    set_pool_kinds; ``summary`` in one line), on which ``batch_id`` and ``hosts`` (a
    hostlist), why (``reason``; ``forced`` when in-use hosts were included on purpose),
    and for a refusal, ``error``."""

    id: int
    at: datetime
    principal: str
    op: str
    accepted: bool
    batch_id: str
    action: str
    host_count: int
    hosts: str
    summary: str
    reason: str
    forced: bool
    comment: str
    error: str

    @classmethod
    def _from_wire(cls, w: Dict[str, Any]) -> "AuditEntry":
        fields = {f.name: w[f.name] for f in dataclasses.fields(cls) if f.name != "at"}
        return cls(**fields, at=_time(w["at_ms"]))  # type: ignore[arg-type]
