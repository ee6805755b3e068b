"""Timing shared by the benchmarks: warm-up, repeated calls, interleaved comparisons and goals.

On a shared machine absolute times drift with the load of other processes, so every goal a
benchmark checks is a ratio of two things timed in the same run, called alternately so that
both see the same load:

    timing = measure(fn, reps=10)                        # one function
    timings = interleave({"xla": f, "eager": g}, reps=10)  # several, alternating every repetition
    pair = compare(fast_fn, slow_fn, reps=10)            # A/B; pair.ratio = time B / time A
    report_goal("speed-up over B", pair.ratio, 3.0, "x", lower_is_better=False)

Each timed call waits for its result (`block_until_ready`), so asynchronous runtimes are timed
to completion. The first `warmup` calls (tracing, XLA compilation, allocation) are timed apart
and kept in `Timing.warmup`. Ratios of interleaved series are paired: the median over
repetitions of (time of B / time of A) within the same repetition, which cancels load changes
slower than one repetition.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np


def block_until_ready(result) -> None:
  """Waits until every tensor in a (nested) result is computed.

  Args:
    result: A tensor (anything with `.numpy()`: TensorFlow eager tensors, detached PyTorch
      tensors), an `IndexedSlices`-like value (`.values` and `.indices`), or lists, tuples,
      named tuples and dicts of them; other leaves are ignored.
  """
  if isinstance(result, Mapping):
    for value in result.values():
      block_until_ready(value)
  elif isinstance(result, (list, tuple)):
    for value in result:
      block_until_ready(value)
  elif hasattr(result, "numpy"):
    result.numpy()
  elif hasattr(result, "values") and hasattr(result, "indices"):
    block_until_ready((result.values, result.indices))


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall-clock seconds of the timed calls of one function.

  Attributes:
    times: Seconds of each timed call, in call order.
    warmup: Seconds of each warm-up call (the first includes tracing / compilation).
  """
  times: tuple[float, ...]
  warmup: tuple[float, ...] = ()

  @property
  def n(self) -> int:
    return len(self.times)

  @property
  def median(self) -> float:
    return statistics.median(self.times)

  @property
  def p95(self) -> float:
    """95th percentile (linear interpolation; the maximum when n < 3)."""
    return float(np.percentile(self.times, 95))

  @property
  def min(self) -> float:
    return min(self.times)

  @property
  def max(self) -> float:
    return max(self.times)

  @property
  def first(self) -> float | None:
    """Seconds of the first warm-up call, None without warm-up."""
    return self.warmup[0] if self.warmup else None

  def per(self, count: float) -> Timing:
    """The same timing divided by `count` (e.g. seconds per frame of a batch of frames)."""
    return Timing(tuple(t / count for t in self.times), tuple(t / count for t in self.warmup))

  def summary(self, unit: str = "ms", digits: int = 1) -> str:
    """'median 12.3 ms (p95 14.0, min 11.9, max 14.2, n=5)' with unit 's', 'ms' or 'us'."""
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    return (f"median {scale * self.median:.{digits}f} {unit} (p95 {scale * self.p95:.{digits}f}, "
            f"min {scale * self.min:.{digits}f}, max {scale * self.max:.{digits}f}, n={self.n})")


def _timed_call(fn: Callable[[], object], block: Callable[[object], None]) -> float:
  start = time.perf_counter()
  block(fn())
  return time.perf_counter() - start


def measure(fn: Callable[[], object], reps: int, *, warmup: int = 1,
            block: Callable[[object], None] = block_until_ready) -> Timing:
  """Times `reps` calls of `fn` after `warmup` warm-up calls.

  Args:
    fn: Function of no arguments; a function that draws fresh inputs (e.g. from an iterator)
      times those too.
    reps: Timed calls, at least 1.
    warmup: Calls before timing (timed apart into `Timing.warmup`).
    block: Waits for `fn`'s result.

  Returns:
    `Timing`.
  """
  return interleave({"fn": fn}, reps, warmup=warmup, block=block)["fn"]


def interleave(fns: Mapping[str, Callable[[], object]], reps: int | Mapping[str, int], *,
               warmup: int = 1,
               block: Callable[[object], None] = block_until_ready) -> dict[str, Timing]:
  """Times several functions alternately, so that all see the same machine load.

  Every function gets its warm-up calls first; then repetition r calls each function once, in
  the given order for even r and in reverse order for odd r (A B, B A, ...), which cancels a
  systematic advantage of running first or second.

  Args:
    fns: Name -> function of no arguments.
    reps: Timed calls per function; a mapping gives each function its own count (repetition r
      then calls only the functions whose count exceeds r, e.g. fewer calls of a slow one).
    warmup: Calls per function before timing.
    block: Waits for a function's result.

  Returns:
    Name -> `Timing`, in the order of `fns`.
  """
  counts = {name: int(reps[name] if isinstance(reps, Mapping) else reps) for name in fns}
  for name, count in counts.items():
    if count < 1:
      raise ValueError(f"reps for {name!r} must be at least 1, got {count}")
  if warmup < 0:
    raise ValueError(f"warmup must be >= 0, got {warmup}")
  warmups = {name: tuple(_timed_call(fn, block) for _ in range(warmup))
             for name, fn in fns.items()}
  times = {name: [] for name in fns}
  names = list(fns)
  for rep in range(max(counts.values())):
    for name in (names if rep % 2 == 0 else reversed(names)):
      if rep < counts[name]:
        times[name].append(_timed_call(fns[name], block))
  return {name: Timing(tuple(times[name]), warmups[name]) for name in fns}


def paired_ratio(numerator: Timing, denominator: Timing) -> float:
  """Median over repetitions of numerator time / denominator time of the same repetition.

  For series from one `interleave` call; with different counts the first min(n) repetitions
  are paired.
  """
  count = min(numerator.n, denominator.n)
  return statistics.median(numerator.times[i] / denominator.times[i] for i in range(count))


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Interleaved A/B timing.

  Attributes:
    a: `Timing` of function A.
    b: `Timing` of function B.
  """
  a: Timing
  b: Timing

  @property
  def ratio(self) -> float:
    """Time of B / time of A, paired (`paired_ratio`): above 1 when A is faster."""
    return paired_ratio(self.b, self.a)


def compare(fn_a: Callable[[], object], fn_b: Callable[[], object], reps: int, *,
            warmup: int = 1, block: Callable[[object], None] = block_until_ready) -> Comparison:
  """Interleaved A/B timing of two functions (`interleave` with A B, B A, ... order)."""
  timings = interleave({"a": fn_a, "b": fn_b}, reps, warmup=warmup, block=block)
  return Comparison(timings["a"], timings["b"])


def _with_unit(value: float, unit: str) -> str:
  number = f"{value:.3g}" if abs(value) < 1e3 else f"{value:.0f}"
  return f"{number}{unit}" if unit in ("x", "%", "") else f"{number} {unit}"


def report_goal(name: str, value: float, goal: float, unit: str,
                lower_is_better: bool = True) -> bool:
  """Prints one goal line, 'goal <name>: <value> (goal <= <goal>): MET' or 'NOT MET'.

  Args:
    name: What is measured, e.g. "fusion / frame, dense".
    value: The measured value (a ratio from this run).
    goal: The threshold.
    unit: Unit of value and goal ("x" for ratios, "%" for shares, "tasks/s", ...).
    lower_is_better: The goal is value <= goal; False means value >= goal.

  Returns:
    Whether the goal is met.
  """
  met = value <= goal if lower_is_better else value >= goal
  print(f"goal {name}: {_with_unit(value, unit)} (goal {'<=' if lower_is_better else '>='} "
        f"{_with_unit(goal, unit)}): {'MET' if met else 'NOT MET'}", flush=True)
  return met
