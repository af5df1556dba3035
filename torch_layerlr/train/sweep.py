"""Equal tuning for every strategy: a learning-rate sweep on the validation split, then seeds at the chosen rate.

Protocol (the same for every strategy, fixed before any run): seed 0 trains once at each factor of ``factors``
times the strategy's default rates (:attr:`~torch_layerlr.train.zoo.Setup.lr_scale`; by default
:data:`SWEEP_FACTORS`, five factors log-spaced around the paper's rate); the factor with the best final
validation accuracy wins (a diverged run scores -inf; a tie goes to the factor nearer the default); then seeds
1 .. K-1 train at that factor, and seed 0's sweep run is the first of the K. The test set is never looked at to
choose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SWEEP_FACTORS", "Tuning", "score", "choose", "find_run", "tune", "parse_factors", "sweep_table"]

#: The default grid: 3^-2 .. 3^2 times the strategy's default rates.
SWEEP_FACTORS = tuple(3.0 ** k for k in (-2, -1, 0, 1, 2))

Run = dict[str, Any]


def score(run: Run) -> float:
    """A run's final validation accuracy; -inf if it diverged or recorded no epoch."""
    if run["diverged"] or not run["epochs"]:
        return -math.inf
    value = run["epochs"][-1]["val_acc"]
    return value if math.isfinite(value) else -math.inf


def choose(sweep: Sequence[Run]) -> float:
    """The ``lr_scale`` of the best-scoring run of ``sweep`` (ties: the one nearest 1 in log scale)."""
    if not sweep:
        raise ValueError("choose: the sweep is empty")
    best = max(sweep, key=lambda r: (score(r), -abs(math.log(r["lr_scale"]))))
    return best["lr_scale"]


@dataclass(frozen=True)
class Tuning:
    """The outcome of :func:`tune`: the chosen factor, the sweep (seed 0 at every factor) and the ``seeds`` runs at
    the chosen factor."""

    chosen: float
    sweep: list[Run]
    runs: list[Run]


def find_run(previous: Sequence[Run], scale: float, seed: int) -> Run | None:
    """The run of ``previous`` with this seed and ``lr_scale`` (records without one count as 1), or None."""
    for r in previous:
        if r["seed"] == seed and math.isclose(r.get("lr_scale", 1.0), scale, rel_tol=1e-9):
            return r
    return None


def tune(train: Callable[[float, int], Run], factors: Sequence[float], seeds: int, previous: Iterable[Run] = (),
         on_run: Callable[[Run], None] = lambda run: None) -> Tuning:
    """Run the protocol of the module doc. ``train(lr_scale, seed)`` trains once and returns its record (with
    ``seed``, ``lr_scale``, ``diverged``, ``epochs``). Runs found in ``previous`` (same ``lr_scale`` and seed) are
    reused, not repeated; ``on_run`` sees every new run (e.g. to save it)."""
    factors = parse_factors(factors)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    previous = list(previous)

    def get(scale: float, seed: int) -> Run:
        run = find_run(previous, scale, seed)
        if run is None:
            run = train(scale, seed)
            previous.append(run)
            on_run(run)
        return run

    sweep = [get(f, 0) for f in factors]
    chosen = choose(sweep)
    return Tuning(chosen, sweep, [get(chosen, seed) for seed in range(seeds)])


def parse_factors(factors: Sequence[float] | str) -> tuple[float, ...]:
    """A non-empty sequence of distinct positive finite factors, or a comma-separated string of them."""
    if isinstance(factors, str):
        try:
            factors = [float(f) for f in factors.split(",") if f.strip()]
        except ValueError as exc:
            raise ValueError(f"lr sweep factors must be numbers, got {factors!r}") from exc
    out = tuple(float(f) for f in factors)
    if not out or not all(math.isfinite(f) and f > 0 for f in out):
        raise ValueError(f"lr sweep factors must be positive finite numbers, got {factors!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"an lr sweep factor is listed twice in {factors!r}")
    return out


def sweep_table(tunings: dict[str, Tuning]) -> str:
    """Markdown: one line per strategy, its seed-0 final validation accuracy at every factor (the chosen one in
    bold; "div." where the run diverged)."""
    factors = sorted({r["lr_scale"] for t in tunings.values() for r in t.sweep})
    head = ["strategy"] + [f"x{f:.3g}" for f in factors] + ["chosen"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, t in tunings.items():
        cells = []
        for f in factors:
            run = find_run(t.sweep, f, 0)
            text = "" if run is None else ("div." if score(run) == -math.inf else f"{score(run):.2f}")
            cells.append(f"**{text}**" if run is not None and math.isclose(f, t.chosen) else text)
        lines.append("| " + " | ".join([name] + cells + [f"x{t.chosen:.3g}"]) + " |")
    return "\n".join(lines) + "\n"
