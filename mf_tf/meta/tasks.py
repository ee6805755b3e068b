"""Meta-training tasks: ordered camera pairs of a rig, each with support and query frames.

A `FramePool` holds frames of one whole rig (e.g. the 20 Panoptic cameras) once: per frame and
view the true 2D joints, and the initial heatmaps either densely (precomputed by a backbone) or as
the simulated detector's compact state (peaks, amplitudes, noise seed: ~5 KB per frame for 20
views instead of ~5.6 MB of dense 64x64x17 heatmaps), from which a task's two views are rendered in
TF on demand.

`TaskSampler.sample(step)` draws a batch of tasks: T ordered pairs (source u -> target v) and, per
task, `support_size + query_size` distinct frames, split into support and query. Draws depend only
on (seed, step), so a resumed run sees exactly the batches an uninterrupted run would.

Targets are the codec's Gaussians of the TARGET view. Every joint inside the heatmap is supervised,
occluded or not: fusion exists to recover occluded joints from other views, and the synthetic
world knows where they are (as Human3.6M's motion capture does).
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import tensorflow as tf

from mf_tf import files
from mf_tf.data import codec as codec_lib
from mf_tf.data import detector as detector_lib
from mf_tf.geometry.rig import ordered_pairs
from mf_tf.meta.maml import TaskSplit

_COMPACT_KEYS = ("peaks", "amplitudes", "noise_seed")


@dataclasses.dataclass(frozen=True, eq=False)
class FramePool:
  """Frames of one rig for meta-training (see the module docstring).

  Attributes:
    joints2d: [N, V, J, 2] float32 true joints in heatmap px.
    visibility: [N, V, J] float32.
    heatmap_size: H = W.
    heatmaps: [N, V, H, W, J] float32 dense initial heatmaps, or None (compact state below).
    peaks: [N, V, J, P, 2] detector peaks (compact state), or None.
    amplitudes: [N, V, J, P] detector amplitudes, or None.
    noise_seed: [N] int64 detector noise seeds, or None.
    detector_sigma: Detector peak std in heatmap px (compact state only).
    detector_noise: Detector background noise std (compact state only).
  """

  joints2d: np.ndarray
  visibility: np.ndarray
  heatmap_size: int
  heatmaps: np.ndarray | None = None
  peaks: np.ndarray | None = None
  amplitudes: np.ndarray | None = None
  noise_seed: np.ndarray | None = None
  detector_sigma: float = 2.0
  detector_noise: float = 0.0

  def __post_init__(self):
    if self.joints2d.ndim != 4 or self.joints2d.shape[-1] != 2:
      raise ValueError(f"joints2d must be [N, V, J, 2], got shape {self.joints2d.shape}")
    num_frames, num_views, num_joints = self.joints2d.shape[:3]
    if self.visibility.shape != (num_frames, num_views, num_joints):
      raise ValueError(f"visibility has shape {self.visibility.shape}, expected "
                       f"{(num_frames, num_views, num_joints)}")
    size = int(self.heatmap_size)
    if self.heatmaps is not None:
      expected = (num_frames, num_views, size, size, num_joints)
      if self.heatmaps.shape != expected:
        raise ValueError(f"heatmaps have shape {self.heatmaps.shape}, expected {expected}")
    elif any(getattr(self, key) is None for key in _COMPACT_KEYS):
      raise ValueError("a FramePool needs dense heatmaps or the detector state "
                       f"{_COMPACT_KEYS}")

  @property
  def num_frames(self) -> int:
    return int(self.joints2d.shape[0])

  @property
  def num_views(self) -> int:
    return int(self.joints2d.shape[1])

  @property
  def num_joints(self) -> int:
    return int(self.joints2d.shape[2])

  @property
  def dense(self) -> bool:
    return self.heatmaps is not None

  @classmethod
  def from_frames(cls, frames: dict, heatmap_size: int, detector_params=None,
                  dense: bool = False) -> "FramePool":
    """From `mf_tf.data.world.simulate_frames` output (or any dict with the same keys).

    Args:
      frames: Has "joints2d", "visibility" and "heatmaps" and/or "peaks", "amplitudes",
        "noise_seed".
      heatmap_size: H = W.
      detector_params: The `DetectorParams` (64 px units) the frames were simulated with; None
        means the defaults. Used to render the compact state.
      dense: Keep dense heatmaps even when the compact state is present.
    """
    params = (detector_params or detector_lib.DetectorParams()).scaled(heatmap_size)
    compact = all(key in frames for key in _COMPACT_KEYS)
    keep_dense = "heatmaps" in frames and (dense or not compact)
    if not keep_dense and not compact:
      raise ValueError(f"frames need 'heatmaps' or {_COMPACT_KEYS}, got keys {sorted(frames)}")
    return cls(
        joints2d=np.asarray(frames["joints2d"], np.float32),
        visibility=np.asarray(frames["visibility"], np.float32),
        heatmap_size=int(heatmap_size),
        heatmaps=np.asarray(frames["heatmaps"], np.float32) if keep_dense else None,
        **({key: np.asarray(frames[key]) for key in _COMPACT_KEYS} if not keep_dense else {}),
        detector_sigma=float(params.sigma), detector_noise=float(params.noise_level))

  def save(self, path: str) -> None:
    """Writes the pool to one `.npz` file."""
    arrays = {key: value for key, value in dataclasses.asdict(self).items() if value is not None}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buffer = io.BytesIO()  # Written whole or not at all (a precompute pool takes minutes).
    np.savez(buffer, **arrays)
    files.write_atomic(path, buffer.getvalue())

  @classmethod
  def load(cls, path: str) -> "FramePool":
    """Reads a pool written by `save`."""
    if not os.path.isfile(path):
      raise FileNotFoundError(f"frame pool {path!r} does not exist (write it with "
                              "--mode=precompute)")
    with np.load(path) as data:
      values = {key: data[key] for key in data.files}
    for key in ("heatmap_size", "detector_sigma", "detector_noise"):
      values[key] = values[key].item()
    return cls(**values)

  def render(self, frames: tf.Tensor, views: tf.Tensor) -> tf.Tensor:
    """Initial heatmaps of chosen frames and views.

    Args:
      frames: [..., N] int32 frame indices.
      views: [..., 2] int32 view indices (same leading shape as `frames` minus N).

    Returns:
      [..., N, 2, H, W, J] float32.
    """
    frames = tf.convert_to_tensor(frames, tf.int32)
    views = tf.broadcast_to(tf.convert_to_tensor(views, tf.int32)[..., None, :],
                            tf.concat([tf.shape(frames), [2]], 0))
    rank = frames.shape.rank

    def pick(array):  # [N, V, ...] -> [..., N, 2, ...]
      return tf.gather(tf.gather(array, frames), views, batch_dims=rank)

    if self.dense:
      return pick(self.heatmaps)
    peaks, amplitudes = pick(self.peaks), pick(self.amplitudes)
    seeds = tf.gather(self.noise_seed, frames)
    return detector_lib.render_heatmaps(peaks, amplitudes, self.heatmap_size,
                                        self.detector_sigma, self.detector_noise, seeds)


def split_pairs(num_views: int, num_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits a rig's ordered pairs into meta-training and held-out pairs.

  Args:
    num_views: V >= 2.
    num_holdout: Pairs held out (0 <= num_holdout < V (V - 1)).
    seed: Seed of the split.

  Returns:
    (train_pairs [P - num_holdout, 2], holdout_pairs [num_holdout, 2]) int32 (source, target),
    each in `ordered_pairs` order.
  """
  pairs = ordered_pairs(num_views)
  if not 0 <= int(num_holdout) < len(pairs):
    raise ValueError(f"num_holdout={num_holdout}, expected 0 <= num_holdout < {len(pairs)} "
                     f"(the {num_views}-view rig's ordered pairs)")
  holdout = np.sort(np.random.default_rng(seed).permutation(len(pairs))[:int(num_holdout)])
  keep = np.setdiff1d(np.arange(len(pairs)), holdout)
  return pairs[keep], pairs[holdout]


def _check_finite_heatmaps(heatmaps, frames, pairs, dense: bool) -> None:
  """Raises ValueError naming the first pool frame and view whose [T, F, 2, ...] heatmaps are
  not finite (one device-side reduction when all are finite)."""
  if bool(tf.reduce_all(tf.math.is_finite(heatmaps))):
    return
  values = heatmaps.numpy()
  bad = ~np.isfinite(values).reshape(values.shape[:3] + (-1,)).all(axis=-1)  # [T, F, 2]
  task, row, side = (int(i) for i in np.argwhere(bad)[0])
  frame, view = int(frames.numpy()[task, row]), int(pairs.numpy()[task, side])
  source = ("dense heatmaps" if dense else
            "detector state (peaks, amplitudes, noise seed) renders heatmaps")
  raise ValueError(f"frame pool frame {frame}, view {view}: {source} with NaN or Inf "
                   f"({int(bad.sum())} of {bad.size} sampled frame views are non-finite); "
                   "expected finite initial heatmaps")


class TaskSampler:
  """Draws batches of pair tasks from a `FramePool`.

  Args:
    pool: The frames.
    pairs: [P, 2] int (source, target) ordered pairs tasks are drawn from.
    support_size: Frames per task for the inner step(s).
    query_size: Frames per task for the outer loss.
    target_sigma: Std (heatmap px) of the Gaussian targets.
    seed: Seed; batch `step` depends only on (seed, step).
  """

  def __init__(self, pool: FramePool, pairs, support_size: int, query_size: int,
               target_sigma: float, seed: int):
    pairs = np.asarray(pairs, np.int32).reshape(-1, 2)
    if len(pairs) == 0:
      raise ValueError("no camera pairs to draw tasks from")
    if pairs.min() < 0 or pairs.max() >= pool.num_views or np.any(pairs[:, 0] == pairs[:, 1]):
      raise ValueError(f"pairs must be distinct views in [0, {pool.num_views}), got {pairs}")
    if support_size < 1 or query_size < 1:
      raise ValueError(f"support_size={support_size} and query_size={query_size} must be >= 1")
    if support_size + query_size > pool.num_frames:
      raise ValueError(f"a task needs support_size + query_size = {support_size + query_size} "
                       f"distinct frames but the pool has {pool.num_frames}")
    self.pool = pool
    self.pairs = pairs
    self.support_size = int(support_size)
    self.query_size = int(query_size)
    self.seed = int(seed)
    self.codec = codec_lib.HeatmapCodec(pool.heatmap_size, target_sigma)

  def draw(self, step: int, num_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair and frame indices of batch `step`: ([T, 2] pairs, [T, support + query] frames)."""
    rng = np.random.default_rng([self.seed, int(step)])
    pair_rows = rng.choice(len(self.pairs), size=num_tasks, replace=num_tasks > len(self.pairs))
    count = self.support_size + self.query_size
    frames = np.stack([rng.choice(self.pool.num_frames, size=count, replace=False)
                       for _ in range(num_tasks)])
    return self.pairs[pair_rows], frames.astype(np.int32)

  def make_splits(self, pairs: np.ndarray, frames: np.ndarray) -> tuple[TaskSplit, TaskSplit]:
    """Support and query `TaskSplit`s for given pairs [T, 2] and frames [T, support + query].

    Raises:
      ValueError: a sampled frame's initial heatmaps hold NaN or Inf (named by pool frame and
        view), rather than training on them.
    """
    pairs = tf.constant(pairs, tf.int32)
    frames = tf.constant(frames, tf.int32)
    heatmaps = self.pool.render(frames, pairs)  # [T, F, 2, H, W, J]
    _check_finite_heatmaps(heatmaps, frames, pairs, self.pool.dense)
    target_views = tf.broadcast_to(pairs[:, None, 1:], tf.concat([tf.shape(frames), [1]], 0))
    joints = tf.gather(tf.gather(self.pool.joints2d, frames), target_views, batch_dims=2)[:, :, 0]
    target, weights = self.codec.encode(joints)  # [T, F, H, W, J], [T, F, J]
    cut = self.support_size
    support = TaskSplit(heatmaps[:, :cut], target[:, :cut], weights[:, :cut])
    query = TaskSplit(heatmaps[:, cut:], target[:, cut:], weights[:, cut:])
    return support, query

  def sample(self, step: int, num_tasks: int) -> tuple[TaskSplit, TaskSplit]:
    """Batch `step` of `num_tasks` tasks: (support, query) `TaskSplit`s."""
    return self.make_splits(*self.draw(step, num_tasks))
