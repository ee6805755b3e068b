"""NumPy oracles of the read-out and of paper Eq. 1, written from the definitions.

softmax_T(h) = exp(h / T) / sum_HW exp(h / T) per channel; the read-out takes the integer argmax
of softmax_T(h), refines each axis by the vertex of the parabola through the logarithms of the
peak and its two neighbours (clipped to half a pixel, none at the border), and scores the joint
with the softmax peak. Shared by the fusion and the serving read-out tests.
"""

import numpy as np

from mf_tf.geometry.rig import ordered_pairs


def gaussian_blobs(batch: int, views: int, size: int, joints: int, seed: int) -> np.ndarray:
  """[B, V, H, W, J] float32 Gaussian blobs (amplitude 1-3) at interior sub-pixel spots, noise."""
  rng = np.random.default_rng(seed)
  grid = np.arange(size, dtype=np.float64)
  centre = rng.uniform(2.0, size - 3.0, (batch, views, 1, 1, joints, 2))
  amplitude = rng.uniform(1.0, 3.0, (batch, views, 1, 1, joints))
  d2 = ((grid[None, :, None] - centre[..., 0]) ** 2 + (grid[:, None, None] - centre[..., 1]) ** 2)
  blobs = amplitude * np.exp(-d2 / (2 * 1.5 ** 2))
  return (blobs + 0.05 * rng.random(blobs.shape)).astype(np.float32)


def np_softmax(heatmaps, temperature):
  """softmax(h / T) over the H * W pixels of every channel of [..., H, W, J]."""
  h = np.asarray(heatmaps, np.float64)
  shape = h.shape
  flat = h.reshape(shape[:-3] + (-1, shape[-1])) / temperature
  flat = np.exp(flat - flat.max(axis=-2, keepdims=True))
  return (flat / flat.sum(axis=-2, keepdims=True)).reshape(shape)


def np_decode(probabilities):
  """Argmax with log-parabola sub-pixel refinement: ([..., J, 2] (x, y), [..., J] peak)."""
  p = np.moveaxis(np.asarray(probabilities, np.float64), -1, -3)  # [..., J, H, W]
  lead, (height, width) = p.shape[:-2], p.shape[-2:]
  coords, scores = np.zeros(lead + (2,)), np.zeros(lead)
  for index in np.ndindex(*lead):
    channel = p[index]
    row, col = np.unravel_index(np.argmax(channel), channel.shape)
    peak = channel[row, col]

    def offset(low, high, interior, centre=peak):
      if not interior or centre <= 0:
        return 0.0
      log_c, log_l, log_h = (np.log(max(v, 1e-10)) for v in (centre, low, high))
      curvature = log_l + log_h - 2.0 * log_c
      if curvature >= -1e-6:  # No maximum to refine.
        return 0.0
      return float(np.clip(0.5 * (log_l - log_h) / curvature, -0.5, 0.5))

    dx = offset(channel[row, max(col - 1, 0)], channel[row, min(col + 1, width - 1)],
                0 < col < width - 1)
    dy = offset(channel[max(row - 1, 0), col], channel[min(row + 1, height - 1), col],
                0 < row < height - 1)
    coords[index] = (col + dx, row + dy)
    scores[index] = peak
  return coords, scores


def np_read_out(heatmaps, temperature):
  """([..., J, 2] keypoints (x, y), [..., J] scores) of softmax_T(heatmaps)."""
  return np_decode(np_softmax(heatmaps, temperature))


def np_fuse(heatmaps, matrices):
  """Paper Eq. 1: fused_v = h_v + sum_{u != v} W_{u->v} h_u, pairs in `ordered_pairs` order."""
  h = np.asarray(heatmaps, np.float64)
  flat = h.reshape(h.shape[0], h.shape[1], h.shape[2] * h.shape[3], h.shape[-1])
  fused = flat.copy()
  for pair, (source, target) in enumerate(ordered_pairs(h.shape[1])):
    fused[:, target] += np.einsum("ij,bjc->bic", matrices[pair], flat[:, source])
  return fused.reshape(h.shape)
