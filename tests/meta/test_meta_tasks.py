"""Frame pools and pair-task sampling."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.data import detector
from mf_tf.data import world
from mf_tf.geometry import rigs
from mf_tf.meta import tasks

SIZE = 16


@pytest.fixture(scope="module")
def frames():
  return world.simulate_frames(rigs.get_rig("h36m"), 12, 0, heatmap_size=SIZE)


def test_compact_pool_renders_like_the_detector(frames):
  pool = tasks.FramePool.from_frames(frames, SIZE)
  assert not pool.dense
  rendered = pool.render(tf.constant([[3, 5]]), tf.constant([[2, 0]])).numpy()
  assert rendered.shape == (1, 2, 2, SIZE, SIZE, 17)
  # The peaks are those of the chosen views (noise differs: it is drawn for the 2-view shape).
  params = detector.DetectorParams().scaled(SIZE)
  clean = detector.splat_peaks(frames["peaks"][[3, 5]][:, [2, 0]],
                               frames["amplitudes"][[3, 5]][:, [2, 0]], SIZE, params.sigma)
  assert np.abs(rendered[0] - clean.numpy()).max() < 6 * params.noise_level
  dense = tasks.FramePool.from_frames(frames, SIZE, dense=True)
  np.testing.assert_array_equal(dense.render(tf.constant([[3, 5]]), tf.constant([[2, 0]]))[0],
                                frames["heatmaps"][[3, 5]][:, [2, 0]])


def test_pool_save_load_round_trip(frames, tmp_path):
  pool = tasks.FramePool.from_frames(frames, SIZE)
  pool.save(str(tmp_path / "pool.npz"))
  loaded = tasks.FramePool.load(str(tmp_path / "pool.npz"))
  np.testing.assert_array_equal(loaded.peaks, pool.peaks)
  assert loaded.heatmap_size == SIZE and loaded.detector_sigma == pool.detector_sigma
  with pytest.raises(FileNotFoundError):
    tasks.FramePool.load(str(tmp_path / "missing.npz"))


def test_sampler_is_deterministic_and_targets_the_target_view(frames):
  pool = tasks.FramePool.from_frames(frames, SIZE)
  sampler = tasks.TaskSampler(pool, pool_pairs := np.array([[0, 1], [3, 2]]), 2, 3, 1.0, seed=7)
  del pool_pairs
  pairs, chosen = sampler.draw(5, 4)
  again_pairs, again_chosen = sampler.draw(5, 4)
  np.testing.assert_array_equal(pairs, again_pairs)
  np.testing.assert_array_equal(chosen, again_chosen)
  assert all(len(set(row)) == 5 for row in chosen)  # Support and query frames are distinct.
  support, query = sampler.make_splits(pairs, chosen)
  assert support.heatmaps.shape == (4, 2, 2, SIZE, SIZE, 17)
  assert query.target.shape == (4, 3, SIZE, SIZE, 17)
  # The target Gaussian peaks at the target view's joint.
  task, frame, joint = 1, 0, 0
  target = query.target[task, frame, :, :, joint].numpy()
  row, col = np.unravel_index(np.argmax(target), target.shape)
  x, y = frames["joints2d"][chosen[task, 2 + frame], pairs[task, 1], joint]
  assert abs(col - x) <= 0.5 + 1e-6 and abs(row - y) <= 0.5 + 1e-6


def test_split_pairs_and_errors(frames):
  train, held = tasks.split_pairs(4, 3, seed=0)
  assert len(train) == 9 and len(held) == 3
  assert not set(map(tuple, train)) & set(map(tuple, held))
  with pytest.raises(ValueError, match="num_holdout"):
    tasks.split_pairs(4, 12, seed=0)
  pool = tasks.FramePool.from_frames(frames, SIZE)
  with pytest.raises(ValueError, match="distinct frames"):
    tasks.TaskSampler(pool, [[0, 1]], 10, 10, 1.0, 0)
  with pytest.raises(ValueError, match="pairs"):
    tasks.TaskSampler(pool, [[0, 0]], 1, 1, 1.0, 0)


def test_sampler_rejects_non_finite_heatmaps_naming_the_frame(frames):
  dense = dict(frames, heatmaps=frames["heatmaps"].copy())
  dense["heatmaps"][4, 1, 3, 5, 2] = np.nan
  sampler = tasks.TaskSampler(tasks.FramePool.from_frames(dense, SIZE, dense=True),
                              [[0, 1], [1, 0]], 1, 1, 1.0, 0)
  support, _ = sampler.make_splits(np.array([[0, 2]]), np.array([[4, 5]]))  # View 1 unused.
  assert np.all(np.isfinite(support.heatmaps.numpy()))
  with pytest.raises(ValueError, match=r"frame pool frame 4, view 1: dense heatmaps"):
    sampler.make_splits(np.array([[0, 2], [1, 0]]), np.array([[3, 5], [6, 4]]))
  compact = dict(frames, peaks=frames["peaks"].copy())
  compact["peaks"][7, 2, 0, 1, 0] = np.nan
  sampler = tasks.TaskSampler(tasks.FramePool.from_frames(compact, SIZE), [[2, 3]], 1, 1, 1.0, 0)
  with pytest.raises(ValueError, match=r"frame pool frame 7, view 2: detector state"):
    sampler.make_splits(np.array([[2, 3]]), np.array([[7, 1]]))
