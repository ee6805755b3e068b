"""Simulated 2D detector: an error model driven by computed occlusion, then heatmap rendering.

Split in two so that datasets can store a compact state and render heatmaps inside tf.data:

1. `sample_detections` (numpy, cheap) draws, per frame, view and joint, P = 2 peaks (positions
   in heatmap px and amplitudes) and one noise seed per frame:
   - visible joint: peak 0 at the true projection plus jitter (std `visible_jitter_px`),
     amplitude in `visible_amplitude`; peak 1 is a faint distractor
     (`visible_distractor_amplitude`), except with probability `visible_confusion_probability` (left/right or limb confusion of a
     visible joint, as real detectors make) where it is as strong as an occluded joint's.
   - not visible (occluded by the body, outside the image or behind the camera): peak 0 weakened
     (`occluded_amplitude`, larger jitter `occluded_jitter_px`); peak 1 a stronger distractor
     (`distractor_amplitude`) at a plausible wrong place: with probability `mirror_probability`
     the mirrored left/right joint's projection (centre joints have none), otherwise a point
     along a bone incident to the joint, between its middle and the neighbouring joint.
     Distractors get `distractor_jitter_px` jitter.
2. `render_heatmaps` (TF, vectorized): Gaussian splatting of the peaks plus smooth background
   noise from `tf.random.stateless_normal` seeded by the frame's seed, so a frame renders
   identically every time, eagerly, in a tf.function or in tf.data.

Pixel-valued parameters are given for a 64 x 64 heatmap and scale with heatmap_size / 64.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from mf_tf.data import joints as joints_lib

NUM_PEAKS = 2  # Peak 0: the (jittered, possibly weakened) true joint; peak 1: the distractor.
REFERENCE_HEATMAP_SIZE = 64
# Accepted peak std at the 64 px reference, px: narrower than a tenth of a pixel renders nothing
# between pixel centres, wider than the heatmap renders a flat map (and 0 divides by zero).
SIGMA_RANGE_PX = (0.1, 64.0)


@dataclasses.dataclass(frozen=True)
class DetectorParams:
  """Error model of the simulated detector (pixel values at a 64 x 64 heatmap).

  Attributes:
    sigma: Gaussian std of a rendered peak, px.
    visible_jitter_px: Position noise std of a visible joint's peak, px.
    visible_amplitude: (low, high) uniform amplitude of a visible joint's peak.
    visible_distractor_amplitude: (low, high) amplitude of a visible joint's distractor.
    visible_confusion_probability: Chance that a visible joint's distractor is drawn from
      `distractor_amplitude` instead.
    occluded_jitter_px: Position noise std of an invisible joint's weakened peak, px.
    occluded_amplitude: (low, high) amplitude of an invisible joint's true peak.
    distractor_amplitude: (low, high) amplitude of an invisible joint's distractor.
    distractor_jitter_px: Position noise std of distractors, px.
    mirror_probability: Chance that a distractor sits on the mirrored joint (else on a limb).
    noise_level: Std of the per-pixel Gaussian background noise.
  """

  sigma: float = 2.0
  visible_jitter_px: float = 1.0
  visible_amplitude: tuple[float, float] = (0.75, 1.0)
  visible_distractor_amplitude: tuple[float, float] = (0.0, 0.25)
  visible_confusion_probability: float = 0.05
  occluded_jitter_px: float = 1.5
  occluded_amplitude: tuple[float, float] = (0.2, 0.6)
  distractor_amplitude: tuple[float, float] = (0.5, 1.0)
  distractor_jitter_px: float = 1.0
  mirror_probability: float = 0.7
  noise_level: float = 0.04

  def __post_init__(self):
    for name in ("visible_amplitude", "visible_distractor_amplitude", "occluded_amplitude",
                 "distractor_amplitude"):
      value = getattr(self, name)
      try:
        low, high = (float(v) for v in value)
      except (TypeError, ValueError):
        raise ValueError(f"detector param {name}={value!r}, expected a (low, high) pair of "
                         "numbers with 0 <= low <= high") from None
      if not (math.isfinite(high) and 0.0 <= low <= high):
        raise ValueError(f"detector param {name}=({low}, {high}), expected finite "
                         "0 <= low <= high")
      object.__setattr__(self, name, (low, high))
    for name in ("sigma", "visible_jitter_px", "occluded_jitter_px", "distractor_jitter_px",
                 "noise_level", "mirror_probability", "visible_confusion_probability"):
      value = getattr(self, name)
      try:
        number = float(value)
      except (TypeError, ValueError):
        raise ValueError(f"detector param {name}={value!r}, expected a number") from None
      if not math.isfinite(number) or number < 0.0:
        raise ValueError(f"detector param {name}={value}, expected a finite number >= 0")
    # Checked here as rendered (in this heatmap's px, `scaled` included): > 0 and 1 / sigma^2
    # finite. The range users may set (at 64 px) is checked by `detector_params_from_config`.
    check_sigma(self.sigma)
    for name in ("mirror_probability", "visible_confusion_probability"):
      if not 0.0 <= float(getattr(self, name)) <= 1.0:
        raise ValueError(f"detector param {name}={getattr(self, name)}, expected in [0, 1]")

  def scaled(self, heatmap_size: int) -> "DetectorParams":
    """The same model with pixel values scaled from a 64 px heatmap to `heatmap_size`."""
    factor = float(heatmap_size) / REFERENCE_HEATMAP_SIZE
    return dataclasses.replace(
        self, sigma=self.sigma * factor, visible_jitter_px=self.visible_jitter_px * factor,
        occluded_jitter_px=self.occluded_jitter_px * factor,
        distractor_jitter_px=self.distractor_jitter_px * factor)


def check_sigma(sigma, what: str = "detector param sigma") -> float:
  """`sigma` as a float when a Gaussian of that std can be rendered, else a ValueError.

  Args:
    sigma: Peak std in heatmap px.
    what: Its name, for the message.

  Raises:
    ValueError: sigma not a finite number > 0 whose 1 / sigma^2 is finite (0, 1e-200, inf).
  """
  try:
    value = float(sigma)
  except (TypeError, ValueError):
    raise ValueError(f"{what}={sigma!r}, expected a number of px > 0") from None
  try:
    renderable = math.isfinite(value) and value > 0.0 and math.isfinite(0.5 / value**2)
  except (OverflowError, ZeroDivisionError):
    renderable = False
  if not renderable:
    raise ValueError(f"{what}={sigma}, expected a finite number of px > 0 (at a 64 px heatmap: "
                     f"{SIGMA_RANGE_PX[0]} to {SIGMA_RANGE_PX[1]})")
  return value


def detector_params_from_config(config) -> DetectorParams:
  """DetectorParams from a config section (ConfigDict or mapping); missing keys keep defaults.

  Raises:
    ValueError: an unknown key, or a value out of its range (named with the range); sigma is
      given at a 64 px heatmap and accepted in `SIGMA_RANGE_PX`.
  """
  values = dict(config.to_dict() if hasattr(config, "to_dict") else config)
  known = {f.name for f in dataclasses.fields(DetectorParams)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"unknown detector params {unknown}; expected some of {sorted(known)}")
  params = DetectorParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
  low, high = SIGMA_RANGE_PX
  if not low <= params.sigma <= high:
    raise ValueError(f"detector param sigma={params.sigma} px, expected {low} <= sigma <= {high} "
                     f"px (given at a {REFERENCE_HEATMAP_SIZE} px heatmap)")
  return params


def _neighbour_table(joint_set: joints_lib.JointSet):
  """[J, D] padded joints adjacent in the tree, and [J] counts."""
  neighbours = [[] for _ in range(joint_set.num_joints)]
  for parent, child in joint_set.limbs:
    neighbours[parent].append(child)
    neighbours[child].append(parent)
  width = max(len(n) for n in neighbours)
  table = np.asarray([n + [n[0]] * (width - len(n)) for n in neighbours], np.int64)
  return table, np.asarray([len(n) for n in neighbours], np.int64)


def sample_detections(rng: np.random.Generator, joints2d, visibility, joint_set,
                      params: DetectorParams) -> dict:
  """Draws the compact detector state of a batch of frames.

  Args:
    rng: numpy Generator (the only source of randomness).
    joints2d: [N, V, J, 2] true projections in heatmap pixels (x = column, y = row).
    visibility: [N, V, J] bool or {0, 1}: the joint is seen (computed from the 3D body).
    joint_set: JointSet or name (for mirror partners and limbs).
    params: DetectorParams in the pixels of this heatmap (see `DetectorParams.scaled`).

  Returns:
    dict with "peaks" [N, V, J, P, 2] float32 heatmap px, "amplitudes" [N, V, J, P] float32 and
    "noise_seed" [N] int64, P = NUM_PEAKS.
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  joints2d = np.asarray(joints2d, np.float64)
  visible = np.asarray(visibility) > 0
  if joints2d.ndim != 4 or joints2d.shape[2:] != (joint_set.num_joints, 2):
    raise ValueError(f"joints2d has shape {joints2d.shape}, expected [N, V, "
                     f"{joint_set.num_joints}, 2] for joint set {joint_set.name!r}")
  if visible.shape != joints2d.shape[:3]:
    raise ValueError(f"visibility has shape {visible.shape}, expected {joints2d.shape[:3]}")
  shape = joints2d.shape[:3]
  num_frames = shape[0]

  def uniform(bounds):
    return rng.uniform(bounds[0], bounds[1], size=shape)

  true_jitter = np.where(visible, params.visible_jitter_px, params.occluded_jitter_px)
  true_peak = joints2d + rng.standard_normal(shape + (2,)) * true_jitter[..., None]
  true_amplitude = np.where(visible, uniform(params.visible_amplitude),
                            uniform(params.occluded_amplitude))

  # Distractor: mirrored partner's projection, or a point along an incident bone.
  mirror = joint_set.mirror_array
  has_partner = mirror != np.arange(joint_set.num_joints)
  table, counts = _neighbour_table(joint_set)
  pick = np.minimum((rng.random(shape) * counts).astype(np.int64), counts - 1)
  neighbour = table[np.arange(joint_set.num_joints), pick]  # [N, V, J]
  neighbour_xy = np.take_along_axis(joints2d, neighbour[..., None], axis=2)
  fraction = rng.uniform(0.5, 1.0, size=shape + (1,))
  along_limb = joints2d + fraction * (neighbour_xy - joints2d)
  use_mirror = (rng.random(shape) < params.mirror_probability) & has_partner
  distractor = np.where(use_mirror[..., None], joints2d[:, :, mirror], along_limb)
  distractor = distractor + rng.standard_normal(shape + (2,)) * params.distractor_jitter_px
  confused = rng.random(shape) < params.visible_confusion_probability
  distractor_amplitude = np.where(visible & ~confused,
                                  uniform(params.visible_distractor_amplitude),
                                  uniform(params.distractor_amplitude))
  noise_seed = rng.integers(0, 2**31 - 1, size=num_frames, dtype=np.int64)
  return {
      "peaks": np.stack([true_peak, distractor], axis=3).astype(np.float32),
      "amplitudes": np.stack([true_amplitude, distractor_amplitude], axis=3).astype(np.float32),
      "noise_seed": noise_seed,
  }


def _splat_joint_major(peaks, amplitudes, heatmap_size: int, sigma: float):
  """[..., J, P, 2], [..., J, P] -> [..., J, H, W] sum of separable Gaussians (one matmul)."""
  sigma = check_sigma(sigma)  # Also a sigma read from a dataset's or a pool's metadata.
  peaks = tf.convert_to_tensor(peaks, tf.float32)
  amplitudes = tf.convert_to_tensor(amplitudes, tf.float32)
  grid = tf.range(int(heatmap_size), dtype=tf.float32)
  scale = -0.5 / sigma**2
  gx = tf.exp(scale * tf.square(grid - peaks[..., 0:1]))  # [..., J, P, W]
  gy = tf.exp(scale * tf.square(grid - peaks[..., 1:2])) * amplitudes[..., None]  # [..., J, P, H]
  return tf.matmul(gy, gx, transpose_a=True)  # [..., J, H, W]


def _to_channels_last(maps):
  """[..., J, H, W] -> [..., H, W, J]."""
  rank = maps.shape.rank
  return tf.transpose(maps, list(range(rank - 3)) + [rank - 2, rank - 1, rank - 3])


def splat_peaks(peaks, amplitudes, heatmap_size: int, sigma: float):
  """Sum of Gaussians per joint (no noise).

  Args:
    peaks: [..., J, P, 2] peak positions in heatmap px (x = column, y = row).
    amplitudes: [..., J, P] peak heights.
    heatmap_size: H = W.
    sigma: Gaussian std in px.

  Returns:
    [..., H, W, J] float32.
  """
  return _to_channels_last(_splat_joint_major(peaks, amplitudes, heatmap_size, sigma))


def noise_grid_size(heatmap_size: int) -> int:
  """Side of the coarse grid the background noise is drawn on (heatmap_size / 4, at least 2)."""
  return max(2, int(heatmap_size) // 4)


def _upsampling_matrix(heatmap_size: int) -> np.ndarray:
  """[H, C] bilinear interpolation from the coarse noise grid, rows of unit L2 norm.

  Unit rows keep the per-pixel noise std equal to the coarse samples' std (1) everywhere.
  """
  coarse = noise_grid_size(heatmap_size)
  step = heatmap_size / coarse
  centres = (np.arange(coarse) + 0.5) * step - 0.5
  weights = np.maximum(0.0, 1.0 - np.abs(np.arange(heatmap_size)[:, None] - centres) / step)
  return (weights / np.linalg.norm(weights, axis=1, keepdims=True)).astype(np.float32)


def _bits_to_normal(bits):
  """uint32 random bits -> float32 standard normal samples (same shape), always finite.

  The top 24 bits k give the uniform u = (k + 0.5) / 2^24 in (0, 1) and the sample is the
  normal inverse CDF of u. float32 cannot hold k + 0.5 for k >= 2^23 (k = 2^24 - 1 would round
  to u = 1, an infinite sample), so the upper half uses the symmetry ndtri(u) = -ndtri(1 - u)
  with 1 - u = (2^24 - 1 - k + 0.5) / 2^24: every uniform is exact, |z| <= 5.42, and k and
  2^24 - 1 - k give opposite samples.
  """
  k = tf.bitwise.right_shift(tf.convert_to_tensor(bits, tf.uint32), 8)  # 24 random bits.
  upper = k >= 2**23
  mirrored = tf.where(upper, tf.constant(2**24 - 1, tf.uint32) - k, k)  # In [0, 2^23).
  lower_tail = (tf.cast(mirrored, tf.float32) + 0.5) * (1.0 / 2**24)  # Exact, in (0, 1/2).
  z = tf.math.ndtri(lower_tail)
  return tf.where(upper, -z, z)


def _stateless_normal(shape, seed):
  """Standard normal samples from Philox bits, identical eagerly, in graphs and under XLA.

  `tf.random.stateless_normal` turns the same Philox bits into different floats on the CPU
  kernel and under XLA; the raw uint32 bits agree, so the conversion is done here
  (`_bits_to_normal`).
  """
  bits = tf.random.stateless_uniform(shape, seed=seed, minval=None, maxval=None, dtype=tf.uint32,
                                     alg="philox")
  return _bits_to_normal(bits)


def render_heatmaps(peaks, amplitudes, heatmap_size: int, sigma: float, noise_level: float,
                    noise_seed):
  """Renders detector heatmaps from the compact state.

  Background noise is spatially smooth, like a network's spurious responses: standard normal
  samples on a coarse (heatmap_size / 4)^2 grid per view and joint, bilinearly upsampled with
  unit-norm weights (so each pixel's std is exactly `noise_level`). `noise_seed` indexes frames:
  its shape is the frames' leading shape L (a scalar for one frame, [N] for a batch); a frame's
  samples come from Philox with seed [noise_seed, 0] (`_stateless_normal`), so the result does not
  depend on batching or on eager / graph / tf.data execution.

  Args:
    peaks: [*L, ..., J, P, 2] peak positions in heatmap px.
    amplitudes: [*L, ..., J, P] peak heights.
    heatmap_size: H = W in px.
    sigma: Gaussian std in px.
    noise_level: Std of the additive background noise.
    noise_seed: [*L] integer seeds, one per frame.

  Returns:
    [*L, ..., H, W, J] float32 heatmaps.
  """
  maps = _splat_joint_major(peaks, amplitudes, heatmap_size, sigma)  # [*L, ..., J, H, W]
  if float(noise_level) != 0.0:
    noise_seed = tf.cast(tf.convert_to_tensor(noise_seed), tf.int64)
    lead = noise_seed.shape.rank
    if lead is None:
      raise ValueError("noise_seed must have a known rank")
    coarse = noise_grid_size(heatmap_size)
    frame_shape = tf.concat([tf.shape(maps)[lead:-2], [coarse, coarse]], axis=0)

    def frame_noise(seed):
      return _stateless_normal(frame_shape, tf.stack([seed, tf.zeros_like(seed)]))

    if lead == 0:
      samples = frame_noise(noise_seed)
    else:
      samples = tf.map_fn(frame_noise, tf.reshape(noise_seed, [-1]),
                          fn_output_signature=tf.float32)
      samples = tf.reshape(samples, tf.concat([tf.shape(noise_seed), frame_shape], axis=0))
    upsample = tf.constant(_upsampling_matrix(int(heatmap_size)))
    noise = tf.matmul(tf.matmul(upsample, samples), upsample, transpose_b=True)
    maps = maps + float(noise_level) * noise
  return _to_channels_last(maps)
