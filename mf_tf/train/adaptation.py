"""Adaptation of fusion to a new rig: a recipe's starts finetuned on K frames, the best one kept.

The one adaptation path of mf_tf: --mode=finetune, the demo and the benchmark build the starts of
a recipe (`start_layers`, `mf_tf.fusion.starts.make_fusion_layer` with the recipe's theta
parameterization) and call `adapt`, which finetunes each (`finetune.finetune_fusion` with the
recipe's loss, selection and proximal weight) and keeps the best through `mf_tf.train.selection`,
the same selection that chose each start's epoch.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from absl import logging

from mf_tf.fusion import starts as starts_lib
from mf_tf.train import finetune
from mf_tf.train import recipes as recipes_lib
from mf_tf.train import selection
from mf_tf.train import stopping


def epochs_for_steps(steps: int, batch_size: int, num_frames: int,
                     validation_fraction: float = 0.2) -> int:
  """Epochs over the training part of `num_frames` (the validation split held out as
  `finetune_fusion` holds it) that make about `steps` optimizer steps of `batch_size` frames, so
  every K gets about the same number of steps."""
  train_count = max(1, num_frames - min(max(1, int(round(validation_fraction * num_frames))),
                                        num_frames - 1))
  return max(1, int(round(steps * batch_size / train_count)))


def start_layers(recipe: recipes_lib.Recipe, starts: Sequence[str], rig, heatmap_size: int, *,
                 inits: Mapping[str, object] | None = None, labels=None,
                 temperature: float, line_width_px: float, line_value: float,
                 name: str = "fusion") -> list:
  """[(start, built layer)] of `starts` for `rig`, with the recipe's theta parameterization.

  Args:
    recipe: Gives `theta_grid` (NaiveFuse starts have no theta: always free matrices).
    starts: `mf_tf.fusion.starts.STARTS` names, e.g. `recipe.starts` or ("affine",).
    rig, heatmap_size: The new rig and H = W.
    inits: {start: pretrained init} for the starts that read one (`checkpoints.load_init`).
    labels: [K, V, J, 2] labelled joints (self-calibrated starts).
    temperature, line_width_px, line_value: Read-out temperature and the calibrated line.
    name: Layer name (a second start's layer adds its start's name).
  """
  inits = dict(inits or {})
  layers = []
  for index, start in enumerate(starts):
    layers.append((start, starts_lib.make_fusion_layer(
        start, rig, heatmap_size, init=inits.get(start), labels=labels, temperature=temperature,
        line_width_px=line_width_px, line_value=line_value,
        theta_grid=0 if start == "naive" else recipe.theta_grid,
        name=name if index == 0 else f"{name}_{start}")))
  return layers


def adapt(recipe: recipes_lib.Recipe, starts: Sequence, heatmaps, joints2d, *,
          target_sigma: float, epochs: int, learning_rate: float, batch_size: int = 8,
          loss_temperature: float | None = None, validation_fraction: float = 0.2,
          patience: int = 5, seed: int = 0, head_size_px=None, progress: bool = False,
          log_dir: str | None = None, compiled: Mapping[str, dict] | None = None,
          stop: stopping.StopRequest | None = None, label: str = "adapt") -> dict:
  """Finetunes every start with the recipe on the same split; keeps the best by its selection.

  Args:
    recipe: Loss, selection and proximal weight of every start's finetuning, and the selection
      across starts (`selection.score` of each start's kept parameters; ties: the earlier start).
    starts: [(start name, layer)] (`start_layers`), each finetuned in place.
    heatmaps: [K, V, H, W, J] initial heatmaps of the K labelled frames.
    joints2d: [K, V, J, 2] their joints, heatmap px.
    target_sigma, epochs, learning_rate, batch_size, loss_temperature, validation_fraction,
      patience, seed, head_size_px, progress, log_dir, stop: As `finetune.finetune_fusion`.
    compiled: Optional {start name: dict} keeping each start's compiled step between calls.
    label: Log prefix.

  Returns:
    {"start": the kept start's name, "layer": its layer, "history": its `finetune_fusion`
    history, "starts": {start name: history}}.
  """
  starts = list(starts)
  if not starts:
    raise ValueError("adapt needs at least one start")
  compiled = {} if compiled is None else compiled
  histories = {}
  for name, layer in starts:
    history = finetune.finetune_fusion(
        layer, heatmaps, joints2d, target_sigma=target_sigma, learning_rate=learning_rate,
        epochs=epochs, batch_size=batch_size, validation_fraction=validation_fraction,
        patience=patience, seed=seed, log_dir=log_dir, progress=progress,
        loss_temperature=loss_temperature, loss=recipe.loss, proximal=recipe.proximal,
        selection=recipe.selection, head_size_px=head_size_px,
        compiled=compiled.get(name) if isinstance(compiled, dict) else None, stop=stop)
    histories[name] = history
    logging.info("%s from %s: %d epochs on %d frames, loss %.4f -> %.4f, val_loss %.4f -> %.4f",
                 label, name, history["epochs"], len(heatmaps), history["loss"][0],
                 history["loss"][-1], history["val_loss"][0], min(history["val_loss"]))
    if stop is not None and stop.requested:
      break
  names = list(histories)
  kept = names[selection.best_index(
      [selection.score(recipe.selection, histories[n]["best_val_jdr"],
                       histories[n]["best_val_loss"]) for n in names])]
  if len(names) > 1:
    logging.info("%s: kept the %s start (validation JDR %s)", label, kept,
                 ", ".join(f"{n} {histories[n]['best_val_jdr']:.1f}%" for n in names))
  return {"start": kept, "layer": dict(starts)[kept], "history": histories[kept],
          "starts": histories}
