"""Self-calibration of a rig's epipolar geometry from labelled 2D joints (H&Z, 2nd ed., ch. 11).

A rig given without calibration but with K labelled frames (2D joints per view) still determines
the fundamental matrix of every camera pair: each labelled (frame, joint) seen in views u and v is
one correspondence, and 8 or more in general position fix F up to scale. The estimate then
initializes the fusion's theta exactly as the calibrated init does
(`mf_tf.fusion.calibrated.self_calibrated_theta`).

Conventions (as in `mf_tf.geometry.epipolar`): points are [N, 2] (x = column, y = row) in heatmap
or image pixels, undistorted where the cameras carry lens distortion; F of the ordered pair
(source -> target) satisfies x_target^T F x_source = 0 and has unit Frobenius norm; pairs come in
`mf_tf.geometry.rig.ordered_pairs` order (grouped by target view).

Pipeline per unordered pair (u, v), u < v:
  1. pool the correspondences finite (and valid) in both views over all frames and joints;
  2. RANSAC over minimal 8-point samples (H&Z Alg. 11.6 with the 8-point solver in place of the
     7-point one), scored by the truncated squared Sampson distance (MSAC, Torr & Zisserman 2000);
  3. refit by the normalized eight-point algorithm (H&Z Alg. 11.1) on all inliers, then a few
     iterations of Sampson-reweighted least squares (IRLS) that move the algebraic fit towards
     the first-order geometric error (H&Z 11.4.3);
  4. F(v -> u) = F(u -> v)^T.
"""

from __future__ import annotations

import numpy as np

from mf_tf.geometry.rig import ordered_pairs, pair_index

MIN_CORRESPONDENCES = 8
_CHUNK = 128  # RANSAC hypotheses scored at once: bounds the [chunk, N, 3] scoring arrays.


# ------------------------------------------------------------------------------- validation


def _check_points(points, name: str) -> np.ndarray:
  """[N, 2] float64 array of finite points, or ValueError naming `name` and the bad value."""
  array = np.asarray(points, np.float64)
  if array.ndim != 2 or array.shape[1] != 2:
    raise ValueError(f"{name} has shape {array.shape}, expected [N, 2] points (x, y)")
  bad = ~np.all(np.isfinite(array), axis=1)
  if np.any(bad):
    rows = np.flatnonzero(bad)
    raise ValueError(f"{name} holds {rows.size} non-finite point(s), first at row {rows[0]}: "
                     f"{array[rows[0]].tolist()}; expected finite pixel coordinates")
  return array


def _check_pair(x_source, x_target) -> tuple[np.ndarray, np.ndarray]:
  x_source = _check_points(x_source, "x_source")
  x_target = _check_points(x_target, "x_target")
  if x_source.shape[0] != x_target.shape[0]:
    raise ValueError(f"x_source has {x_source.shape[0]} points and x_target "
                     f"{x_target.shape[0]}, expected one target point per source point")
  if x_source.shape[0] < MIN_CORRESPONDENCES:
    raise ValueError(f"a fundamental matrix needs at least {MIN_CORRESPONDENCES} "
                     f"correspondences, got N={x_source.shape[0]}")
  return x_source, x_target


def _check_fundamental(F) -> np.ndarray:
  F = np.asarray(F, np.float64)
  if F.ndim < 2 or F.shape[-2:] != (3, 3):
    raise ValueError(f"F has shape {F.shape}, expected [..., 3, 3]")
  if not np.all(np.isfinite(F)):
    raise ValueError(f"F holds non-finite values: {F.tolist()}")
  return F


# ------------------------------------------------------------------------------- eight-point


def hartley_normalization(points: np.ndarray) -> np.ndarray:
  """Similarity T moving the centroid to the origin, mean distance sqrt(2) (H&Z 4.4.4).

  Args:
    points: [N, 2] pixels (N >= 1).

  Returns:
    [3, 3] T, so that T [x, y, 1]^T are the conditioned homogeneous points.
  """
  points = np.asarray(points, np.float64)
  centroid = points.mean(axis=0)
  mean_distance = np.mean(np.linalg.norm(points - centroid, axis=1))
  scale = np.sqrt(2.0) / max(mean_distance, 1e-12)
  return np.array([[scale, 0.0, -scale * centroid[0]],
                   [0.0, scale, -scale * centroid[1]],
                   [0.0, 0.0, 1.0]])


def _homogeneous(points: np.ndarray) -> np.ndarray:
  return np.concatenate([points, np.ones_like(points[..., :1])], axis=-1)


def _linear_rank2(x_source: np.ndarray, x_target: np.ndarray, weights=None) -> np.ndarray:
  """Steps (ii)-(iii) of H&Z Alg. 11.1 on conditioned points, batched.

  Args:
    x_source, x_target: [..., n, 3] conditioned homogeneous points, n >= 8.
    weights: None or [..., n] row weights of the linear system.

  Returns:
    [..., 3, 3] rank-2 F with x_target^T F x_source = 0 in the conditioned coordinates.
  """
  # Row of A for one correspondence: vec(x_target x_source^T), so A f = x_target^T F x_source with
  # f = F flattened row-major (H&Z Eq. 11.3).
  rows = (x_target[..., :, None] * x_source[..., None, :]).reshape(x_source.shape[:-1] + (9,))
  if weights is not None:
    rows = rows * weights[..., None]
  # The right singular vector of the smallest singular value (H&Z A5.3); via A^T A (9x9) so that
  # the cost does not grow with n. Conditioning keeps A^T A's spread small (H&Z 4.4.4).
  _, vectors = np.linalg.eigh(np.swapaxes(rows, -1, -2) @ rows)
  F = vectors[..., :, 0].reshape(vectors.shape[:-2] + (3, 3))
  # Closest rank-2 matrix in Frobenius norm: zero the smallest singular value (H&Z 11.1.1).
  u, s, vt = np.linalg.svd(F)
  s[..., 2] = 0.0
  return (u * s[..., None, :]) @ vt


def _unit_norm(F: np.ndarray) -> np.ndarray:
  """F / ||F||_F with the sign fixed so that the entry of largest magnitude is positive."""
  flat = F.reshape(F.shape[:-2] + (9,))
  largest = np.take_along_axis(flat, np.argmax(np.abs(flat), axis=-1)[..., None], axis=-1)
  sign = np.where(largest < 0, -1.0, 1.0)[..., None]
  norm = np.linalg.norm(flat, axis=-1, keepdims=True)
  return (flat * sign / np.maximum(norm, 1e-300)).reshape(F.shape)


def normalized_eight_point(x_source, x_target, weights=None) -> np.ndarray:
  """Normalized eight-point algorithm, H&Z Alg. 11.1 (with optional row weights).

  (i) Hartley normalization of each image's points (`hartley_normalization`); (ii) linear
  solution of A f = 0 by SVD; (iii) rank-2 enforcement; (iv) denormalization F = T_t^T F' T_s.

  Args:
    x_source: [N, 2] points in the source view (pixels), N >= 8.
    x_target: [N, 2] corresponding points in the target view (pixels).
    weights: None or [N] non-negative weights of the algebraic residuals (e.g. inverse Sampson
      gradients for reweighted least squares); at least 8 must be positive.

  Returns:
    [3, 3] F with x_target^T F x_source = 0, rank 2, unit Frobenius norm, sign fixed so that its
    largest-magnitude entry is positive.

  Raises:
    ValueError: wrong shapes, non-finite points or weights, or fewer than 8 correspondences.
  """
  x_source, x_target = _check_pair(x_source, x_target)
  if weights is not None:
    weights = np.asarray(weights, np.float64)
    if weights.shape != (x_source.shape[0],):
      raise ValueError(f"weights has shape {weights.shape}, expected [N] = ({x_source.shape[0]},)")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
      raise ValueError(f"weights must be finite and non-negative, got min {np.nanmin(weights)} "
                       f"and {np.count_nonzero(~np.isfinite(weights))} non-finite")
    num_positive = int(np.count_nonzero(weights > 0))
    if num_positive < MIN_CORRESPONDENCES:
      raise ValueError(f"a fundamental matrix needs at least {MIN_CORRESPONDENCES} "
                       f"correspondences with positive weight, got {num_positive}")
    used = weights > 0
    x_source, x_target, weights = x_source[used], x_target[used], weights[used]
    weights = weights / weights.max()
  T_source = hartley_normalization(x_source)
  T_target = hartley_normalization(x_target)
  conditioned = _linear_rank2(_homogeneous(x_source) @ T_source.T,
                              _homogeneous(x_target) @ T_target.T, weights)
  return _unit_norm(T_target.T @ conditioned @ T_source)


# ------------------------------------------------------------------------------- distances


def _sampson_terms(F: np.ndarray, x_source: np.ndarray, x_target: np.ndarray):
  """Algebraic residual x_t^T F x_s and Sampson denominator, each [..., N]."""
  source, target = _homogeneous(x_source), _homogeneous(x_target)
  lines_target = np.einsum("...ij,nj->...ni", F, source)  # F x_s: lines in the target image.
  lines_source = np.einsum("...ji,nj->...ni", F, target)  # F^T x_t: lines in the source image.
  residual = np.einsum("ni,...ni->...n", target, lines_target)
  denominator = (np.sum(lines_target[..., :2] ** 2, axis=-1)
                 + np.sum(lines_source[..., :2] ** 2, axis=-1))
  return residual, denominator


def sampson_distance(F, x_source, x_target) -> np.ndarray:
  """First-order geometric error of correspondences, in pixels (H&Z Eq. 11.9).

  H&Z Eq. 11.9 gives the squared Sampson error
      (x_t^T F x_s)^2 / ((F x_s)_1^2 + (F x_s)_2^2 + (F^T x_t)_1^2 + (F^T x_t)_2^2);
  this returns its square root, the first-order distance of (x_s, x_t) in R^4 to the variety
  x_t^T F x_s = 0 (independent of F's scale).

  Args:
    F: [3, 3] (or [..., 3, 3], broadcast over hypotheses) with x_target^T F x_source = 0.
    x_source: [N, 2] source points, pixels.
    x_target: [N, 2] target points, pixels.

  Returns:
    [N] (or [..., N]) non-negative distances in pixels.
  """
  F = _check_fundamental(F)
  x_source = _check_points(x_source, "x_source")
  x_target = _check_points(x_target, "x_target")
  if x_source.shape != x_target.shape:
    raise ValueError(f"x_source has shape {x_source.shape} and x_target {x_target.shape}, "
                     "expected the same [N, 2]")
  residual, denominator = _sampson_terms(F, x_source, x_target)
  return np.abs(residual) / np.sqrt(np.maximum(denominator, 1e-300))


# ------------------------------------------------------------------------------- robust fit


def robust_fundamental(x_source, x_target, *, threshold_px: float = 1.0, iterations: int = 500,
                       seed: int = 0, refine_iterations: int = 3):
  """RANSAC (MSAC scoring) over 8-point samples, then a refit on the inliers (H&Z 11.6).

  Every hypothesis is the eight-point solution of a random minimal sample, conditioned by one
  Hartley normalization of all points. Its cost is sum_i min(d_i^2, threshold^2) with d_i the
  Sampson distance; the cheapest hypothesis wins. The inliers (d_i < threshold) are then refit by
  `normalized_eight_point`, followed by `refine_iterations` refits weighted by the inverse Sampson
  gradient of the previous estimate (so that the weighted algebraic residual is the Sampson
  distance), recomputing the inliers each time.

  Args:
    x_source: [N, 2] source points, pixels, N >= 8.
    x_target: [N, 2] corresponding target points, pixels.
    threshold_px: Inlier threshold on the Sampson distance, pixels (about 2-3 times the label
      noise's standard deviation).
    iterations: Number of random minimal samples.
    seed: Seed of the sampling; equal arguments give equal results.
    refine_iterations: Sampson-reweighted refits after the plain inlier refit.

  Returns:
    F: [3, 3] with x_target^T F x_source = 0, unit Frobenius norm.
    inlier_mask: [N] bool, Sampson distance under `threshold_px` for the returned F.

  Raises:
    ValueError: wrong shapes, non-finite points, fewer than 8 correspondences, or a non-positive
      threshold or iteration count.
  """
  x_source, x_target = _check_pair(x_source, x_target)
  if not np.isfinite(threshold_px) or threshold_px <= 0:
    raise ValueError(f"threshold_px must be a positive number of pixels, got {threshold_px!r}")
  if int(iterations) < 1 or int(refine_iterations) < 0:
    raise ValueError(f"iterations={iterations} and refine_iterations={refine_iterations}: "
                     "expected iterations >= 1 and refine_iterations >= 0")
  num_points = x_source.shape[0]
  T_source, T_target = hartley_normalization(x_source), hartley_normalization(x_target)
  source = _homogeneous(x_source) @ T_source.T
  target = _homogeneous(x_target) @ T_target.T
  rng = np.random.default_rng(seed)
  threshold2 = float(threshold_px) ** 2
  best_F, best_cost = None, np.inf
  for start in range(0, int(iterations), _CHUNK):
    count = min(_CHUNK, int(iterations) - start)
    # Eight distinct indices per hypothesis: the first 8 of a random permutation.
    samples = np.argsort(rng.random((count, num_points)), axis=1)[:, :MIN_CORRESPONDENCES]
    hypotheses = T_target.T @ _linear_rank2(source[samples], target[samples]) @ T_source
    residual, denominator = _sampson_terms(hypotheses, x_source, x_target)
    squared = residual ** 2 / np.maximum(denominator, 1e-300)
    cost = np.minimum(squared, threshold2).sum(axis=1)
    cost = np.where(np.isfinite(cost), cost, np.inf)
    index = int(np.argmin(cost))
    if cost[index] < best_cost:
      best_F, best_cost = hypotheses[index], cost[index]
  if best_F is None:  # Every hypothesis was degenerate: fall back to the plain fit.
    best_F = normalized_eight_point(x_source, x_target)
  F = _unit_norm(best_F)
  distance = sampson_distance(F, x_source, x_target)
  for step in range(1 + int(refine_iterations)):
    inliers = distance < threshold_px
    if np.count_nonzero(inliers) < MIN_CORRESPONDENCES:
      break
    weights = None
    if step > 0:
      _, denominator = _sampson_terms(F, x_source[inliers], x_target[inliers])
      weights = 1.0 / np.sqrt(np.maximum(denominator, 1e-300))
    F = normalized_eight_point(x_source[inliers], x_target[inliers], weights)
    distance = sampson_distance(F, x_source, x_target)
  return F, distance < threshold_px


# ------------------------------------------------------------------------------- rigs


def estimate_pair_fundamentals(joints2d, num_views: int, valid=None, **kwargs):
  """Fundamental matrices of every ordered pair of an uncalibrated rig from labelled joints.

  For each unordered pair (u, v), u < v, every (frame, joint) finite in both views (and valid in
  both, when `valid` is given) is one correspondence; F(u -> v) comes from `robust_fundamental`
  and F(v -> u) = F(u -> v)^T (H&Z result 9.3).

  Args:
    joints2d: [K, V, J, 2] labelled joints (x, y) per frame and view, pixels (heatmap pixels for
      `theta_from_fundamental`), undistorted; NaN marks an unlabelled joint.
    num_views: V, checked against joints2d.
    valid: None or [K, V, J] bool (or {0, 1}) mask of usable labels.
    **kwargs: Keyword arguments of `robust_fundamental` (threshold_px, iterations, seed,
      refine_iterations); the seed of pair number q (in u < v order) is seed + q.

  Returns:
    F: [V (V - 1), 3, 3] float64 in `ordered_pairs(num_views)` order, x_target^T F x_source = 0.
    info: dict of [V (V - 1)] int arrays in the same order: "num_correspondences", "num_inliers";
      and "pairs" [V (V - 1), 2] (source, target).

  Raises:
    ValueError: wrong shapes, or a pair with fewer than 8 usable correspondences.
  """
  joints2d = np.asarray(joints2d, np.float64)
  if joints2d.ndim != 4 or joints2d.shape[-1] != 2:
    raise ValueError(f"joints2d has shape {joints2d.shape}, expected [K, V, J, 2]")
  if joints2d.shape[1] != int(num_views):
    raise ValueError(f"joints2d has {joints2d.shape[1]} views (shape {joints2d.shape}), "
                     f"expected num_views={num_views}")
  pairs = ordered_pairs(int(num_views))
  usable = np.all(np.isfinite(joints2d), axis=-1)  # [K, V, J]
  if valid is not None:
    valid = np.asarray(valid)
    if valid.shape != joints2d.shape[:-1]:
      raise ValueError(f"valid has shape {valid.shape}, expected [K, V, J] = "
                       f"{joints2d.shape[:-1]}")
    usable &= valid.astype(bool)
  seed = int(kwargs.pop("seed", 0))
  fundamental = np.zeros((len(pairs), 3, 3))
  num_correspondences = np.zeros(len(pairs), np.int64)
  num_inliers = np.zeros(len(pairs), np.int64)
  unordered = [(u, v) for u in range(num_views) for v in range(u + 1, num_views)]
  for number, (u, v) in enumerate(unordered):
    both = usable[:, u] & usable[:, v]  # [K, J]
    count = int(np.count_nonzero(both))
    if count < MIN_CORRESPONDENCES:
      raise ValueError(f"views ({u}, {v}) share {count} labelled joints, expected at least "
                       f"{MIN_CORRESPONDENCES} to estimate their fundamental matrix")
    F, inliers = robust_fundamental(joints2d[:, u][both], joints2d[:, v][both],
                                    seed=seed + number, **kwargs)
    forward, backward = pair_index(u, v, num_views), pair_index(v, u, num_views)
    fundamental[forward], fundamental[backward] = F, F.T
    num_correspondences[[forward, backward]] = count
    num_inliers[[forward, backward]] = int(np.count_nonzero(inliers))
  info = {"num_correspondences": num_correspondences, "num_inliers": num_inliers, "pairs": pairs}
  return fundamental, info
