"""Progress display for ``wait(progress=True)``: a tqdm bar when tqdm is installed (it
draws widgets in notebooks and bars in terminals), else a live HTML line in Jupyter, else
one line on stderr (redrawn in a terminal, printed at most once a second otherwise)."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

from .results import Batch, Event


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any failure means "not a notebook"
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Progress:
    """Counts host outcomes from a batch's events and shows them."""

    def __init__(self, batch: Batch, enabled: bool = True) -> None:
        self.batch_id = batch.id
        self.total = batch.counts.total
        self.succeeded = batch.counts.succeeded
        self.failed = batch.counts.failed
        self.cancelled = batch.counts.cancelled
        self.enabled = enabled
        self._last_draw = 0.0
        self._bar: Any = None
        self._html: Any = None
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415 - optional dependency

            self._bar = tqdm(total=self.total, desc=self.batch_id[:10], unit="host")
        except ImportError:
            if _in_notebook():
                from IPython.display import HTML, display  # noqa: PLC0415

                self._html = display(HTML(self._text()), display_id=True)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    def _text(self) -> str:
        width = 30
        filled = width * self.done // self.total if self.total else width
        return (
            f"{self.batch_id[:10]} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} hosts: "
            f"{self.succeeded} succeeded, {self.failed} failed, {self.cancelled} cancelled"
        )

    def event(self, e: Event) -> None:
        """Counts one event (replayed events included: a restarted watch replays from the
        position it stopped at, never twice)."""
        if e.kind == "batch_accepted" and isinstance(e.data.get("hosts"), int):
            self.total = e.data["hosts"]
            self.succeeded = self.failed = self.cancelled = 0
        elif e.kind == "host_succeeded":
            self.succeeded += 1
        elif e.kind == "host_failed":
            self.failed += 1
            self._note(f"failed: {e.host}: {e.data.get('error', '')}")
        elif e.kind == "host_cancelled":
            self.cancelled += 1
        elif e.kind in ("batch_paused", "straggler_flagged"):
            self._note(f"{e.kind}: {e.data}")
        self._draw()

    def _note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        elif self._html is None:
            print(text, file=sys.stderr)

    def _draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.n = self.done
            self._bar.set_postfix_str(f"{self.succeeded} ok, {self.failed} failed, {self.cancelled} cancelled")
            return
        if self._html is not None:
            from IPython.display import HTML  # noqa: PLC0415

            self._html.update(HTML(f"<pre>{self._text()}</pre>"))
            return
        now = time.monotonic()
        if sys.stderr.isatty():
            sys.stderr.write("\r" + self._text() + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or now - self._last_draw >= 1.0:
            print(self._text(), file=sys.stderr)
            self._last_draw = now

    def finish(self, batch: Optional[Batch] = None) -> None:
        """Shows the final counts (from ``batch`` when given) and closes the bar."""
        if batch is not None:
            c = batch.counts
            self.total, self.succeeded, self.failed, self.cancelled = c.total, c.succeeded, c.failed, c.cancelled
        self._draw(final=True)
        self.close()

    def close(self) -> None:
        """Releases the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
