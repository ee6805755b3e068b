"""Top-k fusion as one sparse matrix per target view: layout, and Eq. 1 equal to the other forms."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import ops
from mf_tf.fusion import sparse
from mf_tf.geometry.rig import pair_index


def _top_k(views, size, k, seed):
  rng = np.random.default_rng(seed)
  heatmaps = rng.normal(size=(3, views, size, size, 2)).astype(np.float32)
  matrices = rng.normal(size=(views * (views - 1), size * size, size * size)).astype(np.float32)
  values, indices = (t.numpy() for t in sparse.sparsify_top_k(matrices, k))
  return heatmaps, matrices, values, indices


def test_blocks_place_each_pair_at_its_source_columns():
  views, size, k = 3, 4, 3
  _, _, values, indices = _top_k(views, size, k, seed=0)
  hw = size * size
  blocks = sparse.sparse_fusion_blocks(values, indices, views)
  assert len(blocks) == views
  for target, (block_indices, block_values) in enumerate(blocks):
    assert block_indices.dtype == np.int32 and block_values.dtype == np.float32
    assert block_indices.shape == ((views - 1) * hw * k, 2)
    rows, cols = block_indices[:, 0].astype(np.int64), block_indices[:, 1].astype(np.int64)
    assert np.all(np.diff(rows * views * hw + cols) > 0)  # Row-major, no entry twice.
    dense = np.zeros((hw, views * hw), np.float32)
    dense[rows, cols] = block_values
    for source in range(views):  # Column block `source` holds W_{source -> target}, if any.
      want = np.zeros((hw, hw), np.float32)
      if source != target:
        pair = pair_index(source, target, views)
        np.put_along_axis(want, indices[pair], values[pair], axis=-1)
      np.testing.assert_array_equal(dense[:, source * hw:(source + 1) * hw], want)


@pytest.mark.parametrize("views, k", [(2, 16), (3, 5), (4, 7)])
def test_fuse_sparse_blocks_equals_fuse_sparse_and_dense_fuse(views, k):
  heatmaps, matrices, values, indices = _top_k(views, 4, k, seed=views)
  blocks = sparse.sparse_fusion_blocks(values, indices, views)
  got = sparse.fuse_sparse_blocks(tf.constant(heatmaps), blocks).numpy()
  np.testing.assert_allclose(got, sparse.fuse_sparse(heatmaps, values, indices).numpy(), atol=1e-5)
  kept = np.zeros_like(matrices)
  np.put_along_axis(kept, indices, values, axis=-1)
  np.testing.assert_allclose(got, ops.fuse(heatmaps, kept).numpy(), atol=1e-5)
  if k == 16:  # Every entry kept: the dense fusion itself.
    np.testing.assert_allclose(got, ops.fuse(heatmaps, matrices).numpy(), atol=1e-5)


def test_fuse_sparse_blocks_in_a_graph_with_any_batch():
  heatmaps, _, values, indices = _top_k(3, 4, 4, seed=7)
  blocks = [(tf.constant(i), tf.constant(v)) for i, v in sparse.sparse_fusion_blocks(values, indices,
                                                                                   3)]
  graph = tf.function(lambda h: sparse.fuse_sparse_blocks(h, blocks), input_signature=[
      tf.TensorSpec([None, 3, 4, 4, 2], tf.float32)])
  for batch in (1, 3):
    np.testing.assert_allclose(graph(heatmaps[:batch]).numpy(),
                               sparse.fuse_sparse(heatmaps[:batch], values, indices).numpy(),
                               atol=1e-5)


def test_blocks_reject_a_wrong_number_of_pairs():
  _, _, values, indices = _top_k(3, 4, 2, seed=1)
  with pytest.raises(ValueError, match="4 views need 12 rows of top-k fusion values, got 6"):
    sparse.sparse_fusion_blocks(values, indices, 4)
