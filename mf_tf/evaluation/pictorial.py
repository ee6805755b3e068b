"""Recursive pictorial structure model (RPSM) for 3D pose from multi-view heatmaps.

After Qiu et al., "Cross View Fusion for 3D Human Pose Estimation" (ICCV 2019), section 4, which
MetaFuse (section 5.2) uses for its 3D results. A 3D pose is a labelling of the joint tree with
points in space; its score is

    sum_j unary_j(X_j) + sum_{(p, c) limbs} pairwise_pc(X_p, X_c),

    unary_j(X)          = log(eps + mean_v h_{v,j}(pi_v(X)))      heatmap evidence, all views
    pairwise_pc(Xp, Xc) = -0.5 (max(||Xp - Xc| - L_pc| - tau_pc, 0) / sigma)^2

with pi_v the camera projection including lens distortion, h_{v,j} each view's heatmap clipped
at 0, scaled to peak 1 and interpolated (bicubic by default, see `sample_heatmaps` for why not
bilinear), L_pc the mean limb length of the TRAINING poses
(`mean_limb_lengths`). Averaging the views (CrossView sums them) keeps one view's wrong peak
from vetoing a location the other views agree on. The limb prior is flat within a tolerance
tau_pc = limb_tolerance * L_pc (CrossView uses an indicator of |d - L| < tolerance) with Gaussian
tails outside: people's limbs differ from the training mean by several percent, and a prior
peaked at the mean would pull every limb of a differently proportioned person to the mean length
(the heatmap evidence is weak at the centimetre scale: a 64 x 64 whole-image heatmap pixel spans
about 70 mm in Human3.6M), while the tails still rank impossible limbs below possible ones.

Inference is exact max-product (Viterbi) on the tree over a discrete set of candidate points:
  1. Coarse: one cubic grid of `coarse_bins`^3 cells of side `box_size_mm`, centred on a root
     estimate (e.g. the triangulated pelvis; never the ground truth), shared by all joints.
  2. Refinement, `refine_iterations` times: each joint gets a local grid of `refine_bins`^3
     points spanning +-(previous spacing) around its current estimate (spacing halves for the
     default 5 bins), and the tree is solved again. The limb prior follows the grid, since cells
     cannot resolve lengths finer than a cell: tolerance tau_pc + spacing and tail sigma
     max(limb_sigma_mm, spacing). Options are gathered in `PictorialOptions`.

The messages are computed one tree level at a time (all limbs of a depth at once), vectorized
over batch, limbs and cells; the memory of a level is [B, limbs, G, G] for G candidates per joint,
so `rpsm` processes the batch in chunks of about `max_elements` floats. Each level is one
XLA computation (`_limb_messages`; against eager: measured in BUILD.md, benchmarks/rpsm_bench.py).

Shapes: B batch, V views, H x W heatmap, J joints, G candidate points per joint.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from mf_tf.data.joints import get_joint_set
from mf_tf.geometry.camera import project_points_tf

_UNARY_EPS = 1e-3  # Floor of the mean peak-normalized heatmap: bounds the penalty of no evidence.


def mean_limb_lengths(poses3d, joint_set) -> np.ndarray:
  """Mean limb length of each joint to its parent over training poses.

  Args:
    poses3d: [N, J, 3] training 3D poses in millimetres (NaN joints are skipped).
    joint_set: JointSet or name; defines the parents.

  Returns:
    [J] float64 mean distance of joint j to its parent, millimetres; 0 for the root. Indexed by
    the child joint, as `JointSet.parents`.
  """
  joint_set = get_joint_set(joint_set)
  poses3d = np.asarray(poses3d, np.float64)
  if poses3d.ndim != 3 or poses3d.shape[1:] != (joint_set.num_joints, 3):
    raise ValueError(
        f"poses3d has shape {poses3d.shape}, expected [N, {joint_set.num_joints}, 3] for joint "
        f"set {joint_set.name!r}")
  parents = joint_set.parent_array
  child = np.flatnonzero(parents >= 0)
  lengths = np.linalg.norm(poses3d[:, child] - poses3d[:, parents[child]], axis=-1)  # [N, L]
  if np.any(np.all(~np.isfinite(lengths), axis=0)):
    missing = [joint_set.names[c] for c in child[np.all(~np.isfinite(lengths), axis=0)]]
    raise ValueError(f"no training pose has a finite length for the limbs ending at {missing}")
  out = np.zeros(joint_set.num_joints)
  out[child] = np.nanmean(lengths, axis=0)
  return out


def heatmap_image_scale(rig, heatmap_size) -> np.ndarray:
  """[V, 2] (W / width, H / height): image pixels -> heatmap pixels per view."""
  height, width = (heatmap_size, heatmap_size) if np.isscalar(heatmap_size) else heatmap_size
  sizes = np.array([[camera.width, camera.height] for camera in rig.cameras], np.float64)
  return np.array([width, height], np.float64) / sizes


def _keys_weights(t):
  """Keys cubic convolution kernel (a = -0.5) at offsets t (any shape)."""
  t = tf.abs(t)
  near = (1.5 * t - 2.5) * t * t + 1.0
  far = ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0
  return tf.where(t <= 1.0, near, tf.where(t < 2.0, far, 0.0))


def sample_heatmaps(heatmaps, points2d, method: str = "bicubic"):
  """Samples each joint's heatmap at sub-pixel points, zero outside the heatmap.

  Args:
    heatmaps: [B, V, H, W, J].
    points2d: [B, V, J, G, 2] heatmap pixel coordinates (x = column, y = row, pixel centres at
      integers).
    method: "bilinear" (4 taps) or "bicubic" (Keys a = -0.5, 16 taps, clipped at 0). A
      bilinear interpolant of a peak is maximal exactly at a pixel centre, which biases every
      view's evidence to the nearest pixel; with whole-image heatmaps a pixel spans several
      centimetres (about 70 mm for Human3.6M at 64 x 64), so the default is bicubic, whose
      maximum follows the sub-pixel peak.

  Returns:
    [B, V, J, G] sampled values.
  """
  if method not in ("bilinear", "bicubic"):
    raise ValueError(f"method is {method!r}, expected 'bilinear' or 'bicubic'")
  heatmaps = tf.convert_to_tensor(heatmaps, tf.float32)
  points2d = tf.convert_to_tensor(points2d, tf.float32)
  height, width = tf.shape(heatmaps)[2], tf.shape(heatmaps)[3]
  flat = tf.transpose(heatmaps, [0, 1, 4, 2, 3])
  flat = tf.reshape(flat, tf.concat([tf.shape(flat)[:3], [height * width]], 0))  # [B, V, J, HW]
  x, y = points2d[..., 0], points2d[..., 1]
  x0, y0 = tf.floor(x), tf.floor(y)
  if method == "bilinear":
    taps = (0, 1)
    weight = lambda t: tf.maximum(1.0 - tf.abs(t), 0.0)  # noqa: E731
  else:
    taps = (-1, 0, 1, 2)
    weight = _keys_weights
  wx = [weight(x - (x0 + d)) for d in taps]
  wy = [weight(y - (y0 + d)) for d in taps]
  x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
  total = tf.zeros_like(x)
  for iy, dy in enumerate(taps):  # 4 or 16 static taps.
    for ix, dx in enumerate(taps):
      col, row = x0 + dx, y0 + dy
      inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
      index = tf.where(inside, row * width + col, 0)
      value = tf.gather(flat, index, batch_dims=3)
      total += tf.where(inside, value * wx[ix] * wy[iy], 0.0)
  return tf.nn.relu(total) if method == "bicubic" else total


def normalize_heatmaps(heatmaps):
  """[..., H, W, J] -> same, clipped at 0 and scaled so each channel's maximum is 1."""
  heatmaps = tf.nn.relu(tf.convert_to_tensor(heatmaps, tf.float32))
  peak = tf.reduce_max(heatmaps, axis=[-3, -2], keepdims=True)
  return heatmaps / tf.maximum(peak, 1e-12)


def heatmap_unary(heatmaps, points, cameras, scale, method: str = "bicubic"):
  """Log heatmap evidence of candidate 3D points, averaged over views.

  Args:
    heatmaps: [B, V, H, W, J] peak-normalized heatmaps (`normalize_heatmaps`).
    points: [B, J or 1, G, 3] candidate world points in millimetres (1: shared by all joints).
    cameras: `Rig.stacked()` dict (K [V,3,3], R [V,3,3], t [V,3], dist [V,5]).
    scale: [V, 2] image -> heatmap pixel scale (`heatmap_image_scale`).
    method: Heatmap interpolation, see `sample_heatmaps`.

  Returns:
    [B, J, G] log(eps + mean_v h_{v,j}(project_v(X))); points behind a camera get 0 evidence.
  """
  points = tf.convert_to_tensor(points, tf.float32)
  num_joints = tf.shape(heatmaps)[-1]
  batch, num_cells = tf.shape(points)[0], tf.shape(points)[2]
  points = tf.broadcast_to(points, tf.stack([batch, num_joints, num_cells, 3]))
  flat = tf.reshape(points, [batch, 1, -1, 3])  # [B, 1, J*G, 3] against cameras [V, ...]
  uv, depth = project_points_tf(flat, cameras["K"], cameras["R"], cameras["t"],
                                cameras["dist"], return_depth=True)  # [B, V, J*G, 2]
  uv = uv * tf.cast(scale, tf.float32)[:, None, :]
  num_views = tf.shape(uv)[1]
  uv = tf.reshape(uv, tf.stack([batch, num_views, num_joints, num_cells, 2]))
  in_front = tf.reshape(depth > 0.0, tf.stack([batch, num_views, num_joints, num_cells]))
  values = tf.where(in_front, sample_heatmaps(heatmaps, uv, method), 0.0)
  return tf.math.log(_UNARY_EPS + tf.reduce_mean(values, axis=1))


@tf.function(jit_compile=True, reduce_retracing=True)
def _compiled_unary(heatmaps, points, cameras, scale, method):
  """`heatmap_unary` as one XLA computation (16 gathers and the projection fused)."""
  return heatmap_unary(heatmaps, points, cameras, scale, method)


def _tree_levels(parents):
  """[(children, parents)] int arrays per tree depth, deepest first."""
  parents = np.asarray(parents)
  depth = np.zeros(len(parents), np.int64)
  for joint in range(len(parents)):
    current = joint
    while parents[current] >= 0:
      depth[joint] += 1
      current = parents[current]
  return [(np.flatnonzero(depth == d), parents[depth == d]) for d in range(depth.max(), 0, -1)]


def _squared_distances(a, b):
  """[..., Ga, 3], [..., Gb, 3] -> [..., Ga, Gb] squared distances (matmul expansion)."""
  aa = tf.reduce_sum(tf.square(a), axis=-1)[..., :, None]
  bb = tf.reduce_sum(tf.square(b), axis=-1)[..., None, :]
  return tf.maximum(aa + bb - 2.0 * tf.linalg.matmul(a, b, transpose_b=True), 0.0)


@tf.function(jit_compile=True, reduce_retracing=True)
def _limb_messages(child_score, parent_points, child_points, length, slack, sigma):
  """Max-product messages of n limbs (one tree level) to their parents.

  One XLA computation: the pairwise table is formed inside the max and argmax reductions
  rather than materialized separately.

  Args:
    child_score: [B, n, Gc] accumulated log score of each child candidate.
    parent_points: [B|1, n|1, Gp, 3] parent candidates (mm).
    child_points: [B|1, n|1, Gc, 3] child candidates (mm).
    length: [n] mean limb lengths (mm).
    slack: [n] flat-top half widths (mm).
    sigma: Scalar tail standard deviation (mm).

  Returns:
    message: [B, n, Gp] max over child candidates of score + pairwise.
    best: [B, n, Gp] int32 argmax child candidate.
  """
  distance = tf.sqrt(_squared_distances(parent_points, child_points))  # [B|1, n|1, Gp, Gc]
  excess = tf.nn.relu(tf.abs(distance - length[:, None, None]) - slack[:, None, None])
  total = child_score[:, :, None, :] - 0.5 * tf.square(excess / sigma)  # [B, n, Gp, Gc]
  return tf.reduce_max(total, axis=-1), tf.argmax(total, axis=-1, output_type=tf.int32)


def max_product_tree(unary, points, parents, limb_lengths, tolerance, sigma):
  """Exact MAP labelling of the joint tree by max-product (Viterbi) over candidate points.

  Args:
    unary: [B, J, G] log unary scores.
    points: [B or 1, J or 1, G, 3] candidate points (millimetres; 1 = shared), used only through
      the limb lengths they imply.
    parents: [J] parent index per joint, -1 for the root (a single tree).
    limb_lengths: [J] expected distance of each joint to its parent, millimetres.
    tolerance: [J] or scalar half width (mm) of the flat top of the limb-length prior.
    sigma: Scalar standard deviation of the prior's Gaussian tails, millimetres.

  Returns:
    [B, J] int32 index of the chosen candidate of every joint.
  """
  unary = tf.convert_to_tensor(unary, tf.float32)
  points = tf.convert_to_tensor(points, tf.float32)
  parents = np.asarray(parents)
  lengths = tf.constant(np.asarray(limb_lengths, np.float32))
  tolerance = tf.constant(np.broadcast_to(np.asarray(tolerance, np.float32), lengths.shape))
  num_joints = len(parents)
  batch, num_cells = tf.shape(unary)[0], tf.shape(unary)[2]
  shared = points.shape[1] == 1
  score = unary
  backpointers = tf.zeros(tf.stack([batch, num_joints, num_cells]), tf.int32)
  levels = _tree_levels(parents)
  sigma = tf.constant(sigma, tf.float32)
  for children, level_parents in levels:  # Tree depth (a handful of levels), leaves first.
    if shared:
      parent_points = child_points = points  # [B|1, 1, G, 3]
    else:
      parent_points = tf.gather(points, level_parents, axis=1)
      child_points = tf.gather(points, children, axis=1)
    message, best = _limb_messages(
        tf.gather(score, children, axis=1), parent_points, child_points,
        tf.gather(lengths, children), tf.gather(tolerance, children), sigma)
    # Several children may share a parent: sum their messages into it.
    incoming = tf.math.unsorted_segment_sum(
        tf.transpose(message, [1, 0, 2]), level_parents, num_joints)  # [J, B, G]
    score += tf.transpose(incoming, [1, 0, 2])
    backpointers = tf.tensor_scatter_nd_update(
        tf.transpose(backpointers, [1, 0, 2]), children[:, None],
        tf.transpose(best, [1, 0, 2]))
    backpointers = tf.transpose(backpointers, [1, 0, 2])
  root = int(np.flatnonzero(parents < 0)[0])
  choice = [None] * num_joints
  choice[root] = tf.argmax(score[:, root], axis=-1, output_type=tf.int32)  # [B]
  for children, level_parents in reversed(levels):  # Root to leaves.
    parent_choice = tf.stack([choice[p] for p in level_parents], axis=1)  # [B, n]
    chosen = tf.gather(tf.gather(backpointers, children, axis=1), parent_choice[..., None],
                       batch_dims=2)[..., 0]
    for k, child in enumerate(children):
      choice[int(child)] = chosen[:, k]
  return tf.stack(choice, axis=1)


def _cube(bins):
  """[bins^3, 3] integer offsets centred on 0 ((bins - 1) / 2 at the centre)."""
  axis = np.arange(bins, dtype=np.float64) - 0.5 * (bins - 1)
  grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
  return grid.reshape(-1, 3)


@dataclasses.dataclass(frozen=True)
class PictorialOptions:
  """Discretization and prior of `rpsm`.

  Attributes:
    box_size_mm: Side of the coarse cube centred on the root estimate.
    coarse_bins: Cells per axis of the coarse grid (CrossView: 16).
    refine_bins: Points per axis of each joint's local refinement grid; odd keeps the current
      estimate among the candidates, 5 halves the spacing per pass.
    refine_iterations: Refinement passes; the final spacing is
      box_size_mm / coarse_bins * (2 / (refine_bins - 1)) ** refine_iterations.
    limb_tolerance: Half width of the flat top of the limb-length prior, as a fraction of the
      mean limb length.
    limb_sigma_mm: Lower bound of the standard deviation of the prior's tails.
    sampling: Heatmap interpolation, "bicubic" or "bilinear" (see `sample_heatmaps`).
    max_elements: Memory bound: frames per chunk are chosen so that one tree level's
      [chunk, limbs, G, G] float32 tensor holds about this many elements (at least one frame;
      XLA fuses the level, so the tensor is usually not materialized).
  """

  box_size_mm: float = 2000.0
  coarse_bins: int = 16
  refine_bins: int = 5
  refine_iterations: int = 5
  limb_tolerance: float = 0.2
  limb_sigma_mm: float = 20.0
  sampling: str = "bicubic"
  max_elements: int = 1 << 26

  def __post_init__(self):
    if self.coarse_bins < 2 or self.refine_bins < 3 or self.refine_iterations < 0:
      raise ValueError(
          f"coarse_bins={self.coarse_bins}, refine_bins={self.refine_bins}, refine_iterations="
          f"{self.refine_iterations}: expected at least 2, 3 and 0")
    if not (self.box_size_mm > 0 and self.limb_sigma_mm > 0 and self.limb_tolerance >= 0):
      raise ValueError(
          f"box_size_mm={self.box_size_mm}, limb_sigma_mm={self.limb_sigma_mm} must be positive "
          f"and limb_tolerance={self.limb_tolerance} non-negative")
    if self.sampling not in ("bilinear", "bicubic"):
      raise ValueError(f"sampling is {self.sampling!r}, expected 'bilinear' or 'bicubic'")


def _rpsm_chunk(heatmaps, center, cameras, scale, parents, limb_lengths, options):
  """`rpsm` on one batch chunk; coordinates relative to `center` inside the DP."""
  center = tf.convert_to_tensor(center, tf.float32)[:, None, None, :]  # [B, 1, 1, 3]
  heatmaps = normalize_heatmaps(heatmaps)
  tolerance = options.limb_tolerance * limb_lengths
  scale = tf.constant(scale, tf.float32)

  def solve(local, spacing):
    unary = _compiled_unary(heatmaps, center + local, cameras, scale, options.sampling)
    return max_product_tree(unary, local, parents, limb_lengths, tolerance + spacing,
                            max(options.limb_sigma_mm, spacing))

  spacing = options.box_size_mm / options.coarse_bins
  grid = tf.constant((_cube(options.coarse_bins) * spacing).astype(np.float32))  # [G, 3]
  estimate = tf.gather(grid, solve(grid[None, None], spacing))  # [B, J, 3]
  offsets = _cube(options.refine_bins) / (0.5 * (options.refine_bins - 1))  # in [-1, 1]
  for _ in range(options.refine_iterations):
    step = tf.constant((spacing * offsets).astype(np.float32))  # spans +- the previous spacing
    spacing = spacing * 2.0 / (options.refine_bins - 1)
    local = estimate[:, :, None, :] + step  # [B, J, g, 3]
    estimate = tf.gather(local, solve(local, spacing)[..., None], batch_dims=2)[:, :, 0]
  return estimate + center[:, 0]


def rpsm(heatmaps, rig, joint_set, limb_lengths, center,
         options: PictorialOptions = PictorialOptions()) -> np.ndarray:
  """3D poses from multi-view heatmaps by the recursive pictorial structure model.

  Uses no ground truth: the grid is centred on `center` (e.g. the triangulated root) and the
  limb lengths come from training poses.

  Args:
    heatmaps: [B, V, H, W, J] heatmaps of the rig's views (any scale; each channel is clipped at
      0 and scaled to peak 1).
    rig: `Rig` whose cameras the heatmaps cover (whole image, anisotropic scale).
    joint_set: JointSet or name (parents define the tree).
    limb_lengths: [J] mean distance of each joint to its parent in millimetres
      (`mean_limb_lengths` of training poses).
    center: [B, 3] centre of the coarse grid in world millimetres.
    options: `PictorialOptions`.

  Returns:
    [B, J, 3] float64 world points in millimetres.
  """
  joint_set = get_joint_set(joint_set)
  heatmaps = tf.convert_to_tensor(heatmaps, tf.float32)
  if heatmaps.shape.rank != 5 or heatmaps.shape[1] != rig.num_views or (
      heatmaps.shape[-1] != joint_set.num_joints):
    raise ValueError(
        f"heatmaps have shape {heatmaps.shape}, expected [B, {rig.num_views}, H, W, "
        f"{joint_set.num_joints}] for rig {rig.name!r} and joint set {joint_set.name!r}")
  center = np.asarray(center, np.float64)
  if center.shape != (heatmaps.shape[0], 3) or not np.all(np.isfinite(center)):
    raise ValueError(f"center has shape {center.shape} or non-finite values, expected finite "
                     f"[{heatmaps.shape[0]}, 3]")
  limb_lengths = np.asarray(limb_lengths, np.float64)
  if limb_lengths.shape != (joint_set.num_joints,) or not np.all(np.isfinite(limb_lengths)):
    raise ValueError(f"limb_lengths has shape {limb_lengths.shape} or non-finite values, "
                     f"expected finite [{joint_set.num_joints}]")
  cameras = {k: tf.constant(v, tf.float32) for k, v in rig.stacked().items()}
  scale = heatmap_image_scale(rig, (heatmaps.shape[2], heatmaps.shape[3]))
  widest = max(len(children) for children, _ in _tree_levels(joint_set.parents))
  cells = max(options.coarse_bins, options.refine_bins) ** 3
  num_frames = heatmaps.shape[0]
  if num_frames == 0:
    return np.zeros((0, joint_set.num_joints, 3))
  # Balanced chunks of one size (the last padded with empty frames), so that the compiled
  # unary sees two shapes in all (coarse and refinement grids), whatever the frame count.
  limit = max(1, int(options.max_elements // (widest * cells * cells)))
  num_chunks = -(-num_frames // limit)
  chunk = -(-num_frames // num_chunks)
  padding = num_chunks * chunk - num_frames
  heatmaps = tf.pad(heatmaps, [[0, padding], [0, 0], [0, 0], [0, 0], [0, 0]])
  center = np.pad(center, [[0, padding], [0, 0]])
  outputs = []
  for start in range(0, num_chunks * chunk, chunk):  # Bounds memory; each chunk is vectorized.
    outputs.append(_rpsm_chunk(
        heatmaps[start:start + chunk], center[start:start + chunk], cameras, scale,
        joint_set.parents, limb_lengths, options).numpy())
  return np.concatenate(outputs, axis=0)[:num_frames].astype(np.float64)
