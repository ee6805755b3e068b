"""3D track gap filling, temporal filters and the metrics that compare them.

A track is an array [T, J, 3] of world millimetres sampled at `fps` frames per second, NaN where
joint j was not reconstructed at frame t. Everything here works per joint and coordinate on the
time axis, and only on valid runs (maximal stretches of consecutive non-NaN frames):

  * `fill_gaps` interpolates interior NaN runs of at most `max_gap_frames` frames (cubic spline on
    the valid samples, linear where a series has fewer than 4 of them); longer gaps and leading or
    trailing NaN stay NaN.
  * `filter_track(positions, fps, method, **params)` applies one filter of `FILTERS` to every valid
    run separately, so no filter smears across a gap that stays NaN; a run shorter than the filter
    needs (`min_run_frames`) is returned unfiltered.
      "butterworth": zero-phase low-pass, `scipy.signal.butter` + `sosfiltfilt` (the magnitude
        response |H(f)|^2 = 1 / (1 + (f / f_c)^(2n)) applied forwards and backwards, so squared);
      "savgol": Savitzky-Golay local polynomial fit (MetaFuse paper Sec. 5.4 smooths its 3D poses
        with it), `scipy.signal.savgol_filter`;
      "one_euro": the One Euro filter (Casiez, Roussel, Vogel, CHI 2012), causal, written from the
        paper's equations (see `one_euro`);
      "none": the identity.
  * Metrics: `jitter` (mean acceleration magnitude, m/s^2), `lag_frames` (shift that best aligns
    the velocities), `bone_length_variation` (std and coefficient of variation of bone lengths),
    `mpjpe`.

Runs are vectorized over the columns (joint, coordinate) that share one NaN pattern: the three
coordinates of a joint always do, and in practice most joints of a track do as well.

Which method is the default (`DEFAULT_METHOD`) was measured by `benchmarks/filter_study.py` on
CMU Panoptic 3D poses with added noise (measured in BUILD.md).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import interpolate
from scipy import signal

# Butterworth 4 Hz: human joint motion sits mostly below ~3 Hz and the ~2 Hz of a brisk wave or
# step passes at 99.7 % (4 Hz is -3 dB per pass), while triangulation noise is white up to Nyquist
# (15 Hz at 30 fps). On noisy Panoptic poses it cut MPJPE by a third with no lag, lower than 6 or
# 8 Hz (benchmarks/filter_study.py; measured in BUILD.md).
BUTTERWORTH_CUTOFF_HZ = 4.0
# Order 4 (applied twice by sosfiltfilt, so effectively 8): the usual biomechanics choice, steep
# enough to separate motion from noise yet short enough (padding 15 frames) for short tracks.
BUTTERWORTH_ORDER = 4
# Savitzky-Golay: 9 frames (0.3 s at 30 fps) with a quadratic, as in MetaFuse Sec. 5.4: a window
# short against a movement (about 1 s) so fast limbs are not flattened, long enough to average
# noise.
SAVGOL_WINDOW_FRAMES = 9
SAVGOL_POLYORDER = 2
# One Euro (Casiez et al. 2012 recommend tuning min_cutoff at rest and beta in motion): 1.5 Hz
# steadies a still joint; beta 0.005 1/mm raises the cut-off by 5 Hz at 1 m/s so moving limbs lag
# little; d_cutoff 1 Hz is the paper's value for the derivative filter.
ONE_EURO_MIN_CUTOFF_HZ = 1.5
ONE_EURO_BETA = 0.005
ONE_EURO_D_CUTOFF_HZ = 1.0

DEFAULT_PARAMS: dict[str, dict[str, float]] = {
    "butterworth": {"cutoff_hz": BUTTERWORTH_CUTOFF_HZ, "order": BUTTERWORTH_ORDER},
    "savgol": {"window_frames": SAVGOL_WINDOW_FRAMES, "polyorder": SAVGOL_POLYORDER},
    "one_euro": {"min_cutoff_hz": ONE_EURO_MIN_CUTOFF_HZ, "beta": ONE_EURO_BETA,
                 "d_cutoff_hz": ONE_EURO_D_CUTOFF_HZ},
    "none": {},
}
# Lowest MPJPE on the noisy Panoptic poses among the variants with at most 1 frame of lag that keep
# 98 % of a 2 Hz movement (benchmarks/filter_study.py; measured in BUILD.md). Savitzky-Golay with
# 9-11 frames scored lower MPJPE on those slow 20-frame tracks but flattens 2 Hz motion by 4-8 %.
DEFAULT_METHOD = "butterworth"


# ----------------------------------------------------------------------------------------------
# Runs of valid samples.


def _check_track(positions: np.ndarray, name: str = "positions") -> np.ndarray:
  positions = np.asarray(positions, np.float64)
  if positions.ndim != 3 or positions.shape[2] != 3:
    raise ValueError(f"{name} has shape {positions.shape}, expected [T, J, 3] (world mm)")
  if np.isinf(positions).any():
    raise ValueError(f"{name} holds infinite values; expected finite millimetres or NaN")
  return positions


def _runs(valid: np.ndarray) -> list[tuple[int, int]]:
  """[(start, stop)] of the maximal runs of True in a 1-D boolean array (stop exclusive)."""
  edges = np.diff(np.concatenate([[0], valid.astype(np.int8), [0]]))
  return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _column_groups(series: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
  """Groups the columns of series [T, C] by NaN pattern: [(valid [T] bool, columns [K] int)]."""
  valid = ~np.isnan(series)
  patterns, inverse = np.unique(valid.T, axis=0, return_inverse=True)
  inverse = np.ravel(inverse)
  return [(patterns[k], np.flatnonzero(inverse == k)) for k in range(len(patterns))]


def _apply_on_runs(positions: np.ndarray, run_filter: Callable[[np.ndarray], np.ndarray],
                   min_run_frames: int) -> np.ndarray:
  """Applies run_filter([n, K] -> [n, K]) to every valid run of at least min_run_frames frames."""
  num_frames, num_joints, _ = positions.shape
  series = positions.reshape(num_frames, num_joints * 3)
  out = series.copy()
  for valid, columns in _column_groups(series):
    for start, stop in _runs(valid):
      if stop - start >= min_run_frames:
        out[start:stop, columns] = run_filter(series[start:stop][:, columns])
  return out.reshape(positions.shape)


# ----------------------------------------------------------------------------------------------
# Gap filling.


def fill_gaps(positions: np.ndarray, max_gap_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """Interpolates short interior NaN gaps of a track.

  Per joint and coordinate, every run of NaN that has valid samples on both sides and is at most
  `max_gap_frames` long is filled from a cubic spline (`scipy.interpolate.CubicSpline`, not-a-knot)
  through all valid samples of that series, or linearly where the series has fewer than 4 valid
  samples. Longer gaps and leading/trailing NaN stay NaN.

  Args:
    positions: [T, J, 3] world millimetres, NaN where missing.
    max_gap_frames: Longest gap (in frames) that is filled; 0 fills nothing.

  Returns:
    filled: [T, J, 3] millimetres, the input with the short gaps filled.
    filled_mask: [T, J, 3] bool, True where a value was filled in.
  """
  positions = _check_track(positions)
  if (isinstance(max_gap_frames, bool) or int(max_gap_frames) != max_gap_frames
      or max_gap_frames < 0):
    raise ValueError(f"max_gap_frames {max_gap_frames!r}, expected an integer >= 0")
  num_frames = positions.shape[0]
  series = positions.reshape(num_frames, -1)
  filled = series.copy()
  filled_mask = np.zeros(series.shape, bool)
  frames = np.arange(num_frames, dtype=np.float64)
  for valid, columns in _column_groups(series):
    gaps = [(a, b) for a, b in _runs(~valid)
            if a > 0 and b < num_frames and b - a <= max_gap_frames]
    if not gaps:
      continue
    targets = np.concatenate([np.arange(a, b) for a, b in gaps])
    known = series[valid][:, columns]
    if valid.sum() >= 4:
      values = interpolate.CubicSpline(frames[valid], known, axis=0)(frames[targets])
    else:
      values = np.stack([np.interp(frames[targets], frames[valid], known[:, k])
                         for k in range(len(columns))], axis=1)
    filled[np.ix_(targets, columns)] = values
    filled_mask[np.ix_(targets, columns)] = True
  return filled.reshape(positions.shape), filled_mask.reshape(positions.shape)


# ----------------------------------------------------------------------------------------------
# Filters. Each takes (positions [T, J, 3] mm, fps, **params) and returns [T, J, 3] mm.


def butterworth(positions: np.ndarray, fps: float, *, cutoff_hz: float = BUTTERWORTH_CUTOFF_HZ,
                order: int = BUTTERWORTH_ORDER) -> np.ndarray:
  """Zero-phase Butterworth low-pass on every valid run.

  The digital Butterworth filter of `order` (`scipy.signal.butter`, second-order sections) is run
  forwards and backwards (`sosfiltfilt`), so the phase cancels (no lag) and the magnitude response
  is squared: |H(f)|^2 = 1 / (1 + (f / f_c)^(2n)) per pass, 1 / (1 + (f / f_c)^(2n)) squared in
  all (for f well below Nyquist, where the bilinear transform's frequency warping is small). The
  ends are padded with odd reflections of min(3 (order + 1), n - 1) samples; runs shorter than
  2 order + 1 frames are left unfiltered.

  Args:
    positions: [T, J, 3] world millimetres, NaN where missing.
    fps: Sampling rate, frames per second.
    cutoff_hz: -3 dB frequency of one pass, Hz, 0 < cutoff_hz < fps / 2.
    order: Filter order n >= 1.

  Returns:
    [T, J, 3] millimetres, NaN where the input is NaN.
  """
  positions = _check_track(positions)
  fps = _check_fps(fps)
  if isinstance(order, bool) or int(order) != order or order < 1:
    raise ValueError(f"butterworth order {order!r}, expected an integer >= 1")
  order = int(order)
  if not 0 < cutoff_hz < fps / 2:
    raise ValueError(f"butterworth cutoff_hz {cutoff_hz!r}, expected 0 < cutoff_hz < Nyquist "
                     f"= fps / 2 = {fps / 2:g} Hz")
  sos = signal.butter(order, cutoff_hz, btype="low", fs=fps, output="sos")
  padlen = 3 * (order + 1)  # scipy's filtfilt default for the same filter in (b, a) form.

  def run_filter(x):
    return signal.sosfiltfilt(sos, x, axis=0, padtype="odd", padlen=min(padlen, len(x) - 1))

  return _apply_on_runs(positions, run_filter, min_run_frames=2 * order + 1)


def savgol(positions: np.ndarray, fps: float, *, window_frames: int = SAVGOL_WINDOW_FRAMES,
           polyorder: int = SAVGOL_POLYORDER) -> np.ndarray:
  """Savitzky-Golay smoothing on every valid run.

  Each sample is replaced by the value at its centre of the least-squares polynomial of degree
  `polyorder` fitted to the `window_frames` samples around it (`scipy.signal.savgol_filter`, the
  ends fitted by one polynomial over the first/last window, mode "interp"). A polynomial of degree
  <= polyorder passes unchanged. Zero phase. Runs shorter than the window are left unfiltered.

  Args:
    positions: [T, J, 3] world millimetres, NaN where missing.
    fps: Sampling rate, frames per second (checked only; the window is in frames).
    window_frames: Odd window length in frames, > polyorder.
    polyorder: Degree of the local polynomial, >= 0.

  Returns:
    [T, J, 3] millimetres, NaN where the input is NaN.
  """
  positions = _check_track(positions)
  _check_fps(fps)
  if isinstance(polyorder, bool) or int(polyorder) != polyorder or polyorder < 0:
    raise ValueError(f"savgol polyorder {polyorder!r}, expected an integer >= 0")
  if (isinstance(window_frames, bool) or int(window_frames) != window_frames
      or window_frames % 2 == 0 or window_frames <= polyorder):
    raise ValueError(f"savgol window_frames {window_frames!r}, expected an odd integer > "
                     f"polyorder = {polyorder}")
  window_frames, polyorder = int(window_frames), int(polyorder)

  def run_filter(x):
    return signal.savgol_filter(x, window_frames, polyorder, axis=0, mode="interp")

  return _apply_on_runs(positions, run_filter, min_run_frames=window_frames)


def _alpha(cutoff_hz: np.ndarray | float, fps: float) -> np.ndarray | float:
  """One Euro smoothing factor alpha = 1 / (1 + tau / T_e), tau = 1 / (2 pi f_c), T_e = 1 / fps."""
  tau = 1.0 / (2.0 * np.pi * cutoff_hz)
  return 1.0 / (1.0 + tau * fps)


def one_euro(positions: np.ndarray, fps: float, *,
             min_cutoff_hz: float = ONE_EURO_MIN_CUTOFF_HZ, beta: float = ONE_EURO_BETA,
             d_cutoff_hz: float = ONE_EURO_D_CUTOFF_HZ) -> np.ndarray:
  """The One Euro filter (Casiez, Roussel, Vogel, CHI 2012), causal, on every valid run.

  Per sample i (T_e = 1 / fps, first sample of a run: x_hat = x, dx_hat = 0):

      dx_i     = (x_i - x_hat_{i-1}) / T_e                              (mm/s)
      dx_hat_i = alpha(d_cutoff) dx_i + (1 - alpha(d_cutoff)) dx_hat_{i-1}
      f_c      = min_cutoff + beta |dx_hat_i|                           (Hz)
      x_hat_i  = alpha(f_c) x_i + (1 - alpha(f_c)) x_hat_{i-1}
      alpha(f) = 1 / (1 + tau / T_e),  tau = 1 / (2 pi f).

  Each coordinate is filtered on its own (the paper's scalar filter). With beta = 0 it is an
  exponential smoother with constant alpha(min_cutoff). The filter restarts after every gap.

  Args:
    positions: [T, J, 3] world millimetres, NaN where missing.
    fps: Sampling rate, frames per second.
    min_cutoff_hz: Cut-off at rest, Hz, > 0.
    beta: Cut-off slope, Hz per (mm/s), >= 0; larger follows fast motion with less lag.
    d_cutoff_hz: Cut-off of the derivative's smoother, Hz, > 0.

  Returns:
    [T, J, 3] millimetres, NaN where the input is NaN.
  """
  positions = _check_track(positions)
  fps = _check_fps(fps)
  if not min_cutoff_hz > 0:
    raise ValueError(f"one_euro min_cutoff_hz {min_cutoff_hz!r}, expected > 0 Hz")
  if not beta >= 0:
    raise ValueError(f"one_euro beta {beta!r}, expected >= 0 (Hz per mm/s)")
  if not d_cutoff_hz > 0:
    raise ValueError(f"one_euro d_cutoff_hz {d_cutoff_hz!r}, expected > 0 Hz")
  alpha_d = _alpha(d_cutoff_hz, fps)

  def run_filter(x):
    out = np.empty_like(x)
    x_hat, dx_hat = x[0], np.zeros(x.shape[1])
    out[0] = x_hat
    for i in range(1, len(x)):
      dx_hat = alpha_d * (x[i] - x_hat) * fps + (1.0 - alpha_d) * dx_hat
      alpha = _alpha(min_cutoff_hz + beta * np.abs(dx_hat), fps)
      x_hat = alpha * x[i] + (1.0 - alpha) * x_hat
      out[i] = x_hat
    return out

  return _apply_on_runs(positions, run_filter, min_run_frames=2)


def identity(positions: np.ndarray, fps: float) -> np.ndarray:
  """No filtering: a float64 copy of positions [T, J, 3] mm (fps is checked only)."""
  _check_fps(fps)
  return _check_track(positions).copy()


FILTERS: dict[str, Callable[..., np.ndarray]] = {
    "butterworth": butterworth,
    "savgol": savgol,
    "one_euro": one_euro,
    "none": identity,
}


def _check_fps(fps: float) -> float:
  if isinstance(fps, bool) or not np.isfinite(fps) or fps <= 0:
    raise ValueError(f"fps {fps!r}, expected a positive frame rate in frames per second")
  return float(fps)


def filter_track(positions: np.ndarray, fps: float, method: str = DEFAULT_METHOD,
                 **params) -> np.ndarray:
  """Filters a track with one method of `FILTERS`.

  Args:
    positions: [T, J, 3] world millimetres, NaN where missing (gaps that stay are not crossed).
    fps: Sampling rate, frames per second.
    method: A key of `FILTERS`.
    **params: That method's keyword parameters (defaults in `DEFAULT_PARAMS`).

  Returns:
    [T, J, 3] millimetres, NaN exactly where the input is NaN.

  Raises:
    ValueError: unknown method, a parameter the method does not take, or a bad value.
  """
  if method not in FILTERS:
    raise ValueError(f"filter method {method!r}, expected one of {sorted(FILTERS)}")
  unknown = sorted(set(params) - set(DEFAULT_PARAMS[method]))
  if unknown:
    raise ValueError(f"filter {method!r} got parameters {unknown}, expected a subset of "
                     f"{sorted(DEFAULT_PARAMS[method])}")
  return FILTERS[method](positions, fps, **params)


# ----------------------------------------------------------------------------------------------
# Metrics.


def jitter(positions: np.ndarray, fps: float) -> float:
  """Mean acceleration magnitude of a track, m/s^2.

  a_t = (x_{t+1} - 2 x_t + x_{t-1}) fps^2, its Euclidean norm averaged over every (t, joint)
  whose three frames are valid. For white Gaussian noise of std s mm per coordinate the second
  difference has std s sqrt(6) per coordinate, so its norm averages s sqrt(6) 2 sqrt(2 / pi)
  mm/frame^2 (mean of a chi distribution with 3 degrees of freedom).

  Args:
    positions: [T, J, 3] world millimetres, NaN where missing.
    fps: Sampling rate, frames per second.

  Returns:
    Mean |a| in m/s^2; NaN if no valid triple exists.
  """
  positions = _check_track(positions)
  fps = _check_fps(fps)
  second = positions[2:] - 2.0 * positions[1:-1] + positions[:-2]
  norms = np.linalg.norm(second, axis=-1)
  norms = norms[np.isfinite(norms)]
  if norms.size == 0:
    return float("nan")
  return float(norms.mean() * fps ** 2 / 1000.0)


def lag_frames(reference: np.ndarray, filtered: np.ndarray, max_lag: int) -> float:
  """Delay of `filtered` behind `reference`, in frames (positive: filtered is late).

  Per joint, the shift k in [-max_lag, max_lag] minimizing the mean squared difference of the
  velocities, mean over valid t of |v_f(t) - v_ref(t - k)|^2 (v(t) = x(t+1) - x(t), mm/frame), is
  refined to a fraction of a frame by the parabola through the costs at k - 1, k, k + 1; the
  result is the median over joints that have a finite cost at every shift.

  Args:
    reference: [T, J, 3] millimetres, NaN where missing.
    filtered: [T, J, 3] millimetres, NaN where missing.
    max_lag: Largest shift tried, frames, 0 <= max_lag <= (T - 2) // 2. The compared frames are
      the velocities max_lag .. T - 2 - max_lag of `filtered`, the same for every shift.

  Returns:
    Median lag in frames; NaN if no joint can be compared.
  """
  reference = _check_track(reference, "reference")
  filtered = _check_track(filtered, "filtered")
  if reference.shape != filtered.shape:
    raise ValueError(f"filtered has shape {filtered.shape}, expected the reference's "
                     f"{reference.shape}")
  num_frames = reference.shape[0]
  limit = (num_frames - 2) // 2  # leaves at least one velocity to compare at every shift
  if isinstance(max_lag, bool) or int(max_lag) != max_lag or not 0 <= max_lag <= limit:
    raise ValueError(f"max_lag {max_lag!r}, expected an integer in [0, {limit}] "
                     f"for {num_frames} frames")
  max_lag = int(max_lag)
  v_ref = np.diff(reference, axis=0)
  v_f = np.diff(filtered, axis=0)
  n = len(v_ref)
  shifts = np.arange(-max_lag, max_lag + 1)
  costs = np.full((len(shifts), reference.shape[1]), np.nan)
  # Every shift compares the same frames t of `filtered` (pairs v_f[t], v_ref[t - k]), so the
  # costs of neighbouring shifts differ only by the shift and the parabola is fair.
  for index, k in enumerate(shifts):
    a = v_f[max_lag:n - max_lag]
    b = v_ref[max_lag - k:n - max_lag - k]
    squared = np.sum((a - b) ** 2, axis=-1)  # [n - 2 max_lag, J], NaN where either is missing
    counts = np.sum(np.isfinite(squared), axis=0)
    costs[index] = np.where(counts > 0, np.nansum(squared, axis=0) / np.maximum(counts, 1),
                            np.nan)
  usable = np.all(np.isfinite(costs), axis=0)
  if not usable.any():
    return float("nan")
  costs = costs[:, usable]
  best = np.argmin(costs, axis=0)
  lags = shifts[best].astype(np.float64)
  interior = (best > 0) & (best < len(shifts) - 1)
  columns = np.flatnonzero(interior)
  left, mid, right = (costs[best[columns] - 1, columns], costs[best[columns], columns],
                      costs[best[columns] + 1, columns])
  curvature = left - 2.0 * mid + right
  offset = np.where(curvature > 0, 0.5 * (left - right) / np.where(curvature > 0, curvature, 1),
                    0.0)
  lags[columns] += offset
  return float(np.median(lags))


def bone_length_variation(positions: np.ndarray,
                          limbs: Sequence[tuple[int, int]]) -> tuple[float, float]:
  """How much bone lengths vary over time (0 for a rigid skeleton).

  Per bone (parent, child), the length |x_child - x_parent| at every frame where both are valid;
  its standard deviation over time (mm) and coefficient of variation (std / mean, unitless).
  Bones with fewer than 2 valid frames are skipped.

  Args:
    positions: [T, J, 3] world millimetres, NaN where missing.
    limbs: [B] (parent, child) joint index pairs, e.g. `JointSet.limbs`.

  Returns:
    (mean over bones of the std in mm, mean over bones of the coefficient of variation); NaN, NaN
    if no bone has 2 valid frames.
  """
  positions = _check_track(positions)
  limbs = np.asarray(limbs, np.int64).reshape(-1, 2)
  num_joints = positions.shape[1]
  if limbs.size and (limbs.min() < 0 or limbs.max() >= num_joints):
    raise ValueError(f"limbs index joints {limbs.min()}..{limbs.max()}, expected indices in "
                     f"[0, {num_joints - 1}] for {num_joints} joints")
  lengths = np.linalg.norm(positions[:, limbs[:, 1]] - positions[:, limbs[:, 0]], axis=-1)
  stds, cvs = [], []
  for bone in lengths.T:
    bone = bone[np.isfinite(bone)]
    if bone.size >= 2:
      stds.append(bone.std())
      cvs.append(bone.std() / bone.mean())
  if not stds:
    return float("nan"), float("nan")
  return float(np.mean(stds)), float(np.mean(cvs))


def mpjpe(a: np.ndarray, b: np.ndarray) -> float:
  """Mean per-joint position error, mm, over the (frame, joint) pairs valid in both tracks.

  Args:
    a: [T, J, 3] millimetres, NaN where missing.
    b: [T, J, 3] millimetres, NaN where missing.

  Returns:
    Mean Euclidean distance in mm; NaN if no pair is valid in both.
  """
  a = _check_track(a, "a")
  b = _check_track(b, "b")
  if a.shape != b.shape:
    raise ValueError(f"b has shape {b.shape}, expected a's {a.shape}")
  errors = np.linalg.norm(a - b, axis=-1)
  errors = errors[np.isfinite(errors)]
  return float(errors.mean()) if errors.size else float("nan")
