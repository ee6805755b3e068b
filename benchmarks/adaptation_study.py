r"""Few-shot rig adaptation study: which training choices make K labelled frames pay off.

  python -m benchmarks.adaptation_study --workdir=/tmp/mf_study
  python -m benchmarks.adaptation_study --workdir=/tmp/mf_study --config.run=paper,default

The rows and the study's settings are configs/adaptation_study.py. Every row is a recipe
(`mf_tf.train.recipes.Recipe`: loss, selection criterion, theta parameterization, proximal
term) with the row's other settings (NaiveFuse schedule, line, triangulation), adapted by
`mf_tf.train.adaptation.adapt`; every row runs on the same seeds, the same pretrained models and
the same held-out rigs. Columns are JDR / occluded JDR / MPJPE (triangulation) of No-Fusion,
NaiveFuse^K, AffineFuse^K, MetaFuse^K, MetaFuse^0 (calibrated, no labels) and MetaFuse^0->K
(the calibrated init finetuned), averaged over the rigs, plus each rig's numbers in study.json.

Pretraining (MetaFuse by `mf_tf.train.pretraining`, AffineFuse by Adam, NaiveFuse per view
count) uses configs/benchmark.py's default settings and is cached in the workdir, so rows can be
added and rerun cheaply. The RPSM is skipped (2D and DLT only): it does not depend on the recipe.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

from mf_tf import checkpoints
from mf_tf import files
from mf_tf.evaluation import evaluate
from mf_tf.experiments import benchmark
from mf_tf.fusion import starts as fusion_starts
from mf_tf.geometry import rigs as rigs_lib
from mf_tf.meta import tasks as tasks_lib
from mf_tf.modes import benchmark as benchmark_mode
from mf_tf.train import adaptation
from mf_tf.train import pretraining
from mf_tf.train import recipes

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "/tmp/mf_study", "Pretrained models (cached) and study.json.")
flags.DEFINE_string("out", "study.json", "Results file in the workdir (rows are merged in).")
flags.DEFINE_list("report", None, "Only print the tables of these result files (merged).")
config_flags.DEFINE_config_file("config", os.path.join(_CONFIGS, "adaptation_study.py"),
                                "The study's rows and settings.")


@dataclasses.dataclass(frozen=True)
class Row:
  """One row: a recipe (`mf_tf.train.recipes.Recipe`: loss, selection, theta field, proximal
  weight) and the study's other settings (step budgets, pretraining loss, line, 3D read-out),
  all from configs/adaptation_study.py."""
  recipe: recipes.Recipe
  learning_rate: float
  steps: int
  naive_learning_rate: float
  naive_steps: int
  outlier_px: float | None
  pretrain_loss: str  # Loss of MetaFuse / AffineFuse pretraining.
  line_value: float  # Calibrated line peak (MetaFuse^0, self-calibrated, calibrated meta).
  full: bool  # Also train NaiveFuse^full (all training frames) with the naive schedule.


def rows_from_config(config) -> dict:
  """{row name: Row} of the study config's rows; each recipe's starts are the paper's (the
  study finetunes its `methods` as starts)."""
  rows = {}
  for name, row in config.rows.items():
    recipe = dataclasses.replace(recipes.PAPER, name="study", loss=str(row.loss),
                                 selection=str(row.selection), theta_grid=int(row.theta_grid),
                                 proximal=float(row.proximal))
    rows[name] = Row(recipe, learning_rate=float(row.learning_rate), steps=int(row.steps),
                     naive_learning_rate=float(row.naive_learning_rate),
                     naive_steps=int(row.naive_steps), outlier_px=float(row.outlier_px) or None,
                     pretrain_loss=str(row.pretrain_loss), line_value=float(row.line_value),
                     full=bool(row.full))
  return rows


def benchmark_settings(seed: int | None = None) -> benchmark.BenchmarkSettings:
  """configs/benchmark.py's default `BenchmarkSettings` (its seed, or `seed`)."""
  spec = importlib.util.spec_from_file_location("mf_tf_benchmark_config",
                                                os.path.join(_CONFIGS, "benchmark.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # configs/ is a folder of config files, not a package.
  config = module.get_config()
  if seed is not None:
    config.seed = seed
  return benchmark_mode.settings_from_config(config)


def _pretrained(settings, view_counts, workdir, loss: str, line_value: float) -> dict:
  """Pretrained models, cached as npz files in the workdir (per training loss).

  Returns:
    {"metafuse", "affine", "metafuse_calibrated": MetaParams, "naive": {V: matrices}}.
  """
  maml_settings = dataclasses.replace(settings.maml, loss=loss)
  rig = rigs_lib.get_rig(settings.pretrain_rig)
  pool = None

  def frame_pool():
    nonlocal pool
    if pool is None:
      frames = benchmark.simulate(rig, settings.pretrain_frames, settings.seed, settings,
                                  dense=False)
      pool = tasks_lib.FramePool.from_frames(frames, settings.heatmap_size, settings.detector)
    return pool

  def cached(name, make):
    path = os.path.join(workdir, f"{name}.npz")
    if not os.path.isfile(path):
      start = time.time()
      checkpoints.save_meta_params(make(), path, {"loss": loss})
      logging.info("study: pretrained %s in %.0f s", name, time.time() - start)
    return checkpoints.load_meta_params(path)[0]

  def meta(recipe, line_value):
    return lambda: pretraining.meta_training(
        dataclasses.replace(recipe, loss=loss), frame_pool(), rig.pairs, maml_settings, rig=rig,
        line_width_px=settings.line_width_px, line_value=line_value, progress=False)

  out = {"metafuse": cached(f"metafuse_{loss}", meta(recipes.PAPER, settings.line_value))}
  out["affine"] = cached(f"affine_{loss}", lambda: benchmark.pretrain_affine(
      frame_pool(), rig.pairs, maml_settings, settings.affine_pretrain))

  out["metafuse_calibrated"] = cached(f"metafuse_cal_{loss}_{line_value}",
                                      meta(recipes.CALIBRATED, line_value))
  out["naive"] = {}
  for views in view_counts:
    path = os.path.join(workdir, f"naive_{views}.npz")
    if not os.path.isfile(path):
      subset = rig.subset(range(views))
      frames = benchmark.simulate(subset, settings.pretrain_frames, settings.seed + 17, settings)
      layer = fusion_starts.make_fusion_layer("naive", subset, settings.heatmap_size,
                                              temperature=settings.temperature,
                                              name=f"naive_pretrain_{views}")
      benchmark.finetune(layer, frames["heatmaps"], frames["joints2d"], settings.naive_pretrain,
                         target_sigma=settings.target_sigma, seed=settings.seed,
                         selection="val_loss")
      np.savez(path, matrices=layer.matrices.numpy())
    with np.load(path) as data:
      out["naive"][views] = data["matrices"]
  return out


# Seed slot of each study rig's training and test frames.
_RIG_SEED_SLOT = {"panoptic_heldout6": 1, "h36m": 1, "shelf": 2, "ring4": 2}


def _rig(name: str):
  if name == "ring4":  # Procedural: never part of any pretraining.
    return rigs_lib.ring_rig(4, radius_mm=5200.0, height_mm=1900.0, seed=11)
  rig = rigs_lib.get_rig(name)
  return rig.subset(range(4)) if name == "panoptic_heldout6" else rig


def _summary(result: dict) -> dict:
  return {key: round(float(result[key]), 2) for key in (
      "jdr_mean", "jdr_occluded", "mpjpe_triangulation_mm", "mpjpe_dlt_mm")}


def run_row(row: Row, rig, frames, pretrained, settings, methods, shots, seed):
  """{method label: summary} for one row on one rig: every method a start of its recipe,
  adapted by `adaptation.adapt`."""
  train, test, full = frames
  size = settings.heatmap_size
  evaluate_kwargs = dict(pictorial_options=None, outlier_px=row.outlier_px,
                         batch_size=settings.eval_batch_size)
  out = {}

  def record(label, layer):
    out[label] = _summary(evaluate.evaluate_fusion(layer, test, rig, settings.joint_set,
                                                   settings.temperature, **evaluate_kwargs))

  record("no_fusion", None)
  record("metafuse^0", benchmark.calibrated_layer(rig, size, settings.temperature,
                                                  settings.line_width_px, row.line_value))
  inits = {"metafuse": pretrained["metafuse"], "affine": pretrained["affine"],
           "naive": pretrained["naive"][rig.num_views], "calibrated": None,
           "self_calibrated": None, "metafuse_calibrated": pretrained["metafuse_calibrated"]}
  labels = train["joints2d"][:shots]
  if "self_calibrated" in methods:  # No labelled frame is used beyond the K frames' 2D joints.
    record("selfcal^0", fusion_starts.make_fusion_layer(
        "self_calibrated", rig, size, temperature=settings.temperature, labels=labels,
        line_width_px=settings.line_width_px, line_value=row.line_value).materialize())
  for method in methods:
    naive = method == "naive"
    # NaiveFuse has no start to stay near: the proximal weight is the theta rows'.
    recipe = dataclasses.replace(row.recipe, proximal=0.0) if naive else row.recipe
    starts = adaptation.start_layers(
        recipe, (method,), rig, size, inits=inits, labels=labels,
        temperature=settings.temperature, line_width_px=settings.line_width_px,
        line_value=row.line_value, name=f"{method}_{shots}")
    adapted = adaptation.adapt(
        recipe, starts, train["heatmaps"][:shots], train["joints2d"][:shots],
        target_sigma=settings.target_sigma, seed=seed, head_size_px=train["head_size"][:shots],
        epochs=adaptation.epochs_for_steps(row.naive_steps if naive else row.steps, 8, shots),
        learning_rate=row.naive_learning_rate if naive else row.learning_rate)
    layer, history = adapted["layer"], adapted["history"]
    label = {"calibrated": "metafuse^0->K", "self_calibrated": "selfcal^0->K",
             "metafuse_calibrated": "metacal^K"}.get(method, f"{method}^K")
    record(label, layer if naive else layer.materialize())
    out[label]["kept_init"] = history["restored_init"]
  if row.full:
    layer = fusion_starts.make_fusion_layer("naive", rig, size, temperature=settings.temperature,
                                           name="naive_full")
    steps = max(300, row.naive_steps)
    benchmark.finetune(layer, full["heatmaps"], full["joints2d"],
                       benchmark.FitSettings(steps, row.naive_learning_rate, 8, None), seed=seed,
                       target_sigma=settings.target_sigma, loss=row.recipe.loss,
                       selection=row.recipe.selection, head_size_px=full["head_size"])
    record("naive^full", layer)
  return out


def main(argv):
  del argv
  if FLAGS.report:
    study = {}
    for path in FLAGS.report:
      with open(path) as stream:
        for row, by_rig in json.load(stream).items():
          study.setdefault(row, {}).update(by_rig)
    print(markdown(study))
    return
  os.makedirs(FLAGS.workdir, exist_ok=True)
  config = FLAGS.config
  settings = benchmark_settings(int(config.seed))
  rig_names = [name.strip() for name in config.rigs.split(",") if name.strip()]
  methods = [name.strip() for name in config.methods.split(",") if name.strip()]
  rigs = [_rig(name) for name in rig_names]
  study_rows = rows_from_config(config)
  rows = [name.strip() for name in config.run.split(",") if name.strip()] or list(study_rows)
  unknown = sorted(set(rows) - set(study_rows))
  if unknown:
    raise ValueError(f"config.run names rows {unknown}; expected some of {sorted(study_rows)}")
  view_counts = sorted({r.num_views for r in rigs})
  pretrained = {}
  for row in rows:
    key = (study_rows[row].pretrain_loss, study_rows[row].line_value)
    if key not in pretrained:
      pretrained[key] = _pretrained(settings, view_counts, FLAGS.workdir, *key)
  path = os.path.join(FLAGS.workdir, FLAGS.out)
  study = {}
  if os.path.isfile(path):
    with open(path) as stream:
      study = json.load(stream)
  for index, rig in enumerate(rigs):
    # Frames depend on the rig, not on its place in --rigs, so rows can be run separately.
    seed = int(config.seed) + 1000 * _RIG_SEED_SLOT.get(rig_names[index], index + 1)
    frames = (benchmark.simulate(rig, max(config.shots, config.full_frames), seed, settings),
              benchmark.simulate(rig, config.test_frames, seed + 1, settings), None)
    frames = (frames[0], frames[1], frames[0])
    for row in rows:
      row_start = time.time()
      settings_row = study_rows[row]
      result = run_row(settings_row, rig, frames,
                       pretrained[(settings_row.pretrain_loss, settings_row.line_value)],
                       settings, methods, int(config.shots), seed)
      result["seconds"] = round(time.time() - row_start, 1)
      study.setdefault(row, {})[rig.name] = result
      logging.info("study %s on %s: %s", row, rig.name, json.dumps(result))
      files.write_atomic(path, json.dumps(study, indent=1))
  print(markdown(study))


def markdown(study: dict) -> str:
  """Rows x methods tables (JDR / occluded JDR / MPJPE tri): the mean over the rigs a row ran
  on (their count in brackets), then one table per rig."""
  methods = ["no_fusion", "naive^K", "affine^K", "metafuse^K", "metafuse^0", "metafuse^0->K",
             "selfcal^0", "selfcal^0->K", "metacal^K", "naive^full"]
  rigs = sorted({rig for by_rig in study.values() for rig in by_rig})
  out = [_table(study, methods, rigs, "mean over rigs")]
  for rig in rigs:
    out.append(_table({row: {rig: by_rig[rig]} for row, by_rig in study.items() if rig in by_rig},
                      methods, [rig], rig))
  return "\n\n".join(out)


def _table(study, methods, rigs, title):
  lines = [f"### {title}", "", "| row | " + " | ".join(methods) + " |",
           "|---" * (len(methods) + 1) + "|"]
  for row, by_rig in study.items():
    cells = []
    for method in methods:
      values = [r[method] for rig, r in by_rig.items()
                if rig in rigs and isinstance(r, dict) and method in r]
      if not values:
        cells.append("")
        continue
      mean = {k: np.mean([v[k] for v in values]) for k in ("jdr_mean", "jdr_occluded",
                                                           "mpjpe_triangulation_mm")}
      cells.append(f"{mean['jdr_mean']:.1f} / {mean['jdr_occluded']:.1f} / "
                   f"{mean['mpjpe_triangulation_mm']:.0f}")
    lines.append(f"| {row} ({len(by_rig)}) | " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
