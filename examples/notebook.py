# %% [markdown]
# # Rehearsing a reimage rollout with maas
#
# A notebook-style script (`# %%` cells: open it in Jupyter with jupytext, or VS Code,
# or run it as is: `python examples/notebook.py`). It needs `pip install ./maas-py` and,
# for the tables, pandas.
#
# It rehearses a rollout on the embedded engine: maas running in this process on a
# simulated fleet of 2 sites x 150 hosts, with a few flaky BMCs and failing installs.
# Set MAAS_SERVER (https://host:port), MAAS_CERTS (a directory with ca.pem, USER.pem and
# USER-key.pem) and MAAS_USER to run the same cells against a real maasd instead.

# %%
import os
from datetime import timedelta

import maas

try:
    import pandas as pd
except ImportError:  # the script runs without pandas; the tables are plainer
    pd = None


def table(records, columns=None):
    """Shows records as a DataFrame when pandas is there, else one line per record."""
    if pd is not None:
        frame = pd.DataFrame(records)
        print(frame[columns].to_string(index=False) if columns and len(frame) else frame.to_string(index=False))
    else:
        for r in records:
            print({k: r[k] for k in (columns or r)})


if os.environ.get("MAAS_SERVER"):
    certs, user = os.environ.get("MAAS_CERTS", "certs"), os.environ.get("MAAS_USER", "admin")
    api = maas.Client(
        os.environ["MAAS_SERVER"],
        cert=f"{certs}/{user}.pem",
        key=f"{certs}/{user}-key.pem",
        ca=f"{certs}/ca.pem",
    )
else:
    api = maas.Engine.memory(
        sites=2,
        hosts_per_site=150,
        workers_per_site=4,
        faults={"busy": 0.02, "install_failure": 0.03, "install_seconds": (0.3, 1.5)},
        seed=7,
    )
print(api)

# %% [markdown]
# ## 1. Dry run: what would the wave touch, and is anything in the way?

# %%
wave = ["sim[000001-000120].dc1", "sim[000001-000120].dc2"]
plan = api.dry_run(wave, "reimage:ubuntu-24.04")
print(plan)
print(f"{len(plan.hosts)} hosts, steps: {' -> '.join(plan.plan)}")

# %% [markdown]
# ## 2. A canary first, at high priority

# %%
canary = api.submit("sim[000121-000125].dc1", "reimage:ubuntu-24.04", priority="high", comment="canary")
result = api.wait(canary.batch_id, timeout=120)
print(result)
assert result.state == "completed", result

# %% [markdown]
# ## 3. The wave: 40 hosts at a time, pause after 24 failures (10% of the wave)

# %%
submitted = api.submit(wave, "reimage:ubuntu-24.04", max_in_flight=40, failure_budget=24, idempotency_key="wave-1")

# Someone else tries to reboot hosts the wave holds: refused, with the details.
try:
    api.submit("sim[000001-000003].dc2", "reboot")
except maas.OverlapError as e:
    print(f"refused: {len(e.hosts)} hosts held by batch {e.batches[0]}")

# Submitting the wave again with the same idempotency key returns the same batch.
assert api.submit(wave, "reimage:ubuntu-24.04", max_in_flight=40, failure_budget=24,
                  idempotency_key="wave-1").batch_id == submitted.batch_id

done = api.wait(submitted.batch_id, timeout=600)
print(done)

# %% [markdown]
# ## 4. What failed, and how long did things take?

# %%
failed = [h for h in done.hosts if h.state == "failed"]
print(f"{len(failed)} hosts failed")
table([h.to_dict() for h in failed], ["hostname", "site", "step", "attempts", "last_error"])

stats = api.stats(since=timedelta(hours=1))
print(stats)
table(stats.host_runs.to_records(), ["action", "sku", "site", "count", "p50_seconds", "p95_seconds", "max_seconds"])
table(api.batches(since=timedelta(hours=1)).to_records(), ["id", "action", "state", "succeeded", "failed", "created_at"])
table(api.tickets().to_records(), ["kind", "batch_id", "summary"])

# %%
api.close()
