"""Eq. 1 with top-k fusion matrices (`sparsify_top_k`: values and source indices [P, HW, k]).

Two products over `mf_tf.fusion.ops`'s pair layout and message sum: `fuse_sparse` gathers (XLA,
gradients to the values); `fuse_sparse_blocks` multiplies by one sparse matrix per target view
(`sparse_fusion_blocks`; inference graphs such as the serving export, faster on CPUs: measured
in BUILD.md).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mf_tf.fusion import ops


def sparsify_top_k(matrices: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Keeps the k largest-magnitude entries of every row.

  Args:
    matrices: [P, HW_target, HW_source].
    k: Entries kept per row (clamped to HW_source).

  Returns:
    values: [P, HW_target, k] float, the kept weights (signed).
    indices: [P, HW_target, k] int32 source pixel indices.
  """
  matrices = tf.convert_to_tensor(matrices)
  k = min(int(k), int(matrices.shape[-1]))
  _, indices = tf.math.top_k(tf.abs(matrices), k=k, sorted=False)
  values = tf.gather(matrices, indices, batch_dims=2)
  return values, tf.cast(indices, tf.int32)


def fuse_sparse(heatmaps: tf.Tensor, values: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """Eq. 1 with top-k fusion matrices: fused_v[i] = h_v[i] + sum_{u, n} values[p, i, n] h_u[idx].

  Args:
    heatmaps: [B, V, H, W, J].
    values: [P, HW_target, k] from `sparsify_top_k`.
    indices: [P, HW_target, k] int32 source pixel indices.

  Returns:
    [B, V, H, W, J] fused heatmaps.
  """
  heatmaps = tf.convert_to_tensor(heatmaps)
  values = tf.cast(values, heatmaps.dtype)
  num_views = int(heatmaps.shape[1])
  num_joints = heatmaps.shape[4]
  sources, _ = ops.pair_layout(num_views)
  batch = tf.shape(heatmaps)[0]
  flat = ops.view_columns(heatmaps)
  _, pixels, k = values.shape
  chunk = _sparse_chunk(k, pixels * _static_or(heatmaps.shape[0], 8) * num_joints)
  indices = tf.cast(indices, tf.int32)

  def one_pair(args):
    pair_values, pair_indices, source = args  # [HW, k], [HW, k], scalar
    rows = tf.gather(flat, source)  # [HW, B * J]: one source view, cache-resident.
    if chunk == k:
      return tf.reduce_sum(pair_values[..., None] * tf.gather(rows, pair_indices), axis=1)
    # Bounded memory: `chunk` neighbours at a time instead of one [HW, k, B * J] block. Under
    # XLA each step is one fused gather-multiply-reduce loop.
    values_c = tf.transpose(tf.reshape(pair_values, [pixels, k // chunk, chunk]), [1, 0, 2])
    indices_c = tf.transpose(tf.reshape(pair_indices, [pixels, k // chunk, chunk]), [1, 0, 2])

    def body(step, total):
      gathered = tf.gather(rows, indices_c[step])  # [HW, chunk, B * J]
      return step + 1, total + tf.reduce_sum(values_c[step][..., None] * gathered, axis=1)

    total = tf.zeros([pixels, batch * num_joints], heatmaps.dtype)
    return tf.while_loop(lambda step, _: step < k // chunk, body, (0, total))[1]

  # Pairs one after another (each touches a single source view, which keeps the gathers in
  # cache: 5x faster than all pairs at once for the 4-view rig at 64x64), vectorized within.
  messages = tf.map_fn(one_pair, (values, indices, tf.constant(sources, tf.int32)),
                       fn_output_signature=heatmaps.dtype)  # [P, HW, B * J]
  return ops.add_messages(heatmaps, messages)


_SPARSE_CHUNK_ELEMENTS = 1 << 23  # Gathered elements per step of `fuse_sparse` (32 MiB float32):
# 8 neighbours per step at 64x64, batch 8, 17 joints, the fastest measured under XLA.


def _static_or(value, default):
  return default if value is None else int(value)


def _sparse_chunk(k: int, elements_per_neighbour: int) -> int:
  """Largest divisor of k whose gathered block stays under `_SPARSE_CHUNK_ELEMENTS`."""
  limit = max(1, _SPARSE_CHUNK_ELEMENTS // max(1, elements_per_neighbour))
  return max(d for d in range(1, k + 1) if k % d == 0 and d <= limit)


def sparse_fusion_blocks(values, indices, num_views: int) -> list:
  """Top-k fusion weights as one sparse [HW, V*HW] matrix per target view (`fuse_sparse_blocks`).

  Row i of target view v's matrix holds, in column `source * HW + j`, the weight of source pixel j
  for target pixel i of the pair (source -> v): the V - 1 pairs feeding v side by side, so that
  one sparse-dense product gives Eq. 1's whole sum for v.

  Args:
    values: [P, HW, k] kept weights (`sparsify_top_k`), `ordered_pairs` order.
    indices: [P, HW, k] their source pixel indices.
    num_views: V, with P = V (V - 1).

  Returns:
    V pairs (sparse_indices int32 [(V-1) HW k, 2] (row, column) sorted row-major,
    sparse_values float32 [(V-1) HW k]), one per target view. int32 indices (8 bytes an entry
    instead of 16) keep an exported top-k model small.
  """
  values, indices = np.asarray(values, np.float32), np.asarray(indices, np.int64)
  num_pairs, hw, k = values.shape
  ops.check_num_pairs(num_views, num_pairs, "rows of top-k fusion values")
  sources, per_target = ops.pair_layout(num_views)
  shape = (num_views, per_target * hw * k)  # Pairs are grouped by target view.
  rows = np.broadcast_to(np.arange(hw)[None, None, :, None],
                         (num_views, per_target, hw, k)).reshape(shape)
  cols = (sources.astype(np.int64).reshape(num_views, per_target, 1, 1) * hw
          + indices.reshape(num_views, per_target, hw, k)).reshape(shape)
  order = np.lexsort((cols, rows), axis=-1)
  rows, cols = np.take_along_axis(rows, order, -1), np.take_along_axis(cols, order, -1)
  weights = np.take_along_axis(values.reshape(shape), order, -1)
  return [(np.stack([rows[v], cols[v]], axis=1).astype(np.int32), weights[v])
          for v in range(num_views)]


def fuse_sparse_blocks(heatmaps: tf.Tensor, blocks) -> tf.Tensor:
  """Eq. 1 with top-k fusion matrices as sparse-dense products, one per target view.

  The same fused heatmaps as `fuse_sparse` (within float rounding: the sums run in another
  order) without its gathered [HW, k, B * J] blocks, for inference graphs (not XLA, no gradient
  to the indices). `tf.sparse.sparse_dense_matmul` runs on one thread per op on CPUs; the V
  independent products run in parallel. Measured on 2 CPU cores for 4 views at 64x64, k = 256,
  17 joints: about 35 ms a frame against 320-410 ms for `fuse_sparse`.

  Args:
    heatmaps: [B, V, H, W, J] with static V, H, W, J.
    blocks: V pairs (sparse_indices int32 or int64 [nnz, 2], sparse_values float32 [nnz]) from
      `sparse_fusion_blocks`.

  Returns:
    [B, V, H, W, J] fused heatmaps (before the temperature softmax).
  """
  heatmaps = tf.convert_to_tensor(heatmaps)
  num_views, height, width = (heatmaps.shape[i] for i in range(1, 4))
  hw = height * width
  flat = tf.reshape(ops.view_columns(heatmaps), [num_views * hw, -1])  # [V*HW, B*J]
  shape = tf.constant([hw, num_views * hw], tf.int64)
  # The raw op takes int32 indices (tf.sparse.SparseTensor would need int64).
  messages = tf.stack([
      tf.raw_ops.SparseTensorDenseMatMul(a_indices=indices, a_values=values, a_shape=shape,
                                         b=flat)
      for indices, values in blocks])  # [V, HW, B*J]
  return ops.add_view_messages(heatmaps, messages)
