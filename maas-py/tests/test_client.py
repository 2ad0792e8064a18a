"""maas.Client against a real maasd over mTLS (started by the `maasd` fixture with
certificates from `maasctl dev-certs`): submit, watch, wait, cancel, overlap and
permission errors with their attributes, pandas, and four threads at once.

The server's simulated fleet is sim000001.dc1 ... sim000060.dc1 in pool web; maasd in
simulated mode leaves installs to the installer's callback, so a reimage holds its
hosts until it is cancelled."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

import maas
from conftest import Maasd


def test_submit_watch_and_wait(maasd: Maasd) -> None:
    with maasd.client("alice") as alice:
        sub = alice.submit("sim[000001-000004].dc1", "reboot", comment="kernel update")
        kinds = [e.kind for e in alice.watch(sub.batch_id)]
        assert kinds[0] == "batch_accepted" and kinds[-1] == "batch_completed"
        assert kinds.count("host_succeeded") == 4, kinds
        batch = alice.wait(sub.batch_id, timeout=30)
        assert batch.state == "completed" and batch.submitter == "alice" and batch.counts.succeeded == 4
        assert sorted(h.hostname for h in batch.hosts) == [f"sim00000{i}.dc1" for i in range(1, 5)]


def test_wait_shows_progress_and_returns_the_finished_batch(maasd: Maasd, capsys: pytest.CaptureFixture) -> None:
    with maasd.client("alice") as alice:
        sub = alice.submit("sim[000005-000010].dc1", "power-cycle", max_in_flight=2)
        batch = alice.wait(sub.batch_id, timeout=60, progress=True)
        assert batch.finished and batch.counts.succeeded == 6
        err = capsys.readouterr().err
        assert "6/6 hosts: 6 succeeded, 0 failed, 0 cancelled" in err, err


def test_cancel_and_overlap_error_attributes(maasd: Maasd) -> None:
    with maasd.client("alice") as alice:
        # Held, not running (it starts in an hour): the overlap cannot race its completion.
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        holder = alice.submit("sim[000020-000024].dc1", "reimage:ubuntu-24.04", not_before=later)
        before = len(alice.batches())
        with pytest.raises(maas.OverlapError) as overlap:
            alice.submit(["sim000023.dc1", "sim000024.dc1", "sim000025.dc1"], "reboot")
        e = overlap.value
        assert e.hosts == ["sim000023.dc1", "sim000024.dc1"] and e.batches == [holder.batch_id]
        assert e.code == "FailedPrecondition" and e.report is not None and "sim[000023-000024].dc1 are held" in e.report.summary
        assert len(alice.batches()) == before, "a refused batch writes nothing"

        alice.cancel(holder.batch_id, reason="wrong image")
        cancelled = alice.wait(holder.batch_id, timeout=60, progress=False)
        assert cancelled.state == "cancelled" and cancelled.counts.cancelled + cancelled.counts.failed == 5
        # Released: the same hosts are accepted now.
        assert alice.dry_run(["sim000023.dc1", "sim000024.dc1"], "reboot").acceptable


def test_permission_errors(maasd: Maasd) -> None:
    with maasd.client("bob") as bob:  # bob may act on pool db only
        with pytest.raises(maas.PermissionDenied) as denied:
            bob.submit("sim000030.dc1", "reboot")
        assert isinstance(denied.value, PermissionError)
        assert denied.value.unauthorized == ["sim000030.dc1: bob lacks permission: reboot on pool web in site dc1"]
        with pytest.raises(maas.PermissionDenied):
            bob.import_hosts([maas.Host("db001.dc1", "dc1", "db", "gen11", "10.9.0.1")])
    with maasd.client("alice") as alice:  # alice may reboot pool web, at low or normal priority
        with pytest.raises(maas.PermissionDenied) as denied:
            alice.submit("sim000030.dc1", "reboot", priority="urgent")
        assert denied.value.unauthorized == [
            "alice lacks permission: priority urgent; the policy grants alice priorities up to normal"
        ]
    with maasd.client("olga") as olga:  # an admin may
        assert olga.import_hosts([maas.Host("db001.dc1", "dc1", "db", "gen11", "10.9.0.1")]) == 1
        assert [h.hostname for h in olga.hosts(pool="db")] == ["db001.dc1"]
        # A Redfish BMC: its port defaults to 443; a bad combination refuses the import,
        # naming the host.
        redfish = maas.Host("db002.dc1", "dc1", "db", "gen11", "10.9.0.2", bmc_protocol="redfish",
                            redfish_system_id="System.Embedded.1", bmc_tls="insecure", boot_method="virtual_media")
        assert olga.import_hosts([redfish]) == 1
        [got] = [h for h in olga.hosts(pool="db") if h.hostname == "db002.dc1"]
        assert (got.bmc_protocol, got.bmc_port, got.redfish_system_id, got.bmc_tls, got.boot_method) == (
            "redfish", 443, "System.Embedded.1", "insecure", "virtual_media")
        with pytest.raises(maas.ValidationError, match="db003.dc1: boot method virtual_media needs a Redfish BMC"):
            olga.import_hosts([maas.Host("db003.dc1", "dc1", "db", "gen11", "10.9.0.3", boot_method="virtual_media")])
        assert "db003.dc1" not in [h.hostname for h in olga.hosts(pool="db")]


def test_the_audit_trail_records_refusals_and_only_auditors_read_it(maasd: Maasd) -> None:
    with maasd.client("bob") as bob:
        with pytest.raises(maas.PermissionDenied):
            bob.submit("sim000059.dc1", "reboot", comment="CHG-61")
        with pytest.raises(maas.PermissionDenied, match="read the audit trail"):
            bob.audit()
    with maasd.client("olga") as olga:
        olga.set_host_state("sim000059.dc1", "allocated", allocated_to="payments")
        [host] = [h for h in olga.hosts(pool="web") if h.hostname == "sim000059.dc1"]
        assert (host.state, host.allocated_to) == ("allocated", "payments") and host.state_since is not None
        olga.set_host_state("sim000059.dc1", "ready")
    with maasd.client("audrey") as audrey:
        [refused] = audrey.audit(principal="bob", op="submit", host="sim000059.dc1")
        assert not refused.accepted and refused.comment == "CHG-61" and refused.action == "reboot"
        assert "bob lacks permission: reboot on pool web" in refused.error
        changes = audrey.audit(host="sim000059.dc1", op="set_host_state", since=timedelta(minutes=10), limit=2)
        assert [e.summary for e in changes] == ["state ready", "state allocated to payments"]
        assert all(e.principal == "olga" and e.accepted and e.hosts == "sim000059.dc1" for e in changes)
        three = audrey.audit(limit=3)
        assert len(three) == 3 and three[0].id > three[1].id > three[2].id
        with pytest.raises(maas.ValidationError, match="unknown operation"):
            audrey.audit(op="delete")


def test_statistics_by_month(maasd: Maasd) -> None:
    with maasd.client("olga") as olga:
        sub = olga.submit("sim000053.dc1", "power-cycle")
        olga.wait(sub.batch_id, timeout=60, progress=False)
        stats = olga.stats(since=timedelta(days=365), by="month")
        [cycles] = [p for p in stats.periods if p.action == "power_cycle"]
        assert cycles.succeeded >= 1 and cycles.start.day == 1 and cycles.start.tzinfo is not None
        assert 0.0 <= (cycles.success_rate or 0.0) <= 1.0
        with pytest.raises(maas.ValidationError, match="not a period"):
            olga.stats(by="fortnight")


def test_subscriptions_are_checked_at_submit(maasd: Maasd) -> None:
    with maasd.client("olga") as olga:
        with pytest.raises(maas.ValidationError, match=r"notify\[0\]: no channel \"sre\": this deployment configures no channels"):
            olga.submit("sim000058.dc1", "reboot", notify=["channel:sre"], dry_run=False)
        with pytest.raises(maas.ValidationError, match="plain http leaves the machine"):
            olga.submit("sim000058.dc1", "reboot", notify=["http://hooks.example/x"])


def test_a_client_given_several_addresses_uses_one_that_answers(maasd: Maasd) -> None:
    c = maasd.certs
    # Port 9 answers nothing: the client goes on to the next address of the deployment.
    both = f"https://localhost:9,{maasd.address}"
    with maas.Client(both, cert=c / "olga.pem", key=c / "olga-key.pem", ca=c / "ca.pem", timeout=5) as olga:
        assert olga.hosts(pool="web")
    with pytest.raises(maas.Unavailable, match="localhost:9"):
        maas.Client("https://localhost:9,https://localhost:7", cert=c / "olga.pem", key=c / "olga-key.pem",
                    ca=c / "ca.pem", timeout=3)


def test_unreachable_and_untrusted_servers_raise_unavailable(maasd: Maasd, tmp_path) -> None:
    started = time.monotonic()
    with pytest.raises(maas.Unavailable, match="cannot connect"):
        maas.Client("https://localhost:9", cert=maasd.certs / "alice.pem", key=maasd.certs / "alice-key.pem",
                    ca=maasd.certs / "ca.pem", timeout=3)
    assert time.monotonic() - started < 10
    with pytest.raises(maas.ValidationError, match="together"):
        maas.Client(maasd.address, cert=maasd.certs / "alice.pem")
    with pytest.raises(maas.ValidationError, match="cannot read"):
        maas.Client(maasd.address, cert=tmp_path / "none.pem", key=tmp_path / "none-key.pem", ca=maasd.certs / "ca.pem")


def test_results_load_into_pandas(maasd: Maasd) -> None:
    with maasd.client("olga") as olga:
        sub = olga.submit("sim[000040-000042].dc1", "power-off")
        olga.wait(sub.batch_id, timeout=60, progress=False)
        frame = pd.DataFrame(olga.batches(limit=500).to_records())
        assert sub.batch_id in set(frame["id"]) and str(frame["created_at"].dt.tz) == "UTC"
        assert frame.set_index("id").loc[sub.batch_id, "succeeded"] == 3
        hosts = pd.DataFrame(olga.hosts().to_records())
        assert {"hostname", "site", "pool", "sku", "state"} <= set(hosts.columns) and len(hosts) >= 60
        stats = olga.stats()
        runs = pd.DataFrame(stats.host_runs.to_records())
        assert stats.succeeded >= 3 and {"action", "sku", "p95_seconds"} <= set(runs.columns)
        assert pd.DataFrame(olga.active().to_records())["site"].tolist() == ["dc1"]


def test_batches_pages_for_the_caller(maasd: Maasd) -> None:
    with maasd.client("olga") as olga:
        ids = [olga.submit(f"sim0000{50 + i}.dc1", "power-on").batch_id for i in range(5)]
        mine = olga.batches(submitter="olga", action="power_on", page_size=2)
        assert [b.id for b in mine][:5] == ids[::-1]
        assert len(olga.batches(submitter="olga", action="power_on", limit=3, page_size=2)) == 3


def test_four_threads_submit_at_once_through_one_client(maasd: Maasd) -> None:
    alice = maasd.client("alice")
    barrier = threading.Barrier(4)
    later = datetime.now(timezone.utc) + timedelta(hours=1)  # the winner holds, never finishes
    won: list = []
    lost: list = []
    errors: list = []

    def submitter() -> None:
        try:
            barrier.wait()
            try:
                won.append(alice.submit("sim[000055-000058].dc1", "reimage:ubuntu-24.04", not_before=later).batch_id)
            except maas.OverlapError as e:
                lost.append(e)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(won) == 1 and len(lost) == 3, (won, lost)
    assert all(e.batches == won and len(e.hosts) == 4 for e in lost)
    alice.cancel(won[0])
    assert alice.wait(won[0], timeout=60, progress=False).state == "cancelled"
    alice.close()
