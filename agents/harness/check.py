"""Does a benchmark table discriminate? Three conditions on a ``results.csv`` (issue 16, item 3).

A table teaches an algorithm designer something only if the algorithms in it come apart. From the final
mean return of each (env, algorithm), averaged over seeds, and its mean return at step 0:

1. ``spread``: on every env the best and the worst algorithm differ by at least ``min_spread`` (0.2);
2. ``not_saturated``: no env has every algorithm at ≤ ``floor`` (0.02) or every algorithm at ≥
   ``ceiling`` (0.95) — an env everyone fails or everyone solves tells nothing apart;
3. ``baseline_learns``: some SB3 / sb3-contrib baseline learns measurably on some env: its final mean return
   is at least its step-0 mean return + ``min_gain`` (0.05).

Run it on a results file::

    python -m agents.harness.check docs/benchmark/results.csv

It prints one line per condition (PASS/FAIL and the numbers behind it) and exits 1 when any fails.

Example:
    >>> def row(algo, target, ret):
    ...     final = str(target == 8)
    ...     return {"env": "E", "algo": algo, "seed": 0, "target": target, "mean_return": ret, "final": final}
    >>> rows = [row("ours:ppo", 0, 0.5), row("ours:ppo", 8, 0.9)]
    >>> rows += [row("sb3:PPO", 0, 0.1), row("sb3:PPO", 8, 0.2)]
    >>> [(c.name, c.passed) for c in check_discrimination(rows)]
    [('spread', True), ('not_saturated', True), ('baseline_learns', True)]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_SPREAD = 0.2
FLOOR = 0.02
CEILING = 0.95
MIN_GAIN = 0.05
BASELINE_PREFIXES = ("sb3:", "sb3_contrib:")
_COLUMNS = ("env", "algo", "seed", "target", "mean_return", "final")


@dataclass
class Condition:
    """One condition's verdict and the figures behind it (one line each)."""

    name: str
    passed: bool
    details: list[str] = field(default_factory=list)

    def format(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.name}"
        return "\n".join([head, *(f"    {d}" for d in self.details)])


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


def table_means(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``env → algo → {"start", "final", "seeds"}``: step-0 and final mean return, averaged over seeds.

    ``rows`` are results.csv rows (strings as :class:`csv.DictReader` gives them, or numbers). A row needs
    the columns env, algo, seed, target, mean_return and final; anything else raises ``ValueError``
    naming the row. A run without a final row (failed or unfinished) is left out of its algorithm's mean.
    """
    start: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    final: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for i, row in enumerate(rows):
        missing = [c for c in _COLUMNS if c not in row]
        if missing:
            raise ValueError(f"results row {i + 1} lacks the column(s) {missing}: {dict(row)!r}")
        try:
            value = float(row["mean_return"])
            target = int(float(row["target"]))
        except (TypeError, ValueError):
            raise ValueError(
                f"results row {i + 1}: mean_return and target must be numbers, got "
                f"{row['mean_return']!r} and {row['target']!r}"
            ) from None
        key = (str(row["env"]), str(row["algo"]))
        seed = str(row["seed"])
        if target == 0:
            start[key][seed] = value
        if _flag(row["final"]):
            final[key][seed] = value
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for key, by_seed in final.items():
        vals = [v for v in by_seed.values() if not math.isnan(v)]
        if not vals:
            continue
        starts = [start[key][s] for s in by_seed if s in start[key] and not math.isnan(start[key][s])]
        out[key[0]][key[1]] = {
            "final": sum(vals) / len(vals),
            "start": sum(starts) / len(starts) if starts else math.nan,
            "seeds": float(len(vals)),
        }
    return dict(out)


def check_discrimination(
    rows: Iterable[Mapping[str, Any]],
    min_spread: float = MIN_SPREAD,
    floor: float = FLOOR,
    ceiling: float = CEILING,
    min_gain: float = MIN_GAIN,
    baselines: Sequence[str] = BASELINE_PREFIXES,
) -> list[Condition]:
    """The three conditions of the module docstring, in order: spread, not_saturated, baseline_learns."""
    means = table_means(rows)
    if not means:
        raise ValueError("no finished runs in the results (no row has final=True)")
    spread = Condition("spread", True)
    saturated = Condition("not_saturated", True)
    for env, algos in means.items():
        finals = {a: m["final"] for a, m in algos.items()}
        best, worst = max(finals, key=finals.__getitem__), min(finals, key=finals.__getitem__)
        gap = finals[best] - finals[worst]
        ok = len(finals) >= 2 and gap >= min_spread
        spread.passed &= ok
        spread.details.append(
            f"{'ok ' if ok else 'BAD'} {env}: best {best} {finals[best]:.3f} − worst {worst} "
            f"{finals[worst]:.3f} = {gap:.3f} (need ≥ {min_spread})"
        )
        low = all(v <= floor for v in finals.values())
        high = all(v >= ceiling for v in finals.values())
        saturated.passed &= not (low or high)
        what = f"every algorithm ≤ {floor}" if low else f"every algorithm ≥ {ceiling}" if high else "mixed"
        saturated.details.append(
            f"{'BAD' if low or high else 'ok '} {env}: {what} "
            f"(range {finals[worst]:.3f} .. {finals[best]:.3f})"
        )
    learns = Condition("baseline_learns", False)
    for env, algos in means.items():
        for algo, m in algos.items():
            if not algo.startswith(tuple(baselines)):
                continue
            gain = m["final"] - m["start"]
            ok = not math.isnan(gain) and gain >= min_gain
            learns.passed |= ok
            learns.details.append(
                f"{'ok ' if ok else '-  '} {env} {algo}: start {m['start']:.3f} → final {m['final']:.3f} "
                f"({gain:+.3f}, need ≥ +{min_gain})"
            )
    if not learns.details:
        learns.details.append(f"no baseline in the results (algorithms named {' or '.join(baselines)}...)")
    return [spread, saturated, learns]


def read_results(path: str | Path) -> list[dict[str, str]]:
    """The rows of a results.csv; a missing file or one without the expected columns raises naming it."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"results file {str(p)!r} does not exist (expected a benchmark's results.csv)"
        )
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{str(p)!r} lacks the column(s) {missing}; is it a text-env results.csv?")
        return list(reader)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agents.harness.check",
        description="Check that a benchmark's results.csv discriminates between algorithms (issue 16.3).",
    )
    parser.add_argument("results", help="a results.csv written by text-env benchmark")
    parser.add_argument("--min-spread", type=float, default=MIN_SPREAD)
    parser.add_argument("--floor", type=float, default=FLOOR)
    parser.add_argument("--ceiling", type=float, default=CEILING)
    parser.add_argument("--min-gain", type=float, default=MIN_GAIN)
    args = parser.parse_args(argv)
    try:
        conditions = check_discrimination(
            read_results(args.results), args.min_spread, args.floor, args.ceiling, args.min_gain
        )
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for c in conditions:
        print(c.format())
    passed = all(c.passed for c in conditions)
    print("all conditions pass" if passed else "some condition fails")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
