"""What a bench run measures: phases, engines, and the seed's engine settings."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ENGINES", "PHASES", "QUICK_SCALE", "BenchConfig", "PhaseSpec"]

QUICK_SCALE = 0.12  # --quick: every phase at this fraction of its length
ENGINES = ("sluiceway", "queue", "asyncio", "ceiling")


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """One phase of the seed workload."""

    name: str
    seconds: float
    handler: str  # "cpu" or "io"
    pace: float | None  # multiple of a reference rate, or None: as fast as possible
    pace_of: str | None = None  # the phase whose figure sets the reference rate


PHASES = (
    PhaseSpec("saturate-cpu", 5.0, "cpu", None),
    PhaseSpec("saturate-io", 5.0, "io", None),
    PhaseSpec("steady", 5.0, "io", 0.5, "saturate-io"),
    PhaseSpec("spike", 1.0, "io", 5.0, "saturate-io"),
)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Settings of one ``sluiceway bench`` run (the seed's defaults)."""

    engines: tuple[str, ...] = ENGINES
    phases: tuple[str, ...] = tuple(p.name for p in PHASES)
    duration_scale: float = 1.0
    shards: int = 8
    batch_size: int = 64
    max_delay: float = 0.005
    capacity: int = 65_536
    priority_ratio: float = 0.1
    handler: str | None = None  # force every phase onto "cpu" or "io"
    switch_interval: float | str | None = "auto"  # Pipeline's own default
    gc_threshold: int = 0  # 0: the interpreter's own
    submit_many: int = 0  # > 0: sluiceway also runs saturate-cpu with submit_many(chunks)
    extra: dict[str, object] = field(default_factory=dict)

    def phase_specs(self) -> list[PhaseSpec]:
        """The selected phases, scaled, in workload order."""
        out = []
        for p in PHASES:
            if p.name in self.phases:
                handler = self.handler or p.handler
                out.append(
                    PhaseSpec(p.name, p.seconds * self.duration_scale, handler, p.pace, p.pace_of)
                )
        return out
