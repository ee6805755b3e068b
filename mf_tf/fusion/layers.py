"""Keras 3 fusion layers: thin wrappers over `mf_tf.fusion.ops` (paper Sec. 3-4, Table 1).

All layers map heatmaps [B, V, H, W, J] to fused heatmaps of the same shape (pre-softmax; pass
`softmax=True` to get the per-channel temperature softmax), work for any V >= 2, validate their
input at the Keras boundary (static shapes in Python; NaN/Inf with `tf.debugging` where not
XLA-compiled, since XLA drops runtime assertions) and compile under `jit_compile=True`.

MAML and finetuning call the pure math with fast weights instead of the layer:
`ops.fuse(h, ops.affine_matrices(omega_base, theta))`, or without materialized matrices
`ops.fuse_affine(h, omega_base, theta)`; `AffineFusion.omega_base` and `.theta` are the variables
to differentiate.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mf_tf.fusion import ops
from mf_tf.fusion import sparse
from mf_tf.fusion import warp_kernel

_PACKAGE = "mf_tf"

# Materialization runs the warp kernels where `warp_kernel.use_kernels()` picks them (on the CPU),
# elsewhere the sampler compiled: the unfused (eager) TF-op sampler holds many [P, HW, HW]
# temporaries (measured in BUILD.md), the compiled one and the kernels about one.
# It is called one pair at a time (same shapes, one trace), so peak memory stays at one pair's.
_affine_matrices_compiled = tf.function(ops.affine_matrices, jit_compile=True)


def _as_hw_list(heatmap_size):
  height, width = ops.heatmap_hw(heatmap_size)
  return [height, width]


class _FusionLayer(keras.layers.Layer):
  """Shared validation, softmax option and config for fusion layers."""

  def __init__(self, num_views, heatmap_size, temperature=ops.DEFAULT_TEMPERATURE, **kwargs):
    super().__init__(**kwargs)
    if num_views is not None:
      ops.num_pairs_for(num_views)  # Raises for num_views < 2.
    if not temperature > 0:
      raise ValueError(f"temperature must be positive, got {temperature}")
    self.num_views = None if num_views is None else int(num_views)
    self.heatmap_size = None if heatmap_size is None else _as_hw_list(heatmap_size)
    self.temperature = float(temperature)

  def _require_geometry(self):
    if self.num_views is None or self.heatmap_size is None:
      raise ValueError(f"{self.name}: num_views and heatmap_size are required, got "
                       f"num_views={self.num_views}, heatmap_size={self.heatmap_size}")

  @property
  def num_pairs(self) -> int:
    return ops.num_pairs_for(self.num_views)

  @property
  def num_pixels(self) -> int:
    return self.heatmap_size[0] * self.heatmap_size[1]

  def _check_shape(self, shape):
    shape = tf.TensorShape(shape)
    size = self.heatmap_size or ["H", "W"]
    expected = f"[batch, {self.num_views or 'views'}, {size[0]}, {size[1]}, joints]"
    if shape.rank != 5:
      raise ValueError(f"{self.name}: heatmaps must be {expected}, got shape {shape}")
    if self.num_views is not None and shape[1] is not None and shape[1] != self.num_views:
      raise ValueError(f"{self.name}: heatmaps have {shape[1]} views (shape {shape}), expected "
                       f"num_views={self.num_views}: {expected}")
    if self.heatmap_size is not None and tuple(shape[2:4]) != tuple(self.heatmap_size):
      raise ValueError(f"{self.name}: heatmaps are {shape[2]}x{shape[3]} (shape {shape}), "
                       f"expected heatmap_size {self.heatmap_size[0]}x{self.heatmap_size[1]}: "
                       f"{expected}")

  def build(self, input_shape):
    self._check_shape(input_shape)
    self._build_weights()
    self.built = True

  def _build_weights(self):
    pass

  def call(self, heatmaps, softmax=False):
    self._check_shape(heatmaps.shape)
    heatmaps = tf.debugging.assert_all_finite(
        heatmaps, f"{self.name}: heatmaps hold NaN or Inf; expected finite values")
    fused = self._fuse(heatmaps)
    return ops.softmax_temperature(fused, self.temperature) if softmax else fused

  def _fuse(self, heatmaps):
    raise NotImplementedError

  def compute_output_shape(self, input_shape):
    self._check_shape(input_shape)
    return tuple(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update({"num_views": self.num_views,
                   "heatmap_size": None if self.heatmap_size is None else list(self.heatmap_size),
                   "temperature": self.temperature})
    return config


def _checked_array(value, shape, name, layer_name, dtype=np.float32):
  array = np.asarray(value)
  if tuple(array.shape) != tuple(shape):
    raise ValueError(f"{layer_name}: {name} has shape {array.shape}, expected {tuple(shape)}")
  if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
    raise ValueError(f"{layer_name}: {name} holds NaN or Inf; expected finite values")
  return array.astype(dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AffineFusion(_FusionLayer):
  """MetaFuse / AffineFuse fusion: W_{u->v}[i] = T_{theta_i}(omega_base) (paper Eq. 1-2).

  Parameters: one base map omega_base [H, W] shared by all pairs and pixels, and one 6-parameter
  affine per (ordered pair, target pixel), theta [P, H*W, 6] (normalized align_corners
  coordinates, see `mf_tf.fusion.sampler`): HW + 6 HW P weights instead of HW^2 P.

  Args:
    num_views: V >= 2; pairs in `mf_tf.geometry.rig.ordered_pairs` order, P = V (V - 1).
    heatmap_size: int or (H, W).
    temperature: Softmax temperature for `softmax=True` (paper: 0.2).
    train_base: Whether omega_base is trainable (False when finetuning on a new rig).
    base_init: "line" (`ops.line_base`, a horizontal epipolar-line prior) or "zeros".
    base_scale: Peak value of the "line" init. Small, so fusion starts close to the identity.
    theta_init: "translation" (`ops.translation_theta`) or "identity" (`ops.identity_theta`).
    theta_grid: 0 (the paper): theta is one free 6-vector per (pair, target pixel), trained
      directly. g >= 2: a smooth residual field: `theta` is frozen (the starting point, e.g. the
      meta-learned or calibrated init) and what trains is `theta_residual` [P, g * g, 6] on a
      g x g grid, interpolated bilinearly to every pixel (`ops.theta_field_basis`), so
      theta_i = theta[i] + sum_k B[i, k] theta_residual[k]. Few labelled frames touch only the
      pixels near joints; the field moves every pixel's theta with them.
    remat: True: fuse with `ops.fuse_affine`, which never materializes the [P, HW, HW] matrices
      and whose gradients (first and second order) recompute them chunk by chunk. False: build
      the matrices (`fusion_matrices`) and apply `ops.fuse`, whose backward keeps about a dozen
      [P, HW, HW] tensors. Same values and gradients. 4-view rig at 64x64, batch 8, 17 joints,
      forward + backward under XLA on CPU: 0.26 GB peak instead of 8.9 GB, and faster
      (benchmarks/memory_bench.py).
    **kwargs: Passed to `keras.layers.Layer`.

  Call arguments:
    heatmaps: [B, V, H, W, J] initial heatmaps.
    softmax: If True return softmax_T of the fused heatmaps, else the fused heatmaps.

  Reference: Xie, Wang, Wang, "MetaFuse", CVPR 2020, Sec. 4.1.
  """

  def __init__(self, num_views, heatmap_size, temperature=ops.DEFAULT_TEMPERATURE,
               train_base=True, base_init="line", base_scale=0.05, theta_init="translation",
               theta_grid=0, remat=True, **kwargs):
    super().__init__(num_views, heatmap_size, temperature, **kwargs)
    self._require_geometry()
    if base_init not in ("line", "zeros"):
      raise ValueError(f"base_init must be 'line' or 'zeros', got {base_init!r}")
    if theta_init not in ("translation", "identity"):
      raise ValueError(f"theta_init must be 'translation' or 'identity', got {theta_init!r}")
    self.train_base = bool(train_base)
    self.base_init = base_init
    self.base_scale = float(base_scale)
    self.theta_init = theta_init
    self.theta_grid = int(theta_grid)
    self.remat = bool(remat)
    if self.theta_grid == 1 or self.theta_grid < 0:
      raise ValueError(f"theta_grid={theta_grid}, expected 0 (per-pixel theta) or >= 2")

  def _build_weights(self):
    if self.base_init == "line":
      base = ops.line_base(self.heatmap_size, 1.0, self.base_scale)
    else:
      base = np.zeros(self.heatmap_size, np.float32)
    make_theta = ops.translation_theta if self.theta_init == "translation" else ops.identity_theta
    theta = make_theta(self.heatmap_size, self.num_pairs)
    self.omega_base = self.add_weight(
        name="omega_base", shape=tuple(self.heatmap_size),
        initializer=keras.initializers.Constant(base), trainable=self.train_base)
    self.theta = self.add_weight(
        name="theta", shape=(self.num_pairs, self.num_pixels, 6),
        initializer=keras.initializers.Constant(theta), trainable=not self.theta_grid)
    if self.theta_grid:
      self._theta_basis = tf.constant(ops.theta_field_basis(self.heatmap_size, self.theta_grid))
      self.theta_residual = self.add_weight(
          name="theta_residual", shape=(self.num_pairs, self.theta_grid ** 2, 6),
          initializer="zeros", trainable=True)

  def effective_theta(self):
    """[P, HW, 6] the theta the fusion uses (`theta`, plus the smooth residual field)."""
    if not self.theta_grid:
      return self.theta
    return self.theta + tf.einsum("nk,pkc->pnc", self._theta_basis, self.theta_residual)

  def freeze_base(self):
    """Stops training omega_base (paper Sec. 4.3: finetune theta only)."""
    self.train_base = False
    if self.built:
      self.omega_base.trainable = False

  def assign_parameters(self, omega_base=None, theta=None):
    """Sets omega_base [H, W] and/or theta [P, HW, 6] from arrays (e.g. `calibrated_theta`)."""
    if not self.built:
      self.build((None, self.num_views, *self.heatmap_size, 1))
    if omega_base is not None:
      self.omega_base.assign(_checked_array(omega_base, self.heatmap_size, "omega_base",
                                            self.name))
    if theta is not None:
      self.theta.assign(_checked_array(theta, (self.num_pairs, self.num_pixels, 6), "theta",
                                       self.name))

  def _check_parameters(self):
    for name, value in (("omega_base", self.omega_base), ("theta", self.effective_theta())):
      if not np.all(np.isfinite(value.numpy())):
        raise ValueError(f"{self.name}: {name} holds NaN or Inf; expected finite values")

  def fusion_matrices(self):
    """[P, HW, HW] current fusion matrices."""
    return ops.affine_matrices(ops.check_finite(self.omega_base, "omega_base"),
                               ops.check_finite(self.effective_theta(), "theta"))

  def _fuse(self, heatmaps):
    if self.remat:
      return ops.fuse_affine(heatmaps, ops.check_finite(self.omega_base, "omega_base"),
                             ops.check_finite(self.effective_theta(), "theta"))
    return ops.fuse(heatmaps, tf.cast(self.fusion_matrices(), heatmaps.dtype))

  def materialize(self, top_k=None, name=None):
    """Frozen copy for inference: dense matrices, or top-k values/indices per row.

    Args:
      top_k: None for dense [P, HW, HW] matrices, else entries kept per row.
      name: Layer name (default: this layer's name + "_materialized").

    Returns:
      A built `MaterializedFusion` with the same outputs (dense: within float rounding).
    """
    self._check_parameters()
    omega_base = tf.convert_to_tensor(self.omega_base)
    theta = tf.convert_to_tensor(self.effective_theta())
    chunks = []  # One pair at a time: a 4-view rig at 64 x 64 would otherwise need > 20 GB.
    for pair in range(int(theta.shape[0])):
      matrix = (ops.affine_matrices(omega_base, theta[pair:pair + 1])
                if warp_kernel.use_kernels() else
                _affine_matrices_compiled(omega_base, theta[pair:pair + 1]))
      chunks.append(matrix.numpy() if top_k is None else
                    tuple(t.numpy() for t in sparse.sparsify_top_k(matrix, top_k)))
    kwargs = dict(num_views=self.num_views, heatmap_size=self.heatmap_size,
                  temperature=self.temperature, name=name or f"{self.name}_materialized")
    if top_k is None:
      return MaterializedFusion(matrices=np.concatenate(chunks), **kwargs)
    values, indices = (np.concatenate(parts) for parts in zip(*chunks))
    return MaterializedFusion(top_k=int(values.shape[-1]), values=values, indices=indices,
                              **kwargs)

  def get_config(self):
    config = super().get_config()
    config.update({"train_base": self.train_base, "base_init": self.base_init,
                   "base_scale": self.base_scale, "theta_init": self.theta_init,
                   "theta_grid": self.theta_grid, "remat": self.remat})
    return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NaiveFusion(_FusionLayer):
  """NaiveFuse / CrossView fusion: a free HW x HW matrix per ordered pair (paper Sec. 3).

  Args:
    num_views: V >= 2.
    heatmap_size: int or (H, W).
    temperature: Softmax temperature for `softmax=True`.
    init_stddev: Standard deviation of the normal init; 0 starts at exactly zero (no fusion).
    **kwargs: Passed to `keras.layers.Layer`.

  Call arguments:
    heatmaps: [B, V, H, W, J].
    softmax: Return softmax_T of the fused heatmaps.

  Reference: Qiu et al., "Cross View Fusion for 3D Human Pose Estimation", ICCV 2019.
  """

  def __init__(self, num_views, heatmap_size, temperature=ops.DEFAULT_TEMPERATURE,
               init_stddev=0.0, **kwargs):
    super().__init__(num_views, heatmap_size, temperature, **kwargs)
    self._require_geometry()
    self.init_stddev = float(init_stddev)

  def _build_weights(self):
    initializer = (keras.initializers.RandomNormal(stddev=self.init_stddev)
                   if self.init_stddev > 0 else "zeros")
    self.matrices = self.add_weight(
        name="matrices", shape=(self.num_pairs, self.num_pixels, self.num_pixels),
        initializer=initializer, trainable=True)

  def fusion_matrices(self):
    return self.matrices

  def _fuse(self, heatmaps):
    fused = ops.fuse(heatmaps, tf.cast(self.matrices, heatmaps.dtype))
    # Checking the fused output (finite inputs) costs B V HW J instead of a pass over P HW^2.
    return tf.debugging.assert_all_finite(
        fused, f"{self.name}: fused heatmaps are not finite although the inputs are: fusion "
        "parameter 'matrices' holds NaN or Inf")

  def get_config(self):
    config = super().get_config()
    config["init_stddev"] = self.init_stddev
    return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoFusion(_FusionLayer):
  """No-Fusion baseline (paper Table 1): returns the heatmaps unchanged (or their softmax).

  Args:
    num_views: Optional V >= 2; None accepts any number of views.
    heatmap_size: Optional int or (H, W); None accepts any size.
    temperature: Softmax temperature for `softmax=True`.
    **kwargs: Passed to `keras.layers.Layer`.

  Call arguments:
    heatmaps: [B, V, H, W, J].
    softmax: Return softmax_T of the heatmaps.
  """

  def __init__(self, num_views=None, heatmap_size=None, temperature=ops.DEFAULT_TEMPERATURE,
               **kwargs):
    super().__init__(num_views, heatmap_size, temperature, **kwargs)

  def _fuse(self, heatmaps):
    return tf.identity(heatmaps)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaterializedFusion(_FusionLayer):
  """Fusion with constant matrices, for inference and export (no sampler in the graph).

  Dense mode stores [P, HW, HW] matrices (cost of NaiveFuse); sparse mode (`top_k`) stores the k
  largest-magnitude weights per row, values [P, HW, k] and int32 source indices [P, HW, k], fused
  by `sparse.fuse_sparse`. The constants are non-trainable weights (saved with the model's weights,
  not in its config); pass them as arrays, or load them with the model's weights.

  Args:
    num_views: V >= 2.
    heatmap_size: int or (H, W).
    temperature: Softmax temperature for `softmax=True`.
    top_k: None for dense, else k.
    matrices: Dense mode: optional [P, HW, HW] initial value.
    values: Sparse mode: optional [P, HW, k] initial value.
    indices: Sparse mode: optional [P, HW, k] initial value, in [0, HW).
    **kwargs: Passed to `keras.layers.Layer`.

  Call arguments:
    heatmaps: [B, V, H, W, J].
    softmax: Return softmax_T of the fused heatmaps.
  """

  def __init__(self, num_views, heatmap_size, temperature=ops.DEFAULT_TEMPERATURE, top_k=None,
               matrices=None, values=None, indices=None, **kwargs):
    super().__init__(num_views, heatmap_size, temperature, **kwargs)
    self._require_geometry()
    self.top_k = None if top_k is None else int(top_k)
    pairs, pixels = self.num_pairs, self.num_pixels
    if self.top_k is None:
      if values is not None or indices is not None:
        raise ValueError(f"{self.name}: values/indices need top_k; dense mode takes matrices")
      self._initial = {"matrices": None if matrices is None else _checked_array(
          matrices, (pairs, pixels, pixels), "matrices", self.name)}
    else:
      if not 1 <= self.top_k <= pixels:
        raise ValueError(f"{self.name}: top_k={top_k}, expected 1..{pixels}")
      if matrices is not None:
        raise ValueError(f"{self.name}: sparse mode (top_k) takes values/indices, not matrices")
      shape = (pairs, pixels, self.top_k)
      self._initial = {
          "values": None if values is None else _checked_array(values, shape, "values",
                                                               self.name),
          "indices": None if indices is None else _checked_array(indices, shape, "indices",
                                                                 self.name, np.int32)}
      if self._initial["indices"] is not None and (
          self._initial["indices"].min() < 0 or self._initial["indices"].max() >= pixels):
        raise ValueError(f"{self.name}: indices must lie in [0, {pixels})")
    if any(value is not None for value in self._initial.values()):
      self.build((None, self.num_views, *self.heatmap_size, None))

  def _build_weights(self):
    pairs, pixels = self.num_pairs, self.num_pixels
    if self.top_k is None:
      self.matrices = self.add_weight(name="matrices", shape=(pairs, pixels, pixels),
                                      initializer="zeros", trainable=False)
    else:
      self.values = self.add_weight(name="values", shape=(pairs, pixels, self.top_k),
                                    initializer="zeros", trainable=False)
      self.indices = self.add_weight(name="indices", shape=(pairs, pixels, self.top_k),
                                     initializer="zeros", dtype="int32", trainable=False)
    for name, value in self._initial.items():
      if value is not None:
        getattr(self, name).assign(value)
    self._initial = {}

  def _fuse(self, heatmaps):
    if self.top_k is None:
      return ops.fuse(heatmaps, tf.cast(self.matrices, heatmaps.dtype))
    return sparse.fuse_sparse(heatmaps, tf.cast(self.values, heatmaps.dtype), self.indices)

  def get_config(self):
    config = super().get_config()
    config["top_k"] = self.top_k
    return config

