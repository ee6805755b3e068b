"""Warm-up (paper Sec. 4.2, first step): train the backbone alone on all images.

Loss: MSE between the backbone's heatmaps and Gaussian targets, per joint masked by visibility
(joints occluded or outside the image do not count). Schedule (paper Sec. 5.1): Adam 1e-3, 1e-4
from half of the epochs, 1e-5 from five sixths (epochs 15 and 25 of 30). Keras fit with
ModelCheckpoint, BackupAndRestore (a killed run resumes at its last epoch), TensorBoard scalars
and a progress bar. Output: <workdir>/warmup/backbone.keras and backbone.weights.h5.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from mf_tf.data import codec as codec_lib
from mf_tf.train import summaries


class _HeatmapFit(keras.Model):
  """Training wrapper: images -> heatmaps, loss = visibility-masked MSE to the targets."""

  def __init__(self, backbone, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone

  def call(self, images, training=False):
    return self.backbone(images, training=training)

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    target, weights = y
    return masked_mse(y_pred, target, weights)


def masked_mse(heatmaps, target, weights):
  """Mean over images, pixels and joints of (heatmaps - target)^2 * weight.

  Args:
    heatmaps: [N, H, W, J] predictions.
    target: [N, H, W, J] Gaussian targets.
    weights: [N, J] per-joint weights (visibility).

  Returns:
    Scalar.
  """
  error = tf.square(tf.cast(heatmaps, tf.float32) - target) * weights[:, None, None, :]
  return tf.reduce_mean(error)


def paper_schedule(epochs: int, learning_rate: float):
  """Epoch -> learning rate: lr, lr / 10 from epochs / 2, lr / 100 from 5 epochs / 6."""
  first = max(1, int(round(epochs / 2)))  # The first epoch always runs at the full rate.
  second = max(first, int(round(epochs * 5 / 6)))

  def schedule(epoch, lr=None):
    del lr
    if epoch < first:
      return learning_rate
    return learning_rate / 10 if epoch < second else learning_rate / 100
  return schedule


def warmup_backbone(backbone: keras.Model, images, joints2d, visibility, *, target_sigma: float,
                    epochs: int, batch_size: int, learning_rate: float = 1e-3,
                    validation_fraction: float = 0.1, workdir: str | None = None, seed: int = 0,
                    strategy: tf.distribute.Strategy | None = None, progress: bool = True,
                    jit_compile: bool = True) -> dict:
  """Trains a backbone in place on labelled images.

  Args:
    backbone: From `build_backbone` (images [N, S, S, 3] -> heatmaps [N, H, W, J]); created in
      `strategy.scope()` when a strategy is used.
    images: [N, S, S, 3] uint8 or float (0..255).
    joints2d: [N, J, 2] joints in heatmap px of the backbone's output.
    visibility: [N, J] (> 0 counts in the loss).
    target_sigma: Target std in heatmap px.
    epochs: Epochs.
    batch_size: Global images per step.
    learning_rate: Initial Adam learning rate (paper schedule after).
    validation_fraction: Images held out for val_loss (0 for none).
    workdir: If set: ModelCheckpoint (<workdir>/checkpoint.weights.h5), BackupAndRestore
      (<workdir>/backup) and TensorBoard scalars (<workdir>/tensorboard).
    seed: Split and shuffle seed.
    strategy: tf.distribute strategy (batches split over replicas); None: default.
    progress: Progress bar.
    jit_compile: XLA train step.

  Returns:
    The Keras history dict.
  """
  images = np.asarray(images)
  count = len(images)
  if count < 2 or epochs < 1 or batch_size < 1 or not learning_rate > 0:
    raise ValueError(f"warm-up needs >= 2 images, epochs >= 1, batch_size >= 1 and a positive "
                     f"learning rate; got {count}, {epochs}, {batch_size}, {learning_rate}")
  size = int(backbone.output_shape[1])
  target, weights = codec_lib.HeatmapCodec(size, target_sigma).encode(joints2d, visibility)
  target, weights = target.numpy(), weights.numpy()
  order = np.random.default_rng(seed).permutation(count)
  num_val = int(round(validation_fraction * count)) if validation_fraction > 0 else 0
  num_val = min(max(num_val, 1 if validation_fraction > 0 else 0), count - 1)
  val, train = order[:num_val], order[num_val:]
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    model = _HeatmapFit(backbone, name="warmup")
    model.build(backbone.input_shape)  # BackupAndRestore needs a built model.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
  callbacks = [keras.callbacks.LearningRateScheduler(paper_schedule(epochs, learning_rate))]
  if workdir:
    monitor = "val_loss" if num_val else "loss"
    callbacks += [
        keras.callbacks.ModelCheckpoint(os.path.join(workdir, "checkpoint.weights.h5"),
                                        monitor=monitor, save_weights_only=True),
        keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")),
        summaries.ScalarLogger(os.path.join(workdir, "tensorboard"), "warmup")]
  keras.utils.set_random_seed(seed)
  history = model.fit(
      images[train].astype(np.float32), (target[train], weights[train]),
      validation_data=((images[val].astype(np.float32), (target[val], weights[val]))
                       if num_val else None),
      epochs=epochs, batch_size=batch_size, shuffle=True, callbacks=callbacks,
      verbose=1 if progress else 0)
  return history.history


