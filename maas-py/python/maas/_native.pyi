"""Type stubs for the Rust half of the package (maas-py/src/lib.rs). Use maas.Client and
maas.Engine instead of these."""

from typing import Any, Dict, Optional, Tuple

__version__: str

class Session:
    @staticmethod
    def connect(
        address: str, cert: Optional[str], key: Optional[str], ca: Optional[str], timeout: float
    ) -> "Session": ...
    @staticmethod
    def embedded(
        db: Optional[str],
        sites: int,
        hosts_per_site: int,
        workers_per_site: int,
        user: str,
        seed: int,
        faults: Optional[Dict[str, Any]],
        timeout: float,
    ) -> "Session": ...
    def submit(self, request: str, action: str, priority: str) -> str: ...
    def call(self, method: str, request: str) -> str: ...
    def watch(self, batch_id: str, after: int) -> "EventStream": ...
    def close(self) -> None: ...
    @property
    def description(self) -> str: ...
    @property
    def is_embedded(self) -> bool: ...

class EventStream:
    def next(self, timeout: float) -> Tuple[str, Optional[str]]: ...
    def close(self) -> None: ...
