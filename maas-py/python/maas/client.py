"""The API: :class:`Client` talks to a ``maasd`` server over mTLS; :class:`Engine` runs
maas in this process on a simulated fleet. Both have exactly the same methods (they share
this code, and the Rust half serves both through the same ``maas.v1`` service).

Every call releases the GIL while it waits, has a deadline (``timeout``, 30 s by
default), can be interrupted with Ctrl-C, and may be made from several threads at once.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterable, Iterator, List, Literal, Mapping, Optional, Sequence, Union, overload

from . import _native
from .errors import Unavailable, ValidationError, WaitTimeout
from .progress import Progress
from .results import (
    AuditEntry,
    Batch,
    DryRun,
    Event,
    Host,
    Records,
    SiteActivity,
    Stats,
    Submission,
    Ticket,
)


__all__ = ["Client", "Engine"]

PathLike = Union[str, "os.PathLike[str]"]
When = Union[datetime, timedelta]
Hostlists = Union[str, Iterable[str]]


def _hostlists(hosts: Hostlists) -> List[str]:
    if isinstance(hosts, str):
        return [hosts]
    out = list(hosts)
    bad = [h for h in out if not isinstance(h, str)]
    if bad:
        raise ValidationError(f"hosts must be hostlist strings (web[001-100].dc1), not {bad[:3]!r}")
    if not out:
        raise ValidationError("hosts is empty: name at least one host or hostlist")
    return out


def _ms(when: Optional[When], what: str) -> Optional[int]:
    """A datetime (naive ones are local time, as datetime.timestamp() reads them) or a
    timedelta ago, as milliseconds since the epoch."""
    if when is None:
        return None
    if isinstance(when, timedelta):
        when = datetime.now(timezone.utc) - when
    if not isinstance(when, datetime):
        raise ValidationError(f"{what} must be a datetime or a timedelta, not {type(when).__name__}")
    return int(when.timestamp() * 1000)


def _optional_text(value: Optional[str], what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    return value


class _Api:
    """The methods :class:`Client` and :class:`Engine` share."""

    _session: _native.Session

    def _call(self, method: str, request: Mapping[str, Any]) -> Dict[str, Any]:
        return json.loads(self._session.call(method, json.dumps(request)))

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection; an embedded engine hands its unfinished jobs back to the
        store first (a SQLite engine resumes them when opened again)."""
        self._session.close()

    def __enter__(self) -> "_Api":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<maas.{type(self).__name__} {self._session.description}>"

    # -- batches -----------------------------------------------------------------------

    @overload
    def submit(
        self,
        hosts: Hostlists,
        action: str,
        *,
        priority: str = ...,
        max_in_flight: Optional[int] = ...,
        failure_budget: Optional[int] = ...,
        not_before: Optional[datetime] = ...,
        sites: Optional[Sequence[str]] = ...,
        force_reason: Optional[str] = ...,
        comment: Optional[str] = ...,
        idempotency_key: Optional[str] = ...,
        params: Optional[Mapping[str, str]] = ...,
        console_check: Optional[bool] = ...,
        notify: Optional[Sequence[str]] = ...,
        dry_run: Literal[False] = ...,
    ) -> Submission: ...

    @overload
    def submit(
        self,
        hosts: Hostlists,
        action: str,
        *,
        priority: str = ...,
        max_in_flight: Optional[int] = ...,
        failure_budget: Optional[int] = ...,
        not_before: Optional[datetime] = ...,
        sites: Optional[Sequence[str]] = ...,
        force_reason: Optional[str] = ...,
        comment: Optional[str] = ...,
        idempotency_key: Optional[str] = ...,
        params: Optional[Mapping[str, str]] = ...,
        console_check: Optional[bool] = ...,
        notify: Optional[Sequence[str]] = ...,
        dry_run: Literal[True],
    ) -> DryRun: ...

    def submit(
        self,
        hosts: Hostlists,
        action: str,
        *,
        priority: str = "normal",
        max_in_flight: Optional[int] = None,
        failure_budget: Optional[int] = None,
        not_before: Optional[datetime] = None,
        sites: Optional[Sequence[str]] = None,
        force_reason: Optional[str] = None,
        comment: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        params: Optional[Mapping[str, str]] = None,
        console_check: Optional[bool] = None,
        notify: Optional[Sequence[str]] = None,
        dry_run: bool = False,
    ) -> Union[Submission, DryRun]:
        """Submits a batch: ``action`` on every host of ``hosts`` (hostlists such as
        ``"web[001-100].dc1"`` or plain names).

        action: ``"reimage:OS"`` (``"reimage:ubuntu-24.04"``), ``"reboot"``,
        ``"reboot-soft"``, ``"power-on"``, ``"power-off"``, ``"power-off-soft"``,
        ``"power-cycle"``, ``"wipe"`` or ``"decommission"``.

        priority: low, normal, high or urgent. The rollout: at most ``max_in_flight`` hosts
        at once (default 100), pause after ``failure_budget`` failures (default 5), not
        before ``not_before``, only in ``sites``. ``force_reason`` acts on in-use hosts
        too (with the force permission). Resubmitting with the same ``idempotency_key``
        returns the first batch. ``params`` fill the image's configuration template
        (``{{ params.KEY }}``: cloud-init user-data, kickstart variables).
        ``console_check=True`` probes every host's BMC console before accepting (``False``
        skips it; ``None``: the server's default). ``notify`` names whom to tell about this
        batch: ``https://`` URLs (its events as signed JSON) or ``"channel:NAME"`` for a
        channel the server configures (a chat room gets a readable line per notable event).

        With ``dry_run=True`` nothing changes: the answer is a :class:`DryRun` with the
        hosts, the plan and every problem. Otherwise a refused batch raises
        :class:`~maas.OverlapError` (hosts held by other batches) or
        :class:`~maas.ValidationError` with the whole report, and nothing is written.
        """
        if not isinstance(action, str):
            raise ValidationError(f"action must be a string such as 'reboot', not {type(action).__name__}")
        request: Dict[str, Any] = {
            "hosts": _hostlists(hosts),
            "max_in_flight": int(max_in_flight or 0),
            "failure_budget": None if failure_budget is None else int(failure_budget),
            "idempotency_key": _optional_text(idempotency_key, "idempotency_key"),
            "force_reason": _optional_text(force_reason, "force_reason"),
            "not_before_ms": _ms(not_before, "not_before"),
            "sites": list(sites or []),
            "comment": _optional_text(comment, "comment"),
            "dry_run": bool(dry_run),
            "params": {str(k): str(v) for k, v in (params or {}).items()},
            "console_check": None if console_check is None else bool(console_check),
            "notify": [_optional_text(n, "notify") for n in (notify or [])],
        }
        if request["max_in_flight"] < 0 or (failure_budget is not None and failure_budget < 0):
            raise ValidationError("max_in_flight and failure_budget must not be negative")
        answer = json.loads(self._session.submit(json.dumps(request), action, priority))
        return DryRun._from_wire(answer) if dry_run else Submission._from_wire(answer)

    def dry_run(self, hosts: Hostlists, action: str, **options: Any) -> DryRun:
        """``submit(..., dry_run=True)``: what would happen, changing nothing."""
        return self.submit(hosts, action, dry_run=True, **options)  # type: ignore[no-any-return]

    def batch(self, batch_id: str, hosts: Optional[Sequence[str]] = None) -> Batch:
        """A batch with its host runs (only ``hosts``, when given)."""
        return Batch._from_wire(self._call("GetBatch", {"batch_id": batch_id, "hostnames": list(hosts or [])}))

    def batches(
        self,
        *,
        submitter: Optional[str] = None,
        states: Optional[Sequence[str]] = None,
        action: Optional[str] = None,
        since: Optional[When] = None,
        until: Optional[When] = None,
        limit: Optional[int] = None,
        page_size: int = 200,
    ) -> "Records[Batch]":
        """Batches, newest first, filtered by submitter, states (running, paused,
        cancelling, completed, cancelled), action (reimage, reboot, power_on, power_off,
        power_cycle, wipe_disks, decommission) and creation time (``since``/``until``: a
        datetime, or a timedelta ago). Pages are fetched for you, up to ``limit``
        batches (all when None)."""
        if limit is not None and limit < 0:
            raise ValidationError("limit must not be negative")
        if not 1 <= page_size <= 1000:
            raise ValidationError("page_size must be 1 to 1000")
        out: Records[Batch] = Records()
        before = ""
        while limit is None or len(out) < limit:
            want = page_size if limit is None else min(page_size, limit - len(out))
            page = self._call(
                "ListBatches",
                {
                    "submitter": _optional_text(submitter, "submitter"),
                    "states": list(states or []),
                    "action": _optional_text(action, "action"),
                    "created_from_ms": _ms(since, "since"),
                    "created_until_ms": _ms(until, "until"),
                    "before_id": before,
                    "limit": want,
                },
            )
            out.extend(Batch._from_wire(b) for b in page["batches"])
            before = page["next_before_id"]
            if not before or not page["batches"]:
                break
        return out

    def cancel(self, batch_id: str, reason: str = "") -> Batch:
        """Cancels a batch: queued hosts are cancelled, hosts mid-step finish that step."""
        return Batch._from_wire(self._call("CancelBatch", {"batch_id": batch_id, "reason": reason}))

    def pause(self, batch_id: str) -> Batch:
        """Pauses a batch: no new hosts start; running ones finish."""
        return Batch._from_wire(self._call("PauseBatch", {"batch_id": batch_id}))

    def resume(self, batch_id: str) -> Batch:
        """Resumes a paused batch."""
        return Batch._from_wire(self._call("ResumeBatch", {"batch_id": batch_id}))

    def watch(self, batch_id: Optional[str] = None, *, after: int = 0, idle: float = 0.25) -> Iterator[Event]:
        """The events of a batch (every batch when None) as they happen, from position
        ``after``; the iterator ends when the batch finishes. Break out of the loop (or
        Ctrl-C) to stop."""
        stream = self._session.watch(batch_id or "", after)
        try:
            while True:
                kind, payload = stream.next(idle)
                if kind == "event":
                    yield Event._from_wire(json.loads(payload))  # type: ignore[arg-type]
                elif kind == "end":
                    return
        finally:
            stream.close()

    def wait(self, batch_id: str, *, timeout: Optional[float] = None, progress: bool = True) -> Batch:
        """Waits until the batch finishes and returns it, showing a progress bar (tqdm
        when installed, a live line in notebooks and terminals otherwise).

        Raises :class:`~maas.WaitTimeout` (with the batch as last seen) after ``timeout``
        seconds. Ctrl-C interrupts it (KeyboardInterrupt); the batch goes on. A dropped
        connection is retried, resuming the event stream where it stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        batch = self.batch(batch_id)
        if batch.finished:
            return batch
        bar = Progress(batch, enabled=progress)
        seen, failures = 0, 0
        try:
            while True:
                try:
                    stream = self._session.watch(batch_id, seen)
                    try:
                        while True:
                            remaining = None if deadline is None else deadline - time.monotonic()
                            if remaining is not None and remaining <= 0:
                                raise WaitTimeout(
                                    f"batch {batch_id} did not finish within {timeout} s",
                                    batch=self.batch(batch_id),
                                )
                            step = 0.5 if remaining is None else max(0.01, min(0.5, remaining))
                            kind, payload = stream.next(step)
                            if kind == "event":
                                event = Event._from_wire(json.loads(payload))  # type: ignore[arg-type]
                                seen = event.seq
                                bar.event(event)
                                failures = 0
                            elif kind == "end":
                                final = self.batch(batch_id)
                                bar.finish(final)
                                return final
                    finally:
                        stream.close()
                except Unavailable:
                    failures += 1
                    if failures > 5:
                        raise
                    time.sleep(min(2.0**failures / 4, 4.0))
        finally:
            bar.close()

    def stats(
        self, *, since: Optional[When] = timedelta(hours=24), until: Optional[When] = None, by: Optional[str] = None
    ) -> Stats:
        """Outcomes, the success rate and duration percentiles by action, SKU, site and
        step over a window (default: the last 24 hours). With ``by`` (``"day"``,
        ``"week"`` or ``"month"``), also per action and period in ``Stats.periods``, from
        the daily rollups retention keeps: ``stats(since=timedelta(days=365), by="month")``
        is the success rate of each action this year, by month."""
        request = {"from_ms": _ms(since, "since"), "until_ms": _ms(until, "until"), "by": _optional_text(by, "by")}
        return Stats._from_wire(self._call("BatchStats", request))

    def active(self) -> "Records[SiteActivity]":
        """Per site: hosts in flight, jobs queued, running and waiting, live workers."""
        return Records(SiteActivity._from_wire(s) for s in self._call("ActiveCounts", {})["sites"])

    def tickets(self, limit: int = 100) -> "Records[Ticket]":
        """Tickets raised (failure budgets, wedged hosts, stragglers), newest first."""
        if limit < 1:
            raise ValidationError("limit must be at least 1")
        return Records(Ticket._from_wire(t) for t in self._call("ListTickets", {"limit": limit})["tickets"])

    # -- inventory ---------------------------------------------------------------------

    def hosts(
        self, *, site: Optional[str] = None, pool: Optional[str] = None, state: Optional[str] = None
    ) -> "Records[Host]":
        """The inventory (every page), by site, pool and state."""
        out: Records[Host] = Records()
        after = ""
        while True:
            page = self._call(
                "ListHosts",
                {
                    "site": _optional_text(site, "site"),
                    "pool": _optional_text(pool, "pool"),
                    "state": _optional_text(state, "state"),
                    "after": after,
                    "limit": 1000,
                },
            )["hosts"]
            out.extend(Host._from_wire(h) for h in page)
            if len(page) < 1000:
                return out
            after = page[-1]["hostname"]

    def import_hosts(self, hosts: Iterable[Union[Host, Mapping[str, Any]]]) -> int:
        """Adds or replaces hosts: :class:`Host` objects or dicts with the same keys (a
        DataFrame's ``to_dict("records")`` works). All are checked first; one bad record
        refuses the whole import, naming it."""
        records = []
        fields = set(Host.__dataclass_fields__)
        for i, h in enumerate(hosts):
            record = h.to_dict() if isinstance(h, Host) else dict(h)
            unknown = set(record) - fields
            if unknown:
                raise ValidationError(f"host {i}: unknown fields {sorted(unknown)} (known: {sorted(fields)})")
            if "bmc_port" in record:
                record["bmc_port"] = int(record["bmc_port"])
            record.pop("state_since", None)  # the server keeps it
            records.append(record)
        return int(self._call("ImportHosts", {"hosts": records})["written"])

    def set_host_state(self, hostname: str, state: str, *, allocated_to: Optional[str] = None) -> None:
        """Sets a host's state: ready, allocated, defunct or decommissioned.
        ``allocated_to`` names who holds an allocated host (a service, a team, a
        ticket): a batch step later refused on the host names them."""
        self._call(
            "SetHostState",
            {"hostname": hostname, "state": state, "allocated_to": _optional_text(allocated_to, "allocated_to")},
        )

    # -- audit -------------------------------------------------------------------------

    def audit(
        self,
        *,
        principal: Optional[str] = None,
        op: Optional[str] = None,
        host: Optional[str] = None,
        batch_id: Optional[str] = None,
        since: Optional[When] = None,
        until: Optional[When] = None,
        limit: int = 100,
    ) -> "Records[AuditEntry]":
        """The audit trail, newest first: every mutating call, accepted or refused,
        filtered by ``principal``, ``op`` (submit, cancel, pause, resume, import_hosts,
        set_host_state, set_pool_kinds), ``host`` (calls that named it), ``batch_id`` and
        time (``since``/``until``: a datetime, or a timedelta ago); up to ``limit``
        entries, pages fetched for you. Readable by the groups the policy grants
        ``audit`` (and admins); others get :class:`~maas.PermissionDenied`."""
        if limit < 1:
            raise ValidationError("limit must be at least 1")
        out: Records[AuditEntry] = Records()
        before = 0
        while len(out) < limit:
            want = min(1000, limit - len(out))
            page = self._call(
                "ListAudit",
                {
                    "principal": _optional_text(principal, "principal"),
                    "op": _optional_text(op, "op"),
                    "host": _optional_text(host, "host"),
                    "batch_id": _optional_text(batch_id, "batch_id"),
                    "from_ms": _ms(since, "since") or 0,
                    "until_ms": _ms(until, "until") or 0,
                    "before_id": before,
                    "limit": want,
                },
            )["entries"]
            out.extend(AuditEntry._from_wire(e) for e in page)
            if len(page) < want:
                break
            before = page[-1]["id"]
        return out


class Client(_Api):
    """A client of a ``maasd`` server.

    ``Client("https://maas.example:7443", cert="alice.pem", key="alice-key.pem",
    ca="ca.pem")`` connects over mTLS: the certificate names the caller, the CA checks the
    server. Several instances of one deployment may be given, comma-separated
    (``"https://maas-a:7443,https://maas-b:7443"``): the client uses the first that
    answers, sends reads to another at once when its instance is gone, and raises
    :class:`~maas.Unavailable` for a write made just then (the next call goes to the
    survivor). Without cert, key and ca it connects in plaintext (a maasd started with
    ``--plaintext`` on loopback). ``timeout`` bounds every call, in seconds.
    """

    def __init__(
        self,
        address: str,
        *,
        cert: Optional[PathLike] = None,
        key: Optional[PathLike] = None,
        ca: Optional[PathLike] = None,
        timeout: float = 30.0,
    ) -> None:
        def path(p: Optional[PathLike]) -> Optional[str]:
            return None if p is None else os.fspath(p)

        self._session = _native.Session.connect(address, path(cert), path(key), path(ca), float(timeout))


class Engine(_Api):
    """maas in this process: the engine, workers and leader tasks on a store, with a
    simulated fleet (``sim000001.dc1``, ... in pool ``web``; BMCs answer at once,
    installs take 2 to 5 s). For exploring and rehearsing rollouts without a server.

    Use :meth:`memory` or :meth:`sqlite`, and :meth:`close` (or ``with``) when done.
    """

    def __init__(self, session: _native.Session) -> None:
        self._session = session

    @classmethod
    def memory(
        cls,
        *,
        sites: int = 1,
        hosts_per_site: int = 100,
        workers_per_site: int = 4,
        user: str = "notebook",
        seed: int = 1,
        faults: Optional[Mapping[str, Any]] = None,
        timeout: float = 30.0,
    ) -> "Engine":
        """An engine whose store lives in memory (gone when closed).

        ``faults`` may set ``busy``, ``timeout``, ``wrong_state`` (BMC fault
        probabilities per command), ``install_failure`` (probability) and
        ``install_seconds`` (min, max)."""
        return cls._start(None, sites, hosts_per_site, workers_per_site, user, seed, faults, timeout)

    @classmethod
    def sqlite(
        cls,
        path: PathLike,
        *,
        sites: int = 1,
        hosts_per_site: int = 100,
        workers_per_site: int = 4,
        user: str = "notebook",
        seed: int = 1,
        faults: Optional[Mapping[str, Any]] = None,
        timeout: float = 30.0,
    ) -> "Engine":
        """An engine on the SQLite file at ``path`` (created if missing): batches and
        their history survive, and an engine opened on it again resumes unfinished work."""
        return cls._start(os.fspath(path), sites, hosts_per_site, workers_per_site, user, seed, faults, timeout)

    @classmethod
    def _start(
        cls,
        db: Optional[str],
        sites: int,
        hosts_per_site: int,
        workers_per_site: int,
        user: str,
        seed: int,
        faults: Optional[Mapping[str, Any]],
        timeout: float,
    ) -> "Engine":
        session = _native.Session.embedded(
            db, sites, hosts_per_site, workers_per_site, user, seed, dict(faults) if faults else None, float(timeout)
        )
        return cls(session)
