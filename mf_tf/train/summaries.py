"""TensorBoard scalars and the Keras callbacks shared by the training loops.

`tf.summary.scalar` lives in the `tensorboard` package, which TensorFlow no longer installs. Scalars
are written with the core op `tf.summary.write` and the scalars plugin's metadata, which is exactly
what `tf.summary.scalar` writes, so TensorBoard (installed wherever it is viewed) reads them.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()


def write_scalar(name: str, value, step: int) -> None:
  """Writes one scalar to the default summary writer (as `tf.summary.scalar` does)."""
  tf.summary.write(name, tf.cast(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


class ScalarLogger(keras.callbacks.Callback):
  """Writes every epoch's logs (loss, val_loss, learning rate) as TensorBoard scalars.

  Args:
    log_dir: Event file directory.
    prefix: Tag prefix, e.g. "warmup".
  """

  def __init__(self, log_dir: str, prefix: str):
    super().__init__()
    self.log_dir = log_dir
    self.prefix = prefix
    self._writer = None

  def on_train_begin(self, logs=None):
    os.makedirs(self.log_dir, exist_ok=True)
    self._writer = tf.summary.create_file_writer(self.log_dir)

  def on_epoch_end(self, epoch, logs=None):
    values = dict(logs or {})
    try:
      values["learning_rate"] = float(keras.ops.convert_to_numpy(
          self.model.optimizer.learning_rate))
    except (AttributeError, TypeError):
      pass
    with self._writer.as_default():
      for key, value in values.items():
        write_scalar(f"{self.prefix}/{key}", float(value), epoch + 1)
    self._writer.flush()

  def on_train_end(self, logs=None):
    if self._writer is not None:
      self._writer.close()
