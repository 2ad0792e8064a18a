"""maas for Python: submit and follow batches of destructive actions (reimage, reboot,
power, wipe, decommission) on bare-metal hosts.

Two ways in, with the same methods:

- ``maas.Client("https://maas.example:7443", cert=..., key=..., ca=...)``: a ``maasd``
  server over mTLS.
- ``maas.Engine.memory()`` / ``maas.Engine.sqlite(path)``: maas in this process on a
  simulated fleet, to explore or rehearse a rollout without a server.

Results are typed objects (:mod:`maas.results`); collections have ``to_records()`` for
pandas. Failures raise :class:`maas.MaasError` subclasses (:mod:`maas.errors`) that carry
their details as attributes.
"""

from ._native import __version__
from .client import Client, Engine
from . import errors, results
from .errors import *  # noqa: F403 - the exception hierarchy, listed in errors.__all__
from .results import *  # noqa: F403 - the result types, listed in results.__all__

__all__ = ["__version__", "Client", "Engine", *errors.__all__, *results.__all__]
