"""Baselines' pretraining on the pretraining rig by plain training (paper Table 1).

  AffineFuse^K: the MetaFuse factorization (omega_base [H, W] and ONE theta [HW, 6] shared by all
    pairs, exactly MetaFuse's meta-parameters) trained by Adam on the fusion loss of pair tasks
    with no inner step, so it differs from MetaFuse only in the learning algorithm.
  NaiveFuse^K: free fusion matrices [P, HW, HW] of the selected cameras trained with Keras fit.
Both use "four selected cameras" of the pretraining rig (--mode=pretrain: `mf_tf.modes.pretrain`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mf_tf import checkpoints
from mf_tf.data import detector as detector_lib
from mf_tf.fusion import layers as fusion_layers
from mf_tf.geometry.rig import ordered_pairs
from mf_tf.meta import maml
from mf_tf.meta import tasks as tasks_lib
from mf_tf.train import finetune as finetune_lib
from mf_tf.train import metatrain as metatrain_lib

METHODS = ("affine", "naive")


def select_view_pairs(num_views: int, views) -> np.ndarray:
  """Ordered pairs [P, 2] among the selected `views` of a rig (in `ordered_pairs` order)."""
  views = [int(v) for v in views]
  if len(views) < 2 or len(set(views)) != len(views) or not all(0 <= v < num_views
                                                                 for v in views):
    raise ValueError(f"pretrain views {views}: expected at least 2 distinct indices in "
                     f"[0, {num_views})")
  local = ordered_pairs(len(views))
  return np.asarray(views, np.int32)[local]


def pretrain_affine(pool: tasks_lib.FramePool, pairs, *, steps: int, tasks_per_step: int,
                    frames_per_task: int, learning_rate: float, temperature: float,
                    target_sigma: float, seed: int, init: maml.MetaParams | None = None,
                    progress: bool = True, loss: str = "mse") -> maml.MetaParams:
  """AffineFuse pretraining: Adam on shared (omega_base, theta) over pair tasks, no inner step.

  Args:
    pool: Frames of the pretraining rig.
    pairs: [P, 2] ordered (source, target) pairs to train on.
    steps: Adam steps.
    tasks_per_step: Pair tasks per step.
    frames_per_task: Frames per task.
    learning_rate: Adam learning rate.
    temperature: Softmax temperature T.
    target_sigma: Target std in heatmap px.
    seed: Task draw seed.
    init: Initial parameters; None: `metatrain.default_meta_params`.
    progress: Progress bar.
    loss: `ops.fusion_loss` kind, "mse" or "ce".

  Returns:
    `MetaParams` (omega_base [H, W], theta [HW, 6]) as numpy.
  """
  if steps < 1 or tasks_per_step < 1 or frames_per_task < 2 or not learning_rate > 0:
    raise ValueError(f"pretrain steps={steps}, tasks_per_step={tasks_per_step}, "
                     f"frames_per_task={frames_per_task}, learning_rate={learning_rate}: expected "
                     "positive values and at least 2 frames per task")
  init = init if init is not None else metatrain_lib.default_meta_params(pool.heatmap_size)
  half = frames_per_task // 2
  sampler = tasks_lib.TaskSampler(pool, pairs, half, frames_per_task - half, target_sigma, seed)
  omega = tf.Variable(np.asarray(init.omega_base, np.float32))
  theta = tf.Variable(np.asarray(init.theta, np.float32))
  optimizer = keras.optimizers.Adam(learning_rate)
  optimizer.build([omega, theta])
  loss_kind = loss

  @tf.function(jit_compile=True)
  def step(split):
    with tf.GradientTape() as tape:
      tiled = maml.tile_params(maml.MetaParams(omega, theta), split.heatmaps.shape[0])
      loss = tf.reduce_mean(maml.task_losses(tiled.omega_base, tiled.theta, split, temperature,
                                             loss_kind))
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, [omega, theta])]
    optimizer.apply_gradients(zip(grads, [omega, theta]))
    return loss

  bar = keras.utils.Progbar(steps) if progress else None
  for index in range(steps):
    support, query = sampler.sample(index, tasks_per_step)
    split = maml.TaskSplit(*(tf.concat([a, b], axis=1) for a, b in zip(support, query)))
    loss = float(step(split))
    if not np.isfinite(loss):
      raise checkpoints.ParameterError(
          f"pretrain affine step {index + 1}: loss {loss}; expected a finite loss (training "
          "diverged: lower config.pretrain.learning_rate; nothing was saved)")
    if bar is not None:
      bar.update(index + 1, values=[("loss", loss)])
  return maml.MetaParams(omega.numpy(), theta.numpy())


def pretrain_naive(pool: tasks_lib.FramePool, views, *, epochs: int, batch_size: int,
                   learning_rate: float, temperature: float, target_sigma: float, seed: int,
                   progress: bool = True, loss: str = "mse") -> np.ndarray:
  """NaiveFuse pretraining: free matrices of the selected views' pairs, Keras fit on all frames.

  Returns:
    [P, HW, HW] float32 matrices (P = len(views) * (len(views) - 1), `ordered_pairs` order).
  """
  views = np.asarray(views, np.int32)
  select_view_pairs(pool.num_views, views)
  frames = np.arange(pool.num_frames, dtype=np.int32)
  heatmaps = []
  for start in range(0, len(frames), 64):  # Render (or gather) the selected views in chunks.
    chunk = tf.constant(frames[start:start + 64])
    heatmaps.append(_render_views(pool, chunk, views))
  heatmaps = np.concatenate(heatmaps)
  joints2d = pool.joints2d[:, views]
  layer = fusion_layers.NaiveFusion(len(views), pool.heatmap_size, temperature, name="fusion")
  layer.build((None, len(views), pool.heatmap_size, pool.heatmap_size, 1))
  finetune_lib.finetune_fusion(layer, heatmaps, joints2d, target_sigma=target_sigma,
                               learning_rate=learning_rate, epochs=epochs, batch_size=batch_size,
                               validation_fraction=0.1, patience=max(epochs, 1), seed=seed,
                               progress=progress, loss=loss, selection="val_loss")
  return layer.matrices.numpy()


def _render_views(pool: tasks_lib.FramePool, frames: tf.Tensor, views: np.ndarray) -> np.ndarray:
  """[N, len(views), H, W, J] initial heatmaps of `frames` (any number of views)."""
  if pool.dense:
    return pool.heatmaps[frames.numpy()][:, views]
  peaks = pool.peaks[frames.numpy()][:, views]
  amplitudes = pool.amplitudes[frames.numpy()][:, views]
  seeds = pool.noise_seed[frames.numpy()]
  return detector_lib.render_heatmaps(peaks, amplitudes, pool.heatmap_size, pool.detector_sigma,
                                      pool.detector_noise, seeds).numpy()


