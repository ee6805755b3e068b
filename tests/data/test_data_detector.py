"""Tests of the simulated detector: compact state, TF rendering, and occlusion-driven errors."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.data import detector, joints, world
from mf_tf.data.codec import HeatmapCodec
from mf_tf.geometry import rigs

H36M = joints.H36M17


def _state(seed=0, frames=3, views=2, size=32):
  rng = np.random.default_rng(seed)
  joints2d = rng.uniform(4, size - 4, size=(frames, views, 17, 2))
  visible = rng.random((frames, views, 17)) < 0.7
  params = detector.DetectorParams().scaled(size)
  return joints2d, visible, params, detector.sample_detections(
      np.random.default_rng(seed), joints2d, visible, "h36m17", params)


def test_sample_detections_shapes_and_error_model():
  joints2d, visible, params, state = _state(frames=200, size=64)
  assert state["peaks"].shape == (200, 2, 17, 2, 2) and state["peaks"].dtype == np.float32
  assert state["amplitudes"].shape == (200, 2, 17, 2)
  assert state["noise_seed"].shape == (200,)
  true_error = np.linalg.norm(state["peaks"][..., 0, :] - joints2d, axis=-1)
  assert np.median(true_error[visible]) < np.median(true_error[~visible])
  amplitude = state["amplitudes"]
  low, high = params.visible_amplitude
  assert np.all((amplitude[..., 0][visible] >= low) & (amplitude[..., 0][visible] <= high))
  low, high = params.occluded_amplitude
  assert np.all((amplitude[..., 0][~visible] >= low) & (amplitude[..., 0][~visible] <= high))
  # Occluded joints: the distractor usually beats the weakened true peak.
  assert np.mean(amplitude[..., 1][~visible] > amplitude[..., 0][~visible]) > 0.7
  assert np.mean(amplitude[..., 1][visible] > amplitude[..., 0][visible]) < 0.1
  # Distractors of sided joints sit mostly on the mirrored partner.
  mirror = H36M.mirror_array
  to_mirror = np.linalg.norm(state["peaks"][..., 1, :] - joints2d[:, :, mirror], axis=-1)
  sided = mirror != np.arange(17)
  near = to_mirror[..., sided] < 4 * params.distractor_jitter_px
  assert 0.6 < near.mean() < 0.85


def test_sample_detections_is_deterministic_and_checks_shapes():
  _, _, _, first = _state(seed=5)
  _, _, _, again = _state(seed=5)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  with pytest.raises(ValueError, match="expected"):
    detector.sample_detections(np.random.default_rng(0), np.zeros((1, 2, 5, 2)),
                               np.ones((1, 2, 5)), "h36m17", detector.DetectorParams())
  with pytest.raises(ValueError, match="sigma"):
    detector.DetectorParams(sigma=0.0)


def test_render_heatmaps_peaks_noise_and_determinism():
  size = 32
  peaks = np.zeros((2, 1, 3, 2, 2), np.float32)
  peaks[..., 0, :] = [[[10.0, 20.0], [5.0, 5.0], [25.0, 8.0]]]
  peaks[..., 1, :] = [[[26.0, 26.0], [20.0, 5.0], [5.0, 28.0]]]
  amplitudes = np.zeros((2, 1, 3, 2), np.float32)
  amplitudes[..., 0] = 1.0
  amplitudes[..., 1] = 0.5
  seeds = np.array([7, 8])
  clean = detector.render_heatmaps(peaks, amplitudes, size, 1.5, 0.0, seeds).numpy()
  assert clean.shape == (2, 1, size, size, 3)
  assert clean[0, 0, 20, 10, 0] == pytest.approx(1.0, abs=1e-5)  # Row y=20, column x=10.
  assert clean[0, 0, 26, 26, 0] == pytest.approx(0.5, abs=1e-5)
  noisy = detector.render_heatmaps(peaks, amplitudes, size, 1.5, 0.05, seeds).numpy()
  again = detector.render_heatmaps(peaks, amplitudes, size, 1.5, 0.05, seeds).numpy()
  np.testing.assert_array_equal(noisy, again)
  noise = noisy - clean
  assert 0.03 < noise.std() < 0.07
  assert np.abs(noise[0] - noise[1]).max() > 0.01  # Frames draw different noise.
  # A frame renders identically alone, in a batch, and under XLA.
  single = detector.render_heatmaps(peaks[1], amplitudes[1], size, 1.5, 0.05, seeds[1]).numpy()
  np.testing.assert_allclose(single, noisy[1], atol=1e-6)
  compiled = tf.function(
      lambda p, a, s: detector.render_heatmaps(p, a, size, 1.5, 0.05, s), jit_compile=True)
  np.testing.assert_allclose(compiled(peaks, amplitudes, seeds).numpy(), noisy, atol=1e-5)
  # Noise of a bigger batch does not change existing frames (per-frame seeds).
  bigger = detector.render_heatmaps(np.concatenate([peaks, peaks]),
                                    np.concatenate([amplitudes, amplitudes]), size, 1.5, 0.05,
                                    np.array([7, 8, 9, 10])).numpy()
  np.testing.assert_allclose(bigger[:2], noisy, atol=1e-6)


def test_occlusion_lowers_single_view_jdr():
  """Argmax JDR at half head size: occluded joints at least 20 points below visible ones."""
  rig = rigs.ring_rig(4, image_size=(640, 480), seed=1)
  frames = world.simulate_frames(rig, 60, seed=0, heatmap_size=32)
  coords, _ = HeatmapCodec(32).decode(frames["heatmaps"])
  error = np.linalg.norm(coords.numpy() - frames["joints2d"], axis=-1)
  detected = error < frames["head_size"][..., None] / 2
  joints2d = frames["joints2d"]
  inside = np.all((joints2d >= -0.5) & (joints2d < 31.5), axis=-1)
  visible = frames["visibility"] > 0
  occluded = inside & ~visible  # In the image but hidden by the body.
  assert occluded.mean() > 0.1  # Occlusion is frequent enough to matter.
  jdr_visible, jdr_occluded = detected[visible].mean(), detected[occluded].mean()
  assert jdr_visible > 0.85
  assert jdr_visible - jdr_occluded >= 0.20, (jdr_visible, jdr_occluded)


def test_detector_params_from_config():
  params = detector.detector_params_from_config(
      {"sigma": 1.5, "occluded_amplitude": [0.1, 0.3]})
  assert params.sigma == 1.5 and params.occluded_amplitude == (0.1, 0.3)
  with pytest.raises(ValueError, match="unknown detector params"):
    detector.detector_params_from_config({"sigmaa": 1.0})
  assert params.scaled(32).sigma == pytest.approx(0.75)


def test_bits_to_normal_is_finite_and_symmetric_for_every_24_bit_value():
  """Every uniform the noise can draw maps to a finite normal (2^24 - 1 once gave +inf)."""
  k = tf.range(2**24, dtype=tf.int64)
  bits = tf.cast(tf.bitwise.bitwise_or(tf.bitwise.left_shift(k, 8), 0xFF), tf.uint32)
  z = detector._bits_to_normal(bits).numpy()
  assert z.dtype == np.float32 and np.all(np.isfinite(z))
  assert z[-1] == pytest.approx(5.42, abs=0.01) and z[0] == -z[-1]
  np.testing.assert_array_equal(z, -z[::-1])  # k and 2^24 - 1 - k give opposite samples.
  assert abs(float(z.mean())) < 1e-6 and float(z.std()) == pytest.approx(1.0, abs=1e-4)
  top = detector._bits_to_normal(np.array([0xFFFFFFFF, 0xFFFFFF00, 0x80000000, 0x7FFFFFFF, 0],
                                          np.uint32)).numpy()
  half_step = 0.5 / 2**24 * np.sqrt(2 * np.pi)  # Samples next to the median: +-ndtri'(1/2) / 2^25.
  np.testing.assert_allclose(top, [5.41998, 5.41998, half_step, -half_step, -5.41998], rtol=1e-4)


def test_render_heatmaps_finite_for_the_seed_that_drew_an_infinite_sample():
  """Seed 1289233298 draws the top 24-bit uniform at view 1, joint 10 for a 4-view, 17-joint,
  32 px frame; the infinite sample once spread through the upsampling into an all-NaN channel.
  """
  rng = np.random.default_rng(0)
  peaks = rng.uniform(0.0, 32.0, (4, 17, 2, 2)).astype(np.float32)
  amplitudes = rng.uniform(0.0, 1.0, (4, 17, 2)).astype(np.float32)
  maps = detector.render_heatmaps(peaks, amplitudes, 32, 1.0, 0.04, 1289233298).numpy()
  assert np.all(np.isfinite(maps))
  clean = detector.render_heatmaps(peaks, amplitudes, 32, 1.0, 0.0, 0).numpy()
  # Bounded noise: each pixel mixes at most 4 samples (|z| <= 5.42) with unit-L2 (L1 <= 2) weights.
  assert np.abs(maps - clean).max() <= 0.04 * 5.42 * 2.0


def test_render_heatmaps_finite_over_many_seeds():
  rng = np.random.default_rng(1)
  seeds = np.concatenate([[1289233298], rng.integers(0, 2**31 - 1, 255)]).astype(np.int64)
  peaks = rng.uniform(-40.0, 70.0, (seeds.size, 2, 17, 2, 2)).astype(np.float32)
  amplitudes = rng.uniform(0.0, 1.0, (seeds.size, 2, 17, 2)).astype(np.float32)
  maps = detector.render_heatmaps(peaks, amplitudes, 32, 1.0, 0.04, seeds).numpy()
  assert np.all(np.isfinite(maps))
  noise = maps - detector.render_heatmaps(peaks, amplitudes, 32, 1.0, 0.0, seeds).numpy()
  assert float(noise.std()) == pytest.approx(0.04, rel=0.1)


def test_simulated_frames_have_finite_heatmaps():
  """A simulation as large as the one where an all-NaN channel once appeared.

  The exact bit pattern that produced it (the top 24-bit value) is pinned by
  `test_bits_to_normal_is_finite_and_symmetric_for_every_24_bit_value`; this checks the whole
  simulated-detector path end to end on 400 frames x 4 views x 17 joints.
  """
  rig = rigs.get_rig("panoptic_vga20").subset(range(4))
  frames = world.simulate_frames(rig, 400, 17, "h36m17", 32)
  assert frames["heatmaps"].shape == (400, 4, 32, 32, 17)
  assert np.all(np.isfinite(frames["heatmaps"]))
