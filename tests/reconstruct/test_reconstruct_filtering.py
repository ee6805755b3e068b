"""Tests of mf_tf.reconstruct.filtering against closed-form oracles (sines, steps, ramps, noise)."""

import numpy as np
import pytest

from mf_tf.reconstruct import filtering


def _track(values: np.ndarray) -> np.ndarray:
  """[T] -> [T, 1, 3] with the same series in x and -series in y, z = 0."""
  values = np.asarray(values, np.float64)
  return np.stack([values, -values, np.zeros_like(values)], axis=-1)[:, None, :]


def _amplitude(series: np.ndarray, frequency_hz: float, fps: float) -> tuple[float, float]:
  """Least-squares amplitude and phase (rad) of a sine of known frequency in series [T]."""
  t = np.arange(len(series)) / fps
  design = np.stack([np.sin(2 * np.pi * frequency_hz * t), np.cos(2 * np.pi * frequency_hz * t)],
                    axis=1)
  (s, c), *_ = np.linalg.lstsq(design, series, rcond=None)
  return float(np.hypot(s, c)), float(np.arctan2(c, s))


# ---------------------------------------------------------------------------------------------
# fill_gaps


def test_fill_gaps_recovers_sine_in_short_gap_and_leaves_long_gap():
  t = np.arange(120)
  truth = _track(100.0 * np.sin(2 * np.pi * t / 40))  # 100 mm amplitude, 40-frame period
  positions = truth.copy()
  positions[:2] = np.nan  # leading
  positions[30:35] = np.nan  # 5 frames: filled
  positions[60:80] = np.nan  # 20 frames: stays
  positions[-1] = np.nan  # trailing
  filled, mask = filtering.fill_gaps(positions, max_gap_frames=5)
  # A not-a-knot cubic through samples 40 per period: interpolation error of order
  # h^4 |f''''| / 384 ~ 100 (2 pi / 40)^4 / 384 * (gap-dependent factor) -> well below 0.5 mm.
  np.testing.assert_allclose(filled[30:35], truth[30:35], atol=0.5)
  assert np.all(np.isnan(filled[60:80]))
  assert np.all(np.isnan(filled[:2])) and np.all(np.isnan(filled[-1]))
  expected_mask = np.zeros(positions.shape, bool)
  expected_mask[30:35] = True
  np.testing.assert_array_equal(mask, expected_mask)
  valid = ~np.isnan(positions)
  np.testing.assert_array_equal(filled[valid], positions[valid])


def test_fill_gaps_gap_longer_than_limit_stays_and_linear_with_few_samples():
  positions = _track([0.0, np.nan, np.nan, 30.0, np.nan, 50.0])  # 3 valid samples: linear
  filled, mask = filtering.fill_gaps(positions, max_gap_frames=2)
  np.testing.assert_allclose(filled[:, 0, 0], [0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
  assert mask[:, 0, 0].tolist() == [False, True, True, False, True, False]
  filled, mask = filtering.fill_gaps(positions, max_gap_frames=1)
  assert np.isnan(filled[1:3, 0, :2]).all() and filled[4, 0, 0] == 40.0


def test_fill_gaps_rejects_negative_gap():
  with pytest.raises(ValueError, match=r"max_gap_frames -1.*integer >= 0"):
    filtering.fill_gaps(_track(np.zeros(5)), max_gap_frames=-1)


# ---------------------------------------------------------------------------------------------
# Butterworth


@pytest.mark.parametrize("ratio", [1.0, 1.5, 2.0])
def test_butterworth_attenuates_by_squared_magnitude_response(ratio):
  fps, cutoff, order = 1000.0, 10.0, 4  # f << fps, so the bilinear warping is below 0.1 %
  frequency = ratio * cutoff
  t = np.arange(3000) / fps
  x = _track(50.0 * np.sin(2 * np.pi * frequency * t))
  y = filtering.filter_track(x, fps, "butterworth", cutoff_hz=cutoff, order=order)
  middle = slice(500, 2500)  # away from the start-up transients
  amplitude, _ = _amplitude(y[middle, 0, 0], frequency, fps)
  expected = 1.0 / (1.0 + ratio ** (2 * order))  # |H|^2 of one pass = amplitude after two
  assert amplitude / 50.0 == pytest.approx(expected, rel=0.03)


def test_butterworth_passes_low_frequency_without_lag():
  fps = 30.0
  t = np.arange(300) / fps
  x = _track(200.0 * np.sin(2 * np.pi * 0.5 * t))  # 0.5 Hz, cut-off 6 Hz
  y = filtering.filter_track(x, fps, "butterworth", cutoff_hz=6.0)
  amplitude, phase = _amplitude(y[30:-30, 0, 0], 0.5, fps)
  _, phase_in = _amplitude(x[30:-30, 0, 0], 0.5, fps)
  assert amplitude == pytest.approx(200.0, rel=1e-3)
  assert abs(phase - phase_in) < 1e-3  # zero phase: < 0.01 frame at 0.5 Hz
  np.testing.assert_allclose(y, x, atol=0.5)
  assert filtering.lag_frames(x, y, max_lag=5) == pytest.approx(0.0, abs=0.01)


# ---------------------------------------------------------------------------------------------
# Savitzky-Golay


@pytest.mark.parametrize("window,polyorder", [(9, 2), (7, 3)])
def test_savgol_preserves_polynomial_of_its_order(window, polyorder):
  t = np.linspace(-2.0, 3.0, 40)
  coefficients = [3.0, -2.0, 0.5, 0.25][:polyorder + 1]
  x = _track(np.polyval(coefficients, t) * 100.0)
  y = filtering.filter_track(x, 30.0, "savgol", window_frames=window, polyorder=polyorder)
  np.testing.assert_allclose(y, x, atol=1e-8)
  # Two degrees more is not preserved (the oracle is not vacuous; one more odd degree passes a
  # centred even-order fit away from the ends).
  z = _track(np.arange(40.0) ** (polyorder + 2))
  assert np.abs(filtering.savgol(z, 30.0, window_frames=window, polyorder=polyorder) - z).max() > 1


# ---------------------------------------------------------------------------------------------
# One Euro


def test_one_euro_with_zero_beta_is_exponential_smoother():
  fps, min_cutoff = 30.0, 2.0
  x = _track(np.concatenate([np.zeros(5), np.ones(20)]) * 100.0)
  y = filtering.filter_track(x, fps, "one_euro", min_cutoff_hz=min_cutoff, beta=0.0)
  tau = 1.0 / (2 * np.pi * min_cutoff)
  alpha = 1.0 / (1.0 + tau / (1.0 / fps))  # paper: alpha = 1 / (1 + tau / T_e)
  n = np.arange(1, 21)
  np.testing.assert_allclose(y[5:, 0, 0], 100.0 * (1.0 - (1.0 - alpha) ** n), rtol=1e-12)
  np.testing.assert_allclose(y[:5], 0.0)


def test_one_euro_ramp_lag_falls_as_beta_grows():
  fps, min_cutoff, speed = 30.0, 1.0, 600.0  # mm/s
  x = _track(speed * np.arange(90) / fps)
  lags = []
  for beta in [0.0, 0.001, 0.01, 0.1]:
    y = filtering.one_euro(x, fps, min_cutoff_hz=min_cutoff, beta=beta)
    lags.append((x[-1, 0, 0] - y[-1, 0, 0]) / (speed / fps))  # frames behind at the end
  alpha = 1.0 / (1.0 + fps / (2 * np.pi * min_cutoff))
  # Steady-state lag of an exponential smoother on a ramp: (1 - alpha) / alpha frames.
  assert lags[0] == pytest.approx((1.0 - alpha) / alpha, rel=1e-3)
  assert lags[0] > 1.0
  assert all(a > b for a, b in zip(lags, lags[1:])), lags
  assert lags[-1] < 0.2


# ---------------------------------------------------------------------------------------------
# All filters: gaps, errors


@pytest.mark.parametrize("method", sorted(filtering.FILTERS))
def test_filters_keep_gaps_and_do_not_cross_them(method):
  rng = np.random.default_rng(0)
  x = np.cumsum(rng.normal(size=(60, 3, 3)), axis=0) * 10.0
  x[:3, 0] = np.nan  # leading gap of joint 0
  x[25:40, 1] = np.nan  # interior gap of joint 1
  x[50:52, 2, 1] = np.nan  # one coordinate only
  y = filtering.filter_track(x, 30.0, method)
  np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
  # The run after the gap is filtered as if it stood alone (nothing leaks across).
  alone = filtering.filter_track(x[40:, 1:2], 30.0, method)
  np.testing.assert_allclose(y[40:, 1:2], alone, atol=1e-9)


def test_short_runs_are_left_unfiltered():
  x = _track([0.0, 5.0, -3.0, 8.0, np.nan] + list(np.arange(20.0)))
  y = filtering.filter_track(x, 30.0, "savgol", window_frames=9, polyorder=2)
  np.testing.assert_array_equal(y[:4], x[:4])


@pytest.mark.parametrize("method,params,pattern", [
    ("kalman", {}, r"'kalman'.*one of \['butterworth', 'none', 'one_euro', 'savgol'\]"),
    ("butterworth", {"cutoff_hz": 15.0}, r"cutoff_hz 15.0.*Nyquist = fps / 2 = 15 Hz"),
    ("butterworth", {"cutoff_hz": 0.0}, r"cutoff_hz 0.0"),
    ("butterworth", {"order": 0}, r"order 0.*>= 1"),
    ("savgol", {"window_frames": 8}, r"window_frames 8.*odd integer > polyorder = 2"),
    ("savgol", {"window_frames": 3, "polyorder": 3}, r"window_frames 3.*polyorder = 3"),
    ("one_euro", {"beta": -0.1}, r"beta -0.1.*>= 0"),
    ("one_euro", {"min_cutoff_hz": 0.0}, r"min_cutoff_hz 0.0.*> 0"),
    ("savgol", {"cutoff_hz": 3.0}, r"'savgol' got parameters \['cutoff_hz'\].*polyorder"),
])
def test_bad_method_or_parameter_raises(method, params, pattern):
  with pytest.raises(ValueError, match=pattern):
    filtering.filter_track(np.zeros((30, 2, 3)), 30.0, method, **params)


def test_bad_track_shape_or_fps_raises():
  with pytest.raises(ValueError, match=r"shape \(30, 2\).*\[T, J, 3\]"):
    filtering.filter_track(np.zeros((30, 2)), 30.0, "none")
  with pytest.raises(ValueError, match=r"fps 0.*positive"):
    filtering.filter_track(np.zeros((30, 2, 3)), 0, "none")


# ---------------------------------------------------------------------------------------------
# Metrics


@pytest.mark.parametrize("shift", [3, -2, 0])
def test_lag_frames_finds_known_shift(shift):
  t = np.arange(200.0)
  curve = lambda s: 80 * np.sin(2 * np.pi * s / 37) + 40 * np.sin(2 * np.pi * s / 11 + 1.0)
  reference = _track(curve(t))
  delayed = _track(curve(t - shift))  # delayed[t] = reference[t - shift]
  assert filtering.lag_frames(reference, delayed, max_lag=5) == pytest.approx(shift, abs=0.01)


def test_lag_frames_subframe_refinement_between_integers():
  t = np.arange(300.0)
  reference = _track(100 * np.sin(2 * np.pi * t / 50))
  delayed = _track(100 * np.sin(2 * np.pi * (t - 1.5) / 50))
  assert filtering.lag_frames(reference, delayed, max_lag=4) == pytest.approx(1.5, abs=0.05)


def test_jitter_of_white_noise_matches_chi_mean():
  rng = np.random.default_rng(1)
  s, fps = 10.0, 30.0
  noise = rng.normal(scale=s, size=(20000, 2, 3))
  # Second difference per coordinate ~ N(0, 6 s^2); its 3-D norm has mean sigma * 2 sqrt(2 / pi).
  expected_mm_per_frame2 = s * np.sqrt(6.0) * 2.0 * np.sqrt(2.0 / np.pi)
  assert filtering.jitter(noise, fps) == pytest.approx(
      expected_mm_per_frame2 * fps ** 2 / 1000.0, rel=0.02)


def test_jitter_of_constant_acceleration_and_nan_triples():
  fps = 50.0
  t = np.arange(30) / fps
  x = _track(0.5 * 2000.0 * t ** 2)  # 2000 mm/s^2 along (x, -x): |a| = 2 sqrt(2) m/s^2
  x[10] = np.nan  # removes the triples centred at 9, 10, 11
  assert filtering.jitter(x, fps) == pytest.approx(2.0 * np.sqrt(2.0), rel=1e-9)


def test_bone_length_variation_rigid_and_known():
  rng = np.random.default_rng(2)
  skeleton = rng.normal(size=(5, 3)) * 300.0
  limbs = [(0, 1), (1, 2), (1, 3), (3, 4)]
  frames = []
  for k in range(40):  # rotating about z and translating
    angle = 0.1 * k
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    frames.append(skeleton @ rotation.T + [10.0 * k, -5.0 * k, 3.0 * k])
  rigid = np.stack(frames)
  std, cv = filtering.bone_length_variation(rigid, limbs)
  assert std == pytest.approx(0.0, abs=1e-9) and cv == pytest.approx(0.0, abs=1e-12)
  # One bone alternating 400 +- 20 mm: std 20 mm, cv 0.05.
  x = np.zeros((10, 2, 3))
  x[:, 1, 0] = 400.0 + 20.0 * (-1.0) ** np.arange(10)
  std, cv = filtering.bone_length_variation(x, [(0, 1)])
  assert std == pytest.approx(20.0) and cv == pytest.approx(0.05)
  with pytest.raises(ValueError, match=r"limbs index joints 0..2.*\[0, 1\]"):
    filtering.bone_length_variation(x, [(0, 2)])


def test_mpjpe_over_joints_valid_in_both():
  a = np.zeros((4, 2, 3))
  b = a + [3.0, 4.0, 0.0]
  b[0, 0] = [np.nan, 0, 0]
  b[1, 1] = 1000.0  # counted
  a[2, 1] = np.nan
  expected = (5.0 * 5 + np.linalg.norm([1000.0 - 0.0] * 3)) / 6
  assert filtering.mpjpe(a, b) == pytest.approx(expected)
