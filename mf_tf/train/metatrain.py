"""Meta-training loop (paper Sec. 4.2): MAML over camera-pair tasks on precomputed heatmaps.

The math is `mf_tf.meta.maml` (pure), the tasks `mf_tf.meta.tasks`; this module owns the
variables, the outer Adam optimizer, checkpoints, TensorBoard scalars, the progress bar and
tf.distribute. Entry point: `metatrain_fusion` (--mode=metatrain: `mf_tf.modes.metatrain`).

Each step draws `tasks_per_step` tasks (batch `step` depends only on the seed and the step, so a
run resumed from a checkpoint ends with the same parameters as an uninterrupted one), computes the
outer gradient with one XLA-compiled function, and applies Adam. Under a tf.distribute strategy
the tasks are split evenly over replicas; each replica's gradient is scaled by
1 / tasks_per_step, so the optimizer's all-reduce (sum) gives the mean over all tasks.

Checkpoints (<workdir>/checkpoints/ckpt-N, `mf_tf.train.metatrain_checkpoints`) are verified on
resume:

  * Each checkpoint has a sidecar `ckpt-N.run.json` holding the `MamlSettings` and a fingerprint
    of the data (pool frame count and content hash, the training pairs, the init). Resuming with
    other settings or data is refused with one error listing every difference (old -> new);
    `restart=True` (config.metatrain.restart) discards the checkpoints and starts over. num_steps
    may grow (the task batch of a step does not depend on it), but not below the checkpoint's step.
  * An unreadable (e.g. truncated) latest checkpoint is skipped with a warning naming it, and the
    previous intact one is used; if none is intact, `CheckpointError` names them all.
  * SIGINT / SIGTERM during training let the current step finish, save a checkpoint of it and then
    stop (KeyboardInterrupt / SystemExit(128 + SIGTERM)); a second signal stops at once
    (`mf_tf.train.stopping`, shared with finetuning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from mf_tf.checkpoints import ParameterError
from mf_tf.checkpoints import check_parameters
from mf_tf.fusion import calibrated as calibrated_lib
from mf_tf.fusion import layers as fusion_layers
from mf_tf.fusion import warp_kernel
from mf_tf.meta import maml
from mf_tf.meta import tasks as tasks_lib
from mf_tf.train import metatrain_checkpoints as meta_checkpoints
from mf_tf.train import stopping
from mf_tf.train import summaries

@dataclasses.dataclass(frozen=True)
class MamlSettings:
  """Hyper-parameters of MAML meta-training.

  No field has a default: the modes build it from the config (`mf_tf.modes.common.maml_settings`).

  Attributes:
    num_steps: Outer steps.
    tasks_per_step: Tasks (ordered pairs) per outer step, split over replicas.
    support_size: Frames per task for the inner step(s) (D_i^train).
    query_size: Frames per task for the outer loss (D_i^test).
    inner_lr: Inner step size alpha (Eq. 4-5).
    inner_steps: Inner gradient steps.
    outer_lr: Adam learning rate of the outer step (paper: 1e-3).
    first_order: First-order MAML instead of second order.
    temperature: Softmax temperature of the fusion loss (paper: 0.2).
    target_sigma: Std of the Gaussian targets in heatmap px.
    seed: Seed of task draws.
    inner_omega: The inner steps adapt omega_base too (paper Eq. 5); False: theta only.
    loss: `ops.fusion_loss` kind, "mse" or "ce" (the same as finetuning uses).
  """

  num_steps: int
  tasks_per_step: int
  support_size: int
  query_size: int
  inner_lr: float
  inner_steps: int
  outer_lr: float
  first_order: bool
  temperature: float
  target_sigma: float
  seed: int
  inner_omega: bool
  loss: str

  def __post_init__(self):
    maml.validate_hyperparameters(self.inner_lr, self.inner_steps, self.temperature)
    for name in ("num_steps", "tasks_per_step", "support_size", "query_size"):
      value = getattr(self, name)
      if int(value) != value or value < (0 if name == "num_steps" else 1):
        raise ValueError(f"metatrain {name}={value}, expected a positive integer")
    if not self.outer_lr > 0:
      raise ValueError(f"metatrain outer_lr={self.outer_lr}, expected > 0")
    if not self.target_sigma > 0:
      raise ValueError(f"metatrain target_sigma={self.target_sigma}, expected > 0")


def default_meta_params(heatmap_size: int) -> maml.MetaParams:
  """The initial meta-parameters: `AffineFusion`'s own defaults (line base, translation theta)."""
  layer = fusion_layers.AffineFusion(num_views=2, heatmap_size=heatmap_size)
  layer.build((None, 2, heatmap_size, heatmap_size, 1))
  return maml.MetaParams(np.asarray(layer.omega_base.numpy()), np.asarray(layer.theta.numpy()[0]))


def calibrated_meta_init(rig, heatmap_size: int, line_width_px: float = 1.0,
                         line_value: float = 0.3) -> tuple[maml.MetaParams, np.ndarray]:
  """Init of the calibrated variant (both rigs calibrated; a departure from the paper).

  Every pair task's theta starts from that pair's calibrated (epipolar-line) theta plus a shared
  meta-learned residual delta; omega_base starts from the calibrated line base.

  Args:
    rig: The pretraining rig (the pool's views, in order).
    heatmap_size: H = W.
    line_width_px: Line base cross-section std, heatmap px.
    line_value: Line base peak.

  Returns:
    (MetaParams(omega_base [H, W] line base, theta [HW, 6] zeros = the residual delta),
    theta_by_pair [V (V - 1), HW, 6] float32 calibrated theta in `ordered_pairs` order).
  """
  size = int(heatmap_size)
  base, theta_by_pair = calibrated_lib.calibrated_parameters(rig, size, line_width_px,
                                                             line_value)
  delta = np.zeros((size * size, 6), np.float32)
  return maml.MetaParams(np.asarray(base, np.float32), delta), np.asarray(theta_by_pair,
                                                                          np.float32)


def pair_theta_offsets(theta_by_pair, pairs, num_views: int) -> np.ndarray:
  """Per-task calibrated theta [T, HW, 6] of ordered pairs [T, 2] (source, target)."""
  pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
  theta_by_pair = np.asarray(theta_by_pair)
  expected = num_views * (num_views - 1)
  if theta_by_pair.ndim != 3 or theta_by_pair.shape[0] != expected:
    raise ValueError(f"theta_by_pair has shape {theta_by_pair.shape}, expected [{expected}, HW, "
                     f"6] (every ordered pair of the {num_views}-view rig)")
  source, target = pairs[:, 0], pairs[:, 1]
  index = target * (num_views - 1) + np.where(source < target, source, source - 1)
  return theta_by_pair[index]


def _slice_for_replica(tensor, replica: int, num_replicas: int):
  per_replica = int(tensor.shape[0]) // num_replicas
  return tensor[replica * per_replica:(replica + 1) * per_replica]


def _split_for_replica(split: maml.TaskSplit, replica: int, num_replicas: int):
  return maml.TaskSplit(*(_slice_for_replica(x, replica, num_replicas) for x in split))


class MetaLearner:
  """Meta-parameters as variables, the outer optimizer, and the compiled outer step.

  Args:
    init: Initial `MetaParams` (omega_base [H, W], theta [HW, 6]).
    settings: `MamlSettings`.
    strategy: A tf.distribute strategy; None uses the default (single device) strategy.
  """

  def __init__(self, init: maml.MetaParams, settings: MamlSettings,
               strategy: tf.distribute.Strategy | None = None):
    self.settings = settings
    self.strategy = strategy or tf.distribute.get_strategy()
    replicas = self.strategy.num_replicas_in_sync
    if settings.tasks_per_step % replicas:
      raise ValueError(f"tasks_per_step={settings.tasks_per_step} must be a multiple of the "
                       f"{replicas} replicas")
    with self.strategy.scope():
      self.omega_base = tf.Variable(np.asarray(init.omega_base, np.float32), name="omega_base")
      self.theta = tf.Variable(np.asarray(init.theta, np.float32), name="theta")
      self.step = tf.Variable(0, dtype=tf.int64, name="step", trainable=False)
      self.optimizer = keras.optimizers.Adam(settings.outer_lr)
      self.optimizer.build([self.omega_base, self.theta])
    self.checkpoint = tf.train.Checkpoint(omega_base=self.omega_base, theta=self.theta,
                                          step=self.step, optimizer=self.optimizer)
    self._gradients = tf.function(functools.partial(
        maml.maml_gradients, inner_lr=settings.inner_lr, inner_steps=settings.inner_steps,
        temperature=settings.temperature, first_order=settings.first_order,
        loss_scale=1.0 / settings.tasks_per_step, train_omega=settings.inner_omega,
        loss=settings.loss),
        jit_compile=warp_kernel.xla_for_warps())
    self._step_fn = tf.function(self._distributed_step)

  @property
  def params(self) -> maml.MetaParams:
    return maml.MetaParams(self.omega_base.numpy(), self.theta.numpy())

  def _replica_step(self, support, query, theta_offset=None):
    params = maml.MetaParams(tf.convert_to_tensor(self.omega_base),
                             tf.convert_to_tensor(self.theta))
    grads, metrics = self._gradients(params, support, query, theta_offset=theta_offset)
    self.optimizer.apply_gradients(zip(grads, [self.omega_base, self.theta]))
    return metrics

  def _distributed_step(self, support, query, theta_offset=None):
    metrics = self.strategy.run(self._replica_step, args=(support, query, theta_offset))
    self.step.assign_add(1)
    return {key: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for key, value in metrics.items()}

  def train_step(self, support: maml.TaskSplit, query: maml.TaskSplit, *,
                 theta_offset=None) -> dict:
    """One outer step on a batch of tasks (split over replicas); returns scalar metrics.

    `theta_offset` [T, HW, 6]: per-task calibrated theta of the calibrated variant (the theta
    variable is then the shared residual); None: the paper's shared theta init.
    """
    replicas = self.strategy.num_replicas_in_sync
    if theta_offset is not None:
      theta_offset = tf.convert_to_tensor(theta_offset, tf.float32)
    if replicas > 1:
      def shard(split):
        return self.strategy.experimental_distribute_values_from_function(
            lambda context: _split_for_replica(split, context.replica_id_in_sync_group,
                                               replicas))
      support, query = shard(support), shard(query)
      if theta_offset is not None:
        offsets = theta_offset
        theta_offset = self.strategy.experimental_distribute_values_from_function(
            lambda context: _slice_for_replica(offsets, context.replica_id_in_sync_group,
                                               replicas))
    return {key: float(value)
            for key, value in self._step_fn(support, query, theta_offset).items()}


def check_loop_settings(num_steps: int, checkpoint_every: int) -> None:
  """Raises ValueError unless num_steps >= 1 and checkpoint_every >= 1 (integers)."""
  for name, value in (("num_steps", num_steps), ("checkpoint_every", checkpoint_every)):
    if isinstance(value, bool) or int(value) != value or value < 1:
      raise ValueError(f"metatrain {name}={value!r}, expected an integer >= 1")


def metatrain_fusion(pool: tasks_lib.FramePool, pairs, settings: MamlSettings, *,
                     init: maml.MetaParams | None = None, workdir: str | None = None,
                     strategy: tf.distribute.Strategy | None = None, checkpoint_every: int = 50,
                     progress: bool = True,
                     callback: Callable[[int, dict], None] | None = None,
                     theta_by_pair=None, restart: bool = False) -> maml.MetaParams:
  """Meta-trains MetaFuse's omega_base and theta initialization (paper Sec. 4.2).

  Args:
    pool: Frames of the pretraining rig (`FramePool`).
    pairs: [P, 2] ordered (source, target) view pairs of the pool's rig to draw tasks from.
    settings: `MamlSettings`.
    init: Initial meta-parameters; None: `default_meta_params(pool.heatmap_size)`.
    workdir: If set, checkpoints (resumed from when present, see the module docstring) go to
      <workdir>/checkpoints and TensorBoard scalars to <workdir>/tensorboard; SIGINT / SIGTERM
      then save a checkpoint of the last completed step before stopping.
    strategy: tf.distribute strategy (tasks are split over its replicas); None: default.
    checkpoint_every: Steps between checkpoints (with workdir), >= 1.
    progress: Show a progress bar.
    callback: Called as callback(step, metrics) after every step (step counts from 1).
    theta_by_pair: Calibrated variant: [V (V - 1), HW, 6] calibrated theta of every ordered pair
      of the pool's rig (`calibrated_meta_init`); a task's theta starts from its pair's entry plus
      the meta-learned theta, which is then a shared residual delta. None: the paper's shared
      theta init.
    restart: Discard existing checkpoints in workdir and start from `init`.

  Returns:
    The meta-learned `MetaParams` as numpy: omega_base [H, W] and theta [HW, 6] (the init of
    every new pair).

  Raises:
    ValueError: bad num_steps / checkpoint_every / init shape.
    CheckpointError: no readable checkpoint, or the checkpoint belongs to other settings or data.
    ParameterError: training diverged (non-finite losses, or parameters beyond
      `checkpoints.PARAMETER_BOUNDS` when a checkpoint is due); nothing of it is saved.
    KeyboardInterrupt / SystemExit: after SIGINT / SIGTERM (with the checkpoint saved).
  """
  check_loop_settings(settings.num_steps, checkpoint_every)
  init = _initial_params(init, pool.heatmap_size)
  sampler = tasks_lib.TaskSampler(pool, pairs, settings.support_size, settings.query_size,
                                  settings.target_sigma, settings.seed)
  learner = MetaLearner(init, settings, strategy)
  manager = writer = run_info = None
  if workdir:
    run_info = meta_checkpoints.run_info(
        settings, meta_checkpoints.data_fingerprint(pool, pairs, init, theta_by_pair))
    manager = meta_checkpoints.open_checkpoints(learner.checkpoint, workdir, run_info,
                                                restart=restart)
    writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
  start = int(learner.step.numpy())
  if start >= settings.num_steps:
    logging.info("metatrain: already at step %d of num_steps=%d: the run is complete, nothing to "
                 "train", start, settings.num_steps)
    return learner.params
  bar = keras.utils.Progbar(settings.num_steps, stateful_metrics=None) if progress else None
  if bar is not None and start:
    bar.update(start)
  stop_signals = (stopping.deferred_stop_signals("metatrain", "saving a checkpoint")
                  if manager is not None else contextlib.nullcontext(stopping.StopRequest()))
  try:
    with stop_signals as stop:
      for step in range(start, settings.num_steps):
        metrics = _outer_step(learner, sampler, step, settings.tasks_per_step,
                              theta_by_pair=theta_by_pair, num_views=pool.num_views)
        _record(step + 1, metrics, writer=writer, bar=bar)
        if manager is not None and ((step + 1) % checkpoint_every == 0
                                    or step + 1 == settings.num_steps or stop.requested):
          _checkpoint(learner, manager, step + 1, run_info)
        if stop.requested:
          logging.warning("metatrain: stopped by %s after step %d (checkpoint saved; run again "
                          "to resume)", stop.name, step + 1)
          raise stop.exception()
        if callback is not None:
          callback(step + 1, metrics)
  finally:
    if writer is not None:
      writer.flush()
  return learner.params


def _initial_params(init: maml.MetaParams | None, heatmap_size: int) -> maml.MetaParams:
  """`init`, checked against the pool's heatmap size; None: `default_meta_params`."""
  init = init if init is not None else default_meta_params(heatmap_size)
  if tuple(np.shape(init.omega_base)) != (heatmap_size, heatmap_size):
    raise ValueError(f"init omega_base has shape {np.shape(init.omega_base)}, expected "
                     f"{(heatmap_size, heatmap_size)} (the pool's heatmap size)")
  return init


def _outer_step(learner: MetaLearner, sampler: tasks_lib.TaskSampler, step: int,
                tasks_per_step: int, *, theta_by_pair, num_views: int) -> dict:
  """Draws step `step`'s tasks and applies one outer step; raises on non-finite losses."""
  pairs_drawn, frames = sampler.draw(step, tasks_per_step)
  support, query = sampler.make_splits(pairs_drawn, frames)
  offset = (None if theta_by_pair is None else
            pair_theta_offsets(theta_by_pair, pairs_drawn, num_views))
  metrics = learner.train_step(support, query, theta_offset=offset)
  if not all(np.isfinite(list(metrics.values()))):
    raise ParameterError(f"metatrain step {step + 1}: non-finite losses {metrics}; "
                         "expected finite ones (training diverged: lower inner_lr or "
                         "outer_lr; nothing was saved)")
  return metrics


def _record(step: int, metrics: dict, *, writer, bar) -> None:
  """Writes the metrics of (1-based) `step` to TensorBoard and the progress bar, when present."""
  if writer is not None:
    with writer.as_default(step=step):
      for key, value in metrics.items():
        summaries.write_scalar(f"metatrain/{key}", value, step)
  if bar is not None:
    bar.update(step, values=list(metrics.items()))


def _checkpoint(learner: MetaLearner, manager: tf.train.CheckpointManager, step: int,
                run_info: dict) -> None:
  """Saves checkpoint `step` once its parameters pass `check_parameters`.

  A diverged run (finite losses, absurd parameters) is stopped, never saved.
  """
  params = learner.params
  check_parameters({"omega_base": params.omega_base, "theta": params.theta},
                   f"metatrain step {step} (checkpoint in {manager.directory!r})")
  meta_checkpoints.save_checkpoint(manager, step, run_info)


def evaluate_pairs(params: maml.MetaParams, pool: tasks_lib.FramePool, pairs,
                   settings: MamlSettings, num_tasks: int, seed: int = 1, *,
                   theta_by_pair=None) -> dict:
  """Mean query losses before and after adaptation on tasks drawn from `pairs` (e.g. held out).

  `theta_by_pair`: the calibrated variant's per-pair theta (see `metatrain_fusion`).

  Returns:
    {"support_loss", "query_loss_before", "query_loss_after"}: floats, means over tasks.
  """
  sampler = tasks_lib.TaskSampler(pool, pairs, settings.support_size, settings.query_size,
                                  settings.target_sigma, seed)
  evaluate = tf.function(functools.partial(
      maml.evaluate_adaptation, inner_lr=settings.inner_lr, inner_steps=settings.inner_steps,
      temperature=settings.temperature, loss=settings.loss),
      jit_compile=warp_kernel.xla_for_warps())
  chunk = settings.tasks_per_step  # One compiled shape; the task axis is unrolled in the step.
  params = maml.MetaParams(*(tf.constant(p) for p in params))
  results = []
  for index in range((num_tasks + chunk - 1) // chunk):
    pairs_drawn, frames = sampler.draw(index, chunk)
    support, query = sampler.make_splits(pairs_drawn, frames)
    offset = (None if theta_by_pair is None else tf.constant(
        pair_theta_offsets(theta_by_pair, pairs_drawn, pool.num_views)))
    results.append(evaluate(params, support, query, theta_offset=offset))
  return {key: float(np.mean(np.concatenate([r[key].numpy() for r in results])[:num_tasks]))
          for key in results[0]}


