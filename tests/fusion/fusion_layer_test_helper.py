"""keras-hub style layer test: config round trip, symbolic call, eager call, saving, jit fit."""

import keras
import numpy as np
import tensorflow as tf

from mf_tf.fusion import ops


def run_layer_test(layer_cls, init_kwargs, input_data, *, target_data=None, tmp_path=None,
                   expect_trainable=True, fit_steps=2):
  """Checks one fusion layer class end to end; returns the fitted model.

  Args:
    layer_cls: The layer class.
    init_kwargs: Constructor keyword arguments.
    input_data: [B, V, H, W, J] float32 numpy heatmaps.
    target_data: Targets for `fit` (default: input_data); the loss is `ops.fusion_loss`.
    tmp_path: Folder for a `.keras` save/load round trip (skipped when None).
    expect_trainable: Whether fit must change some weight.
    fit_steps: Optimizer steps in the jit-compiled fit.
  """
  # Config round trip.
  layer = layer_cls(**init_kwargs)
  config = layer.get_config()
  restored = layer_cls.from_config(config)
  assert restored.get_config() == config
  serialized = keras.saving.serialize_keras_object(layer)
  assert keras.saving.deserialize_keras_object(serialized).get_config() == config

  # Symbolic call.
  inputs = keras.Input(shape=input_data.shape[1:], batch_size=None)
  symbolic = layer_cls(**init_kwargs)(inputs)
  assert tuple(symbolic.shape) == (None,) + input_data.shape[1:]

  # Eager call, plain and softmax, and a freshly built clone with copied weights agrees.
  eager = layer_cls(**init_kwargs)
  output = eager(input_data)
  assert tuple(output.shape) == input_data.shape
  assert np.all(np.isfinite(output.numpy()))
  soft = eager(input_data, softmax=True).numpy()
  np.testing.assert_allclose(soft.sum(axis=(2, 3)), 1.0, rtol=1e-4)
  clone = layer_cls.from_config(eager.get_config())
  clone.build(input_data.shape)
  clone.set_weights(eager.get_weights())
  np.testing.assert_allclose(clone(input_data).numpy(), output.numpy(), atol=1e-6)

  # fit with jit_compile=True.
  model = keras.Sequential([keras.Input(shape=input_data.shape[1:]), layer_cls(**init_kwargs)])
  targets = input_data if target_data is None else target_data

  def loss(y_true, y_pred):
    return ops.fusion_loss(y_pred, y_true, None, 0.2)

  model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, jit_compile=True)
  before = [np.array(w) for w in model.trainable_weights]
  history = model.fit(input_data, targets, batch_size=input_data.shape[0], epochs=fit_steps,
                      verbose=0)
  assert np.all(np.isfinite(history.history["loss"]))
  after = [np.array(w) for w in model.trainable_weights]
  changed = any(not np.allclose(b, a) for b, a in zip(before, after))
  assert changed == expect_trainable, (changed, expect_trainable)

  # .keras save / load round trip.
  if tmp_path is not None:
    path = str(tmp_path / f"{layer_cls.__name__}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, custom_objects={"loss": loss})
    np.testing.assert_allclose(loaded.predict(input_data, verbose=0),
                               model.predict(input_data, verbose=0), atol=1e-5)
  return model


def random_heatmaps(rng, batch=2, views=3, size=8, joints=3, sigma=1.0):
  """[B, V, size, size, J] float32 Gaussian heatmaps with random peaks."""
  rows, cols = np.mgrid[:size, :size]
  centres = rng.uniform(0, size - 1, size=(batch, views, joints, 2))
  d2 = ((cols[None, None, :, :, None] - centres[:, :, None, None, :, 0]) ** 2
        + (rows[None, None, :, :, None] - centres[:, :, None, None, :, 1]) ** 2)
  return np.exp(-d2 / (2 * sigma ** 2)).astype(np.float32)
