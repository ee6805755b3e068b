"""Few-shot finetuning of fusion on a new rig (paper Sec. 4.3).

MetaFuse^K: every ordered pair of the new rig starts from the meta-learned theta initialization,
omega_base is frozen and only theta [P, HW, 6] is trained, with Keras `fit` (Adam 5e-3, paper Sec.
5.1) on K labelled frames' heatmaps; of the start and every epoch, the best on a validation
split is kept (`mf_tf.train.selection`). The same function finetunes the baselines of paper
Table 1: AffineFuse^K (same, from SGD-pretrained parameters), NaiveFuse^K (free matrices) and the
calibrated init MetaFuse^0 -> K (theta from the rig's epipolar geometry). "metafuse_calibrated"
(both rigs calibrated, a departure from the paper) starts every pair from its calibrated theta
plus the residual meta-learned from calibrated theta (the "calibrated" recipe). Which starts a
run finetunes, and how, is a recipe (`mf_tf.train.recipes`, `mf_tf.train.adaptation.adapt`).

The finetuned layer is stored by `mf_tf.checkpoints.save_finetuned` (--mode=finetune:
`mf_tf.modes.finetune`). Given a `stopping.StopRequest` (--mode=finetune holds SIGINT / SIGTERM
with `stopping.deferred_stop_signals`), training stops after the step during which a signal
arrived, and the result says so (`"stopped_by"`).
"""

from __future__ import annotations


import keras
import numpy as np
import tensorflow as tf
from absl import logging

from mf_tf.data import codec as codec_lib
from mf_tf.fusion import layers as fusion_layers
from mf_tf.fusion import ops
from mf_tf.fusion import starts
from mf_tf.fusion import warp_kernel
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.rig import ordered_pairs
from mf_tf.geometry.rig import pair_index
from mf_tf.train import selection as selection_lib
from mf_tf.train import stopping
from mf_tf.train import summaries

class _FusionFit(keras.Model):
  """Training wrapper: heatmaps -> fused, loss = `ops.fusion_loss` with per-joint weights.

  With `proximal` > 0 the mean squared distance of the trainable weights from their starting
  values, times `proximal`, is added (a pull towards the pretrained or calibrated init).
  """

  def __init__(self, fusion, temperature, loss="mse", proximal=0.0, **kwargs):
    super().__init__(**kwargs)
    self.fusion = fusion
    self.temperature = float(temperature)
    self.loss_kind = loss
    self.proximal = float(proximal)
    # Variables, not constants: a reused compiled step (`restart`) reads the new start.
    self._anchors = [tf.Variable(v.numpy(), trainable=False) for v in
                     fusion.trainable_variables] if self.proximal > 0 else []
    self._optimizer_start = None

  def compile_for(self, learning_rate, jit_compile):
    """Compiles with Adam and notes the optimizer's starting state (for `restart`)."""
    self.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
    self.optimizer.build(self.fusion.trainable_variables)
    self._optimizer_start = [v.numpy() for v in self.optimizer.variables]

  def restart(self):
    """A new start from the layer's current weights: Adam's state (moments, step count) and
    the proximal anchors are reset, the compiled train step is kept."""
    for variable, value in zip(self.optimizer.variables, self._optimizer_start):
      variable.assign(value)
    for anchor, variable in zip(self._anchors, self.fusion.trainable_variables):
      anchor.assign(variable)

  def call(self, heatmaps):
    return self.fusion(heatmaps)

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    target, weights = y
    loss = ops.fusion_loss(y_pred, target, weights, self.temperature, self.loss_kind)
    if self.proximal > 0:
      loss += self.proximal * tf.add_n([tf.reduce_mean(tf.square(v - a)) for v, a in zip(
          self.fusion.trainable_variables, self._anchors)])
    return loss


class _SelectByValidation(keras.callbacks.Callback):
  """Keeps the best of {initial parameters, every epoch} by `selection.score` (ties: earlier).

  The initial parameters are a candidate, so finetuning never ends below its starting point on
  the validation frames. Stops after `patience` epochs without a new best.
  """

  def __init__(self, model, heatmaps, joints2d, targets, threshold_px, temperature, patience,
               criterion):
    super().__init__()
    self.layer, self.heatmaps, self.joints2d = model.fusion, heatmaps, joints2d
    self.targets = targets  # (target maps, weights) of the validation frames.
    self.threshold_px, self.read_temperature = threshold_px, temperature
    self.patience, self.criterion = patience, criterion
    self.initial_jdr, self.initial_loss = self._validate(model)
    self.best = selection_lib.score(criterion, self.initial_jdr, self.initial_loss)
    self.best_epoch = 0  # 0: the initial parameters.
    self.best_loss = self.initial_loss
    self.best_weights = [w.copy() for w in self.layer.get_weights()]
    self.jdr = []
    self._wait = 0

  def _validate(self, model):
    """(JDR, loss) of the validation frames from one forward pass: fit runs no validation of
    its own (that would compile a second XLA step per batch shape for the same numbers)."""
    fused = self.layer(self.heatmaps)
    jdr = selection_lib.validation_jdr(fused, self.joints2d, self.threshold_px,
                                       self.read_temperature)
    return jdr, float(model.compute_loss(y=self.targets, y_pred=fused))

  def on_epoch_end(self, epoch, logs=None):
    jdr, loss = self._validate(self.model)
    self.jdr.append(jdr)
    logs = {} if logs is None else logs
    logs["val_loss"], logs["val_jdr"] = loss, jdr
    score = selection_lib.score(self.criterion, jdr, loss)
    if selection_lib.best_index([self.best, score]) == 1:
      self.best, self.best_epoch, self.best_loss = score, epoch + 1, loss
      self.best_weights = [w.copy() for w in self.layer.get_weights()]
      self._wait = 0
    else:
      self._wait += 1
      if self._wait > self.patience:
        self.model.stop_training = True

  def on_train_end(self, logs=None):
    self.layer.set_weights(self.best_weights)


class _StopOnRequest(keras.callbacks.Callback):
  """Ends `fit` after the batch during which a stop signal arrived (`stopping.StopRequest`)."""

  def __init__(self, request: stopping.StopRequest):
    super().__init__()
    self.request = request

  def on_train_batch_end(self, batch, logs=None):
    if self.request.requested:
      self.model.stop_training = True


def _fit_model(layer, temperature, loss, proximal, learning_rate, jit_compile, compiled):
  """The compiled `_FusionFit` of `layer`: the one kept in `compiled` when it trains the same
  layer with the same settings (restarted), else a new one (kept there)."""
  key = (float(temperature), loss, float(proximal), float(learning_rate), bool(jit_compile))
  model = compiled.get("model")
  if model is not None and model.fusion is layer and compiled.get("key") == key:
    model.restart()
    return model
  model = _FusionFit(layer, temperature, loss, proximal, name="fusion_finetune")
  model.compile_for(learning_rate, jit_compile)
  compiled.update(model=model, key=key)
  return model


def select_shots(num_available: int, shots: int, seed: int) -> np.ndarray:
  """Indices of K labelled frames drawn without replacement from `num_available`.

  Raises:
    ValueError: K < 2 (a training and a validation frame are needed) or K > num_available.
  """
  if int(shots) != shots or shots < 2:
    raise ValueError(f"shots K={shots}, expected an integer >= 2 (train + validation frames)")
  if shots > num_available:
    raise ValueError(f"shots K={shots} is larger than the {num_available} frames available")
  return np.sort(np.random.default_rng(seed).choice(num_available, size=int(shots),
                                                    replace=False))


# Scales of the least-squares NaiveFuse matrices tried on validation frames (1: the MSE optimum).
NAIVE_SOLVE_SCALES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


def _split(shots: int, validation_fraction: float, seed: int):
  """(validation, training) frame indices of a seeded split, at least one frame each side."""
  if not 0.0 < validation_fraction < 1.0:
    raise ValueError(f"validation_fraction={validation_fraction}, expected in (0, 1)")
  num_val = min(max(1, int(round(validation_fraction * shots))), shots - 1)
  if num_val < 1:
    raise ValueError(f"K={shots} frames cannot be split into training and validation")
  order = np.random.default_rng(seed).permutation(shots)
  return order[:num_val], order[num_val:]


def _jdr_threshold(head_size_px, heatmaps_shape, val):
  """Validation detection radius: half the head size per frame and view, or 0.05 of the side."""
  if head_size_px is None:
    return 0.05 * heatmaps_shape[2]
  head = np.asarray(head_size_px, np.float64)
  if head.ndim not in (0, 2) or (head.ndim == 2 and head.shape != tuple(heatmaps_shape[:2])):
    raise ValueError(f"head_size_px has shape {head.shape}, expected a scalar or "
                     f"{tuple(heatmaps_shape[:2])} [K, V]")
  threshold = 0.5 * np.where(head > 0, head, np.nan)
  return threshold[val] if threshold.ndim == 2 else float(threshold)


def _check_frames(heatmaps, joints2d):
  heatmaps = np.asarray(heatmaps, np.float32)
  joints2d = np.asarray(joints2d, np.float32)
  if heatmaps.ndim != 5 or joints2d.shape != (heatmaps.shape[0], heatmaps.shape[1],
                                              heatmaps.shape[4], 2):
    raise ValueError(f"heatmaps {heatmaps.shape} and joints2d {joints2d.shape} must be "
                     "[K, V, H, W, J] and [K, V, J, 2]")
  if not np.all(np.isfinite(heatmaps)):
    raise ValueError("fusion training heatmaps hold NaN or Inf")
  return heatmaps, joints2d


def naive_least_squares(heatmaps, targets, weights, ridge: float = 1e-4,
                        chunk_rows: int = 4096) -> np.ndarray:
  """The NaiveFuse matrices minimizing the paper's MSE loss on the given frames (ridge regression).

  For every target view v, the V - 1 matrices W_{u->v} jointly minimize
  sum over supervised (frame, joint) of ||t_v - h_v - sum_u W_{u->v} h_u||^2
  + ridge * rows * sum_u ||W_{u->v}||_F^2: the point that gradient training of Eq. 1 with the MSE
  loss converges to, solved exactly from the normal equations (products of float32 chunks summed
  and solved in float64).

  Args:
    heatmaps: [N, V, H, W, J] initial heatmaps.
    targets: [N, V, H, W, J] target heatmaps (`HeatmapCodec.encode`).
    weights: [N, V, J] 0/1 supervision of each joint in each view.
    ridge: Ridge weight per supervised row (scale-free in the number of frames).
    chunk_rows: Rows (frame x joint) accumulated at a time.

  Returns:
    [P, HW, HW] float32 matrices in `ordered_pairs` order (target pixel, source pixel).
  """
  heatmaps = np.asarray(heatmaps, np.float32)
  num_frames, num_views, height, width, num_joints = heatmaps.shape
  hw = height * width
  if not ridge > 0:
    raise ValueError(f"ridge={ridge}, expected > 0 (the normal equations need it)")

  def rows_of(maps):  # [N, V, H, W, J] -> rows (frame, joint): [N * J, V, HW].
    return np.transpose(np.asarray(maps, np.float32).reshape(
        num_frames, num_views, hw, num_joints), (0, 3, 1, 2)).reshape(-1, num_views, hw)

  x, t = rows_of(heatmaps), rows_of(targets)
  w = np.transpose(np.asarray(weights, np.float32), (0, 2, 1)).reshape(-1, num_views)
  pairs = ordered_pairs(num_views)
  matrices = np.zeros((len(pairs), hw, hw), np.float32)
  for target in range(num_views):
    sources = [u for u in range(num_views) if u != target]
    rows = np.flatnonzero(w[:, target] > 0)
    if rows.size == 0:
      continue
    gram = np.zeros((len(sources) * hw,) * 2)
    cross = np.zeros((len(sources) * hw, hw))
    for start in range(0, rows.size, chunk_rows):
      chunk = rows[start:start + chunk_rows]
      features = tf.constant(x[chunk][:, sources].reshape(len(chunk), -1))
      residual = tf.constant(t[chunk, target] - x[chunk, target])
      # float32 products (on an accelerator when there is one), float64 sums across chunks.
      gram += tf.matmul(features, features, transpose_a=True).numpy()
      cross += tf.matmul(features, residual, transpose_a=True).numpy()
    gram[np.diag_indices_from(gram)] += ridge * rows.size
    solution = np.linalg.solve(gram, cross)  # [(V - 1) HW, HW]: fused_v = h_v + solution^T x.
    for n, source in enumerate(sources):
      matrices[pair_index(source, target, num_views)] = solution[n * hw:(n + 1) * hw].T
  return matrices


def solve_naive_fusion(layer: fusion_layers.NaiveFusion, heatmaps, joints2d, *,
                       target_sigma: float, ridge: float = 1e-4,
                       scales=NAIVE_SOLVE_SCALES, validation_fraction: float = 0.2,
                       seed: int = 0, head_size_px=None, epipolar_rig: Rig | None = None,
                       line_width_px: float = 1.0, line_value: float = 0.3) -> dict:
  """NaiveFuse trained to convergence: the exact MSE optimum, its scale chosen by validation JDR.

  `naive_least_squares` on the training split gives the matrices that minimize the paper's MSE
  loss (what `finetune_fusion` with loss "mse" approaches after many epochs, at any data size in
  seconds). The MSE optimum adds the conditional mean of the target, which is too weak to move a
  confident wrong peak; every scale in `scales` and the starting matrices are scored by the
  detection rate of the validation frames, as `finetune_fusion` selects, and the best is kept
  (ties: the smaller change), so the result is never below the start on validation frames.

  With `epipolar_rig`, one more candidate is scored: the epipolar matrices of the geometry
  estimated from the training split's labels alone (`starts.make_fusion_layer("self_calibrated")`
  materialized; the rig's calibration is not used): a point of NaiveFuse's own parameter space
  that the estimators from zero do not reach on a few thousand frames (measured in BUILD.md,
  `benchmarks/naive_full_study.py`), a start for the free matrices, not a different model.
  Ties keep the earlier candidate (start, least squares, epipolar).

  Args:
    layer: A built `NaiveFusion` (its matrices are replaced in place by the kept candidate).
    heatmaps: [N, V, H, W, J] initial heatmaps.
    joints2d: [N, V, J, 2] true joints in heatmap px.
    target_sigma: Target std in heatmap px.
    ridge, scales: `naive_least_squares` ridge per row; positive factors of its matrices.
    validation_fraction, seed: The validation split (as `finetune_fusion`).
    head_size_px: Validation detection radius (as `finetune_fusion`).
    epipolar_rig: The rig, for the epipolar candidate (None: least squares only).
    line_width_px, line_value: The epipolar candidate's line base (as MetaFuse^0).

  Returns:
    {"start": the kept candidate ("initial", "least_squares" or "epipolar"), "scale": the kept
    least-squares factor (0.0 for the other candidates), "val_jdr": {factor: JDR},
    "epipolar_val_jdr": float or None, "initial_val_jdr": float, "best_val_jdr": float,
    "train_frames": int, "restored_init": bool}.
  """
  if not isinstance(layer, fusion_layers.NaiveFusion) or not layer.built:
    raise ValueError(f"solve_naive_fusion needs a built NaiveFusion, got {type(layer).__name__}")
  heatmaps, joints2d = _check_frames(heatmaps, joints2d)
  scales = tuple(float(s) for s in scales)
  if not scales or min(scales) <= 0:
    raise ValueError(f"scales={scales}, expected positive factors")
  val, train = _split(heatmaps.shape[0], validation_fraction, seed)
  threshold = _jdr_threshold(head_size_px, heatmaps.shape, val)
  target, weights = codec_lib.HeatmapCodec(heatmaps.shape[2], target_sigma).encode(joints2d)
  solution = naive_least_squares(heatmaps[train], target.numpy()[train],
                                 weights.numpy()[train], ridge)
  start = layer.matrices.numpy()

  def score(matrices):
    layer.matrices.assign(matrices)
    return selection_lib.validation_jdr(layer(heatmaps[val]), joints2d[val], threshold,
                                        layer.temperature)

  initial = score(start)
  val_jdr = {scale: score(scale * solution) for scale in scales}
  ordered = sorted(val_jdr)  # Ties keep the smaller change.
  best_scale = ordered[selection_lib.best_index([val_jdr[s] for s in ordered])]
  # Candidates in order of preference on ties: the start, least squares, the epipolar map.
  candidates = [("initial", initial, start, 0.0),
                ("least_squares", val_jdr[best_scale], best_scale * solution, best_scale)]
  epipolar_jdr = None
  if epipolar_rig is not None:
    epipolar = _label_geometry_matrices(layer, epipolar_rig, heatmaps.shape[2], joints2d[train],
                                        line_width_px, line_value)
    epipolar_jdr = score(epipolar)
    candidates.append(("epipolar", epipolar_jdr, epipolar, 0.0))
  kept = candidates[selection_lib.best_index([candidate[1] for candidate in candidates])]
  layer.matrices.assign(kept[2])
  logging.info("naive solve: %d training frames, validation JDR %s%s (start %.1f%%); kept %s",
               len(train), ", ".join(f"x{s:g} {j:.1f}%" for s, j in val_jdr.items()),
               "" if epipolar_jdr is None else f", epipolar {epipolar_jdr:.1f}%", initial,
               f"least squares x{best_scale:g}" if kept[0] == "least_squares" else kept[0])
  return {"start": kept[0], "scale": kept[3], "val_jdr": val_jdr,
          "epipolar_val_jdr": None if epipolar_jdr is None else float(epipolar_jdr),
          "initial_val_jdr": float(initial), "best_val_jdr": float(kept[1]),
          "train_frames": int(len(train)), "restored_init": kept[0] == "initial"}


def _label_geometry_matrices(layer, rig: Rig, size: int, labels, line_width_px: float,
                             line_value: float) -> np.ndarray:
  """[P, HW, HW] matrices of the epipolar fusion of the labels' geometry (self-calibrated)."""
  epipolar = starts.make_fusion_layer(
      "self_calibrated", rig, size, labels=labels, temperature=layer.temperature,
      line_width_px=line_width_px, line_value=line_value, name=f"{layer.name}_epipolar")
  return epipolar.materialize().matrices.numpy()


def finetune_fusion(layer: keras.layers.Layer, heatmaps, joints2d, *, target_sigma: float,
                    learning_rate: float = 5e-3, epochs: int = 30, batch_size: int = 8,
                    validation_fraction: float = 0.2, patience: int = 5, seed: int = 0,
                    log_dir: str | None = None, progress: bool = True,
                    jit_compile: bool | None = None, loss_temperature: float | None = None,
                    loss: str = "mse", proximal: float = 0.0, selection: str = "val_jdr",
                    head_size_px: float | None = None, compiled: dict | None = None,
                    stop: stopping.StopRequest | None = None) -> dict:
  """Trains a fusion layer in place on labelled frames with Keras `fit` (paper Sec. 4.3).

  The one fusion training loop of mf_tf (few-shot finetuning of every start, NaiveFuse on a
  whole rig's frames). `AffineFusion` trains theta only (omega_base frozen, `train_base=False`;
  with `theta_grid` its smooth residual field); `NaiveFusion` trains its matrices.

  Model selection: the initial parameters and the parameters after every epoch are candidates;
  the one with the best validation criterion is kept (`selection`, through
  `mf_tf.train.selection`): "val_jdr" (default) the detection rate of the held-out frames
  (`selection.validation_jdr`; ties broken by the lower validation loss), "val_loss"
  the validation loss. Since the starting point is a candidate, finetuning never ends below it
  on the validation frames; `restored_init` says when the starting point was kept. Training
  stops after `patience` epochs without a new best.

  Args:
    layer: From `starts.make_fusion_layer` (built, V views, H x H heatmaps).
    heatmaps: [K, V, H, W, J] initial heatmaps of the K frames.
    joints2d: [K, V, J, 2] ground-truth joints in heatmap px; joints inside the heatmap are
      supervised (Gaussian targets of std `target_sigma`).
    target_sigma: Target std in heatmap px.
    learning_rate, epochs, batch_size: Adam learning rate (paper: 5e-3), maximum epochs, frames
      per step.
    validation_fraction: Share of the K frames held out for selection (at least one frame
      each side).
    patience, seed: Epochs without a new best before stopping; seed of the split and shuffling.
    log_dir, progress: Optional TensorBoard directory; Keras progress bar.
    jit_compile: Compile the train step with XLA; None: where the warp does not run on the
      kernels (`warp_kernel.xla_for_warps()`: a GPU, or kernels that cannot build).
    loss_temperature: Softmax temperature of the training loss; None: the layer's temperature
      (the read-out temperature).
    loss, selection: `ops.fusion_loss` kind ("mse" or "ce"); "val_jdr" or "val_loss".
    proximal: Weight of the squared distance of the trained weights from their start.
    head_size_px: Head size for the validation JDR (detected within half of it), heatmap px:
      a scalar or [K, V] per frame and view (e.g. the frames' "head_size"; <= 0 or nan drops
      the view); None: CrossView's 0.1 of the side (25.6 px at 256 px input).
    compiled: Optional dict keeping the compiled step between calls on the same layer object
      (new weights, same loss, temperature, proximal weight, learning rate and `jit_compile`:
      not traced again; Adam and the proximal anchors restart from the new weights).
    stop: Optional stop request (`stopping.deferred_stop_signals`): once a signal is recorded,
      training ends after the current step (the layer holds the best parameters so far).

  Returns:
    {"epochs": int, "loss": [...], "val_loss": [...], "val_jdr": [...],
    "initial_val_loss": float, "initial_val_jdr": float, "best_val_jdr": float,
    "best_val_loss": float (of the kept parameters), "best_epoch": int (0: the initial
    parameters), "restored_init": bool, "selection": str, "stopped_by": the signal's name
    ("SIGTERM") when `stop` ended training early, else ""}.
  """
  heatmaps, joints2d = _check_frames(heatmaps, joints2d)
  _check_training(layer, learning_rate, epochs, batch_size, patience, selection, loss, proximal)
  val, train = _split(heatmaps.shape[0], validation_fraction, seed)
  target, weights = codec_lib.HeatmapCodec(heatmaps.shape[2], target_sigma).encode(joints2d)
  target, weights = target.numpy(), weights.numpy()
  temperature = layer.temperature if loss_temperature is None else float(loss_temperature)
  if not temperature > 0:
    raise ValueError(f"loss_temperature={loss_temperature}, expected > 0")
  threshold = _jdr_threshold(head_size_px, heatmaps.shape, val)
  if jit_compile is None:
    jit_compile = warp_kernel.xla_for_warps()
  model = _fit_model(layer, temperature, loss, proximal, learning_rate, jit_compile,
                     {} if compiled is None else compiled)
  selector = _SelectByValidation(model, heatmaps[val], joints2d[val],
                                 (tf.constant(target[val]), tf.constant(weights[val])), threshold,
                                 layer.temperature, patience, selection)
  callbacks = [selector] + ([_StopOnRequest(stop)] if stop is not None else [])
  if log_dir:
    callbacks.append(summaries.ScalarLogger(log_dir, "finetune"))
  keras.utils.set_random_seed(seed)
  history = model.fit(heatmaps[train], (target[train], weights[train]),
                      epochs=epochs, batch_size=batch_size, shuffle=True,
                      callbacks=callbacks, verbose=1 if progress else 0)
  return _finetune_result(history.history, selector, selection, stop)


def _check_training(layer, learning_rate, epochs, batch_size, patience, selection, loss,
                    proximal) -> None:
  """ValueError naming the first bad `finetune_fusion` setting."""
  if not learning_rate > 0:
    raise ValueError(f"finetune learning_rate={learning_rate}, expected > 0")
  if epochs < 1 or batch_size < 1 or patience < 0:
    raise ValueError(f"epochs={epochs}, batch_size={batch_size}, patience={patience}: expected "
                     "epochs, batch_size >= 1 and patience >= 0")
  if selection not in selection_lib.SELECTIONS:
    raise ValueError(f"finetune selection={selection!r}, expected one of "
                     f"{selection_lib.SELECTIONS}")
  if loss not in ops.LOSSES:
    raise ValueError(f"finetune loss={loss!r}, expected one of {ops.LOSSES}")
  if not proximal >= 0:
    raise ValueError(f"finetune proximal={proximal}, expected >= 0")
  if isinstance(layer, fusion_layers.AffineFusion) and layer.omega_base.trainable:
    raise ValueError("finetuning trains theta only: build the AffineFusion with "
                     "train_base=False (paper Sec. 4.3)")


def _finetune_result(history: dict, selector: _SelectByValidation, selection: str,
                     stop: stopping.StopRequest | None) -> dict:
  """`finetune_fusion`'s result (its Returns) from Keras' history and the selection."""
  initial_jdr, initial_val = selector.initial_jdr, selector.initial_loss
  restored_init = selector.best_epoch == 0
  best_jdr = initial_jdr if restored_init else selector.jdr[selector.best_epoch - 1]
  if restored_init:
    logging.info("finetune: no epoch beat the initial parameters on the validation frames "
                 "(%s; JDR %.1f%%, loss %.4f); kept them", selection, initial_jdr, initial_val)
  else:
    logging.info("finetune: kept epoch %d of %d (validation JDR %.1f%% -> %.1f%%)",
                 selector.best_epoch, len(selector.jdr), initial_jdr, best_jdr)
  return {"epochs": len(history["loss"]),
          "loss": [float(v) for v in history["loss"]],
          "val_loss": [float(v) for v in history["val_loss"]],
          "val_jdr": [float(v) for v in selector.jdr],
          "initial_val_loss": initial_val, "initial_val_jdr": initial_jdr,
          "best_val_jdr": float(best_jdr), "best_val_loss": float(selector.best_loss),
          "best_epoch": int(selector.best_epoch),
          "restored_init": bool(restored_init), "selection": selection,
          "stopped_by": stop.name if stop is not None else ""}


