"""The live view of a bench run (rich): phase, engine, throughput, depth, refusals, p99."""

from __future__ import annotations

import threading

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._config import BenchConfig, PhaseSpec
from ._engines import Engine
from ._runner import PhaseResult, Result, run_bench
from ._sampler import Sampler

__all__ = ["run_live"]


class _View:
    def __init__(self) -> None:
        self.sampler: Sampler | None = None
        self.engine = ""
        self.phase = ""
        self.seconds = 0.0
        self.done: list[PhaseResult] = []
        self.lock = threading.Lock()

    def listener(
        self,
        event: str,
        engine: Engine,
        spec: PhaseSpec,
        sampler: Sampler | None,
        result: PhaseResult | None,
    ) -> None:
        with self.lock:
            if event == "start":
                self.sampler = sampler
                self.engine, self.phase, self.seconds = engine.name, spec.name, spec.seconds
            elif event == "end" and result is not None:
                self.sampler = None
                self.done.append(result)

    def render(self) -> Group:
        with self.lock:
            sample = self.sampler.latest() if self.sampler else {}
            head = Text(f"phase {self.phase}  engine {self.engine}", style="bold")
            now = Table(box=None)
            for col in ("elapsed s", "M ev/s", "depth", "batch", "prio p99 ms"):
                now.add_column(col, justify="right")
            if sample:
                now.add_row(
                    f"{sample['t']:.1f}/{self.seconds:.1f}",
                    f"{sample['throughput'] / 1e6:.3f}",
                    f"{sample['depth']:.0f}",
                    f"{sample['batch_size']:.0f}",
                    f"{sample['priority_p99_ms']:.3f}",
                )
            finished = Table(title="finished", box=None)
            for col in ("phase", "engine", "M ev/s", "refusals", "prio p99 ms", "lost"):
                finished.add_column(col, justify="right")
            for r in self.done[-12:]:
                finished.add_row(
                    r.phase,
                    r.engine,
                    f"{r.throughput / 1e6:.3f}",
                    str(r.refusals),
                    "-" if r.priority_p99_ms is None else f"{r.priority_p99_ms:.3f}",
                    str(r.lost),
                )
            return Group(head, now, finished)


def run_live(cfg: BenchConfig, run: int = 0) -> Result:
    """Run the bench with a live display on stderr, refreshing twice a second."""
    view = _View()
    console = Console(stderr=True)
    with Live(view.render(), console=console, refresh_per_second=2, transient=True) as live:
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(0.5):
                live.update(view.render())

        t = threading.Thread(target=refresh, daemon=True)
        t.start()
        try:
            return run_bench(cfg, listener=view.listener, run=run)
        finally:
            stop.set()
            t.join()
