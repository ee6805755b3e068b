r"""End-to-end demo on the embedded synthetic world: `--mode=demo`.

  python -m mf_tf.main --mode=demo --workdir=/tmp/mf_demo
  python -m mf_tf.main --mode=demo --config=configs/default.py:smoke --workdir=/tmp/mf_demo_s

Stages (config.demo; nothing is downloaded):
  1. Meta-train MetaFuse (MAML over ordered camera pairs, the recipe's loss) on frames of the
     pretraining rig (config.rig.pretrain, the 20-camera Panoptic dome) for every recipe whose
     starts read it: the paper's (config.demo.paper_row) -> <out>/meta_params_paper.npz, the
     run's (config.recipe) -> meta_params.npz or meta_params_calibrated.npz.
  2. Adapt to K = config.demo.shots labelled frames of the new rig (config.rig.target, the
     Human3.6M rig, never seen in pretraining) with `mf_tf.train.adaptation.adapt` and the
     run's recipe (`mf_tf.train.recipes`; the default: every pair's epipolar geometry estimated
     from the K frames' labelled joints, the line base, a smooth theta residual finetuned with
     cross-entropy and kept only if the validation JDR improves). The checkpoint goes to
     <workdir>/finetune/<rig> (what --mode=evaluate and --mode=export read).
  3. Evaluate on held-out test frames of the new rig: No-Fusion, MetaFuse^0 (calibrated from
     the rig, no data), MetaFuse^K, with config.demo.paper_row MetaFuse^K (paper) and with
     config.demo.calibrated_variant MetaFuse^K-calibrated (the "calibrated" recipe); print the
     table, write results.{json,md}.
  4. Figures: the comparison bars (methods.png), and a paper-Figure-6 heatmap figure
     (figure6.png): one occluded joint in one view, ground truth, initial and fused heatmaps, and
     the heatmap warped from each other view, W_{u->v} h_u, whose ridge is the epipolar line.
  5. Export the rig for TF Serving (`mf_tf.serving.export.export_rig`) when config.demo.export.

Outputs go to <workdir>/demo/.
"""

from __future__ import annotations

import dataclasses
import os
import time
import typing

from absl import logging
import numpy as np

from mf_tf import checkpoints
from mf_tf.data import codec as codec_lib
from mf_tf.data import joints as joints_lib
from mf_tf.data import world
from mf_tf.evaluation import evaluate
from mf_tf.evaluation import metrics
from mf_tf.evaluation import pictorial
from mf_tf.evaluation import plots
from mf_tf.experiments import benchmark
from mf_tf.geometry import rigs as rigs_lib
from mf_tf.geometry.rig import pair_index
from mf_tf.meta import tasks as tasks_lib
from mf_tf.models import backbone as backbone_lib
from mf_tf.serving import batching as batching_lib
from mf_tf.serving import export as export_lib
from mf_tf.train import adaptation
from mf_tf.train import pretraining
from mf_tf.train import recipes


@dataclasses.dataclass(frozen=True)
class DemoSettings(benchmark.ExperimentSettings):
  """Explicit settings of the demo (see `settings_from_config` for their config keys): the
  shared `benchmark.ExperimentSettings` and these."""
  target_rig: str
  shots: int
  finetune: benchmark.FitSettings
  test_frames: int
  test_seed: int
  export: bool
  export_backbone: str
  export_backbone_weights: str
  export_top_k: int
  export_batching: batching_lib.BatchingSettings
  progress: bool
  paper_row: bool
  calibrated_variant: bool


def _pretrain_meta(settings: DemoSettings, out_dir: str, recipe: recipes.Recipe,
                   file_name: str | None = None):
  """Meta-trains on the pretraining rig what the recipe's starts read (its loss and theta
  init: "shared", the paper's, or "calibrated")."""
  theta_init = recipe.meta_theta_init
  rig = rigs_lib.get_rig(settings.pretrain_rig)
  frames = world.simulate_frames(rig, settings.pretrain_frames, settings.seed, settings.joint_set,
                                 settings.heatmap_size, detector_params=settings.detector,
                                 return_heatmaps=False)
  pool = tasks_lib.FramePool.from_frames(frames, settings.heatmap_size, settings.detector)
  logging.info("demo: meta-training MetaFuse on %s (%d views, %d ordered pairs, %d frames), "
               "%d steps", rig.name, rig.num_views, len(rig.pairs), settings.pretrain_frames,
               settings.maml.num_steps)
  params = pretraining.meta_training(recipe, pool, rig.pairs, settings.maml, rig=rig,
                                     line_width_px=settings.line_width_px,
                                     line_value=settings.line_value, progress=settings.progress)
  default_name = "meta_params_calibrated.npz" if theta_init == "calibrated" else "meta_params.npz"
  path = os.path.join(out_dir, file_name or default_name)
  checkpoints.save_meta_params(params, path, {"rig": rig.name, "steps": settings.maml.num_steps,
                                            "heatmap_size": settings.heatmap_size,
                                            "theta_init": theta_init,
                                            "recipe": recipe.name})
  return params


def choose_example(initial_coords, fused_coords, joints2d, visibility, head_size):
  """(frame, view, joint) for Figure 6: an occluded joint that fusion corrects.

  Preference: occluded, not detected before fusion and detected after (`metrics.detections`,
  JDR's definition), largest error reduction; else the occluded joint with the largest error
  reduction.

  Args:
    initial_coords, fused_coords: [N, V, J, 2] decoded joints, heatmap px.
    joints2d: [N, V, J, 2] truth; visibility: [N, V, J]; head_size: [N, V] px.
  """
  threshold = 0.5 * np.asarray(head_size)[..., None]
  before = np.linalg.norm(initial_coords - joints2d, axis=-1)
  after = np.linalg.norm(fused_coords - joints2d, axis=-1)
  occluded = (np.asarray(visibility) <= 0) & np.isfinite(before) & (threshold > 0)
  detected_before, _ = metrics.detections(initial_coords, joints2d, head_size)
  detected_after, _ = metrics.detections(fused_coords, joints2d, head_size)
  corrected = occluded & ~detected_before & detected_after
  pool = corrected if corrected.any() else occluded
  if not pool.any():
    pool = np.isfinite(before)
  gain = np.where(pool, before - after, -np.inf)
  return tuple(int(i) for i in np.unravel_index(np.argmax(gain), gain.shape))


def figure6_panels(heatmaps, matrices_by_name, joints2d, frame, view, joint, heatmap_size,
                   target_sigma):
  """Rows of (title, [H, W]) panels for `plots.plot_fusion_heatmaps`.

  Args:
    heatmaps: [N, V, H, W, J] initial heatmaps.
    matrices_by_name: {method name: [P, HW, HW] fusion matrices} (e.g. MetaFuse^K, MetaFuse^0).
    joints2d: [N, V, J, 2] truth, heatmap px.
    frame, view, joint: The example.
    heatmap_size: H = W.
    target_sigma: Gaussian std of the ground-truth panel.

  Returns:
    (rows, warped) where rows is a list of panel rows and warped maps method -> {source view:
    [H, W] W_{u->v} h_u}.
  """
  size = heatmap_size
  num_views = heatmaps.shape[1]
  codec = codec_lib.HeatmapCodec(size, target_sigma)
  truth = codec.encode(joints2d[frame, view, joint][None])[0].numpy()[..., 0]
  initial = heatmaps[frame, view, :, :, joint]
  rows = [[("ground truth", truth), ("initial heatmap", initial)]]
  warped_all = {}
  lower = []
  for name, matrices in matrices_by_name.items():
    warped = {}
    for source in range(num_views):
      if source == view:
        continue
      matrix = np.asarray(matrices[pair_index(source, view, num_views)])
      warped[source] = (matrix @ heatmaps[frame, source, :, :, joint].reshape(-1)).reshape(
          size, size)
    warped_all[name] = warped
    fused = initial + sum(warped.values())
    rows[0].append((f"fused ({name})", fused))
    lower.append([(f"{name}: warped from view {source}", image)
                  for source, image in warped.items()])
  return rows + lower, warped_all


def _export(settings: DemoSettings, rig, layer, out_dir: str):
  joint_set = joints_lib.get_joint_set(settings.joint_set)
  weights = settings.export_backbone_weights or None
  if weights is None:
    logging.warning("demo: exporting with an UNTRAINED %s backbone (config.demo."
                    "export_backbone_weights is empty); the served fusion is the finetuned one, "
                    "the images->heatmaps stage needs trained weights to be useful",
                    settings.export_backbone)
  backbone = backbone_lib.build_backbone(settings.export_backbone, 4 * settings.heatmap_size,
                                         joint_set.num_joints, weights=weights)
  fusion = layer.materialize(top_k=settings.export_top_k or None)
  return export_lib.export_rig(backbone, fusion, rig, os.path.join(out_dir, "export"),
                               batching=settings.export_batching, sigma=settings.target_sigma,
                               export_config={"source": "demo", "shots": settings.shots})


def run_demo(settings: DemoSettings, out_dir: str, checkpoint_dir: str | None = None) -> dict:
  """The whole demo (module docstring).

  Args:
    settings: `DemoSettings`.
    out_dir: Results, figures, meta-parameters and the export go here.
    checkpoint_dir: Where the finetuned fusion is saved (`mf_tf.train.finetune` format, read
      by --mode=evaluate); None: <out_dir>/finetune/<rig>.

  Returns:
    {"results": {method: result}, "paths": {...}, "timings": {...}, "example": {...}}.
  """
  os.makedirs(out_dir, exist_ok=True)
  pretrain_rig = rigs_lib.get_rig(settings.pretrain_rig)
  rig = rigs_lib.get_rig(settings.target_rig)
  checkpoint_dir = checkpoint_dir or os.path.join(out_dir, "finetune", rig.name)
  overlap = set(rig.camera_names) & set(pretrain_rig.camera_names)
  if overlap:
    raise ValueError(f"target rig {rig.name!r} shares cameras {sorted(overlap)} with the "
                     f"pretraining rig {pretrain_rig.name!r}")
  timings = {}
  start = time.time()
  rows = _rows(settings)
  meta = {}  # recipe name -> meta-trained init of its starts (the pretraining stage)
  for row in rows:
    if row.recipe.meta_theta_init is not None:
      meta[row.recipe.name] = _pretrain_meta(settings, out_dir, row.recipe, row.file_name)
  timings["metatrain_s"] = time.time() - start

  start = time.time()
  train, test, limb_lengths = _target_frames(settings, rig)
  logging.info("demo: adapting to %d labelled frames of %s (%d views), about %d steps "
               "(recipe: %s)", settings.shots, rig.name, rig.num_views, settings.finetune.steps,
               settings.recipe.name)
  shots_name = f"MetaFuse^{settings.shots}"
  methods = {"No-Fusion": None, "MetaFuse^0 (calibrated)": benchmark.calibrated_layer(
      rig, settings.heatmap_size, settings.temperature, settings.line_width_px,
      settings.line_value)}
  for index, row in enumerate(rows):
    if index:
      start = time.time()
    adapted = _adapt(settings, row, meta.get(row.recipe.name), rig, train)
    if index == 0:
      layer, history = adapted["layer"], adapted["history"]
      checkpoint = _save_finetuned(settings, rig, adapted, checkpoint_dir)
    methods[shots_name + row.suffix] = adapted["layer"].materialize()
    timings[row.timing] = time.time() - start

  start = time.time()
  results = {name: evaluate.evaluate_fusion(
      method, test, rig, settings.joint_set, settings.temperature, limb_lengths=limb_lengths,
      pictorial_options=settings.pictorial_options, batch_size=settings.eval_batch_size)
             for name, method in methods.items()}
  timings["evaluate_s"] = time.time() - start
  print(evaluate.results_markdown(results, f"MetaFuse demo on the new rig {rig.name} "
                                  f"({settings.shots}-shot finetuning)"), flush=True)
  losses = history["loss"]
  metadata = {"rig": rig.name, "pretrain_rig": pretrain_rig.name, "shots": settings.shots,
              "heatmap_size": settings.heatmap_size, "test_frames": settings.test_frames,
              "test_seed": settings.test_seed, "meta_steps": settings.maml.num_steps,
              "finetune_loss": [losses[0], losses[-1]] if losses else []}
  paths = evaluate.write_results(results, out_dir, metadata)
  paths["finetuned"] = checkpoint

  start = time.time()
  example = _figures(settings, rig, test, results, methods, shots_name, out_dir, paths)
  timings["plots_s"] = time.time() - start

  start = time.time()
  exported = _export(settings, rig, layer, out_dir) if settings.export else None
  if exported:
    paths["export"] = exported
  elif not settings.export:
    logging.info("demo: export disabled (config.demo.export=False)")
  timings["export_s"] = time.time() - start
  logging.info("demo: timings %s", {k: round(v, 1) for k, v in timings.items()})
  logging.info("demo: outputs %s", paths)
  return {"results": results, "paths": paths, "timings": timings, "example": example}


class _Row(typing.NamedTuple):
  """An adapted row of the demo's table."""
  recipe: recipes.Recipe
  file_name: str | None  # Its meta-parameter file (None: by its theta init).
  suffix: str  # Of its method name, after "MetaFuse^K".
  timing: str  # Its key in the timings.
  layer: str  # Its layer's name.
  label: str  # Its log prefix, before the rig's name.


def _rows(settings: DemoSettings) -> list[_Row]:
  """The adapted rows: the configured recipe's first (its layer is saved and exported), then the
  paper's and the calibrated recipe's when asked for and not already the first."""
  rows = [_Row(settings.recipe, None, "", "finetune_s", "metafuse", "finetune")]
  if settings.paper_row and settings.recipe != recipes.PAPER:
    rows.append(_Row(recipes.PAPER, "meta_params_paper.npz", " (paper)", "paper_row_s",
                     "metafuse_paper", "finetune (paper)"))
  if settings.calibrated_variant and settings.recipe != recipes.CALIBRATED:
    rows.append(_Row(recipes.CALIBRATED, None, "-calibrated", "calibrated_variant_s",
                     "metafuse_calibrated", "finetune metafuse_calibrated"))
  return rows


def _target_frames(settings: DemoSettings, rig) -> tuple[dict, dict, dict]:
  """The new rig's K labelled frames, its test frames and the RPSM limb lengths."""
  common = dict(joint_set=settings.joint_set, heatmap_size=settings.heatmap_size,
                detector_params=settings.detector)
  train = world.simulate_frames(rig, settings.shots, settings.seed + 1, **common)
  test = world.simulate_frames(rig, settings.test_frames, settings.test_seed, **common)
  poses = world.simulate_frames(rig, settings.limb_frames, settings.seed, return_heatmaps=False,
                                **common)
  return train, test, pictorial.mean_limb_lengths(poses["joints3d"], settings.joint_set)


def _adapt(settings: DemoSettings, row: _Row, init, rig, train: dict) -> dict:
  """`adaptation.adapt` of the row recipe's starts on the K labelled frames."""
  fit, recipe = settings.finetune, row.recipe
  starts = adaptation.start_layers(
      recipe, recipe.starts, rig, settings.heatmap_size, labels=train["joints2d"],
      inits={start: init for start in recipes.META_STARTS}, name=row.layer,
      temperature=settings.temperature, line_width_px=settings.line_width_px,
      line_value=settings.line_value)
  return adaptation.adapt(
      recipe, starts, train["heatmaps"], train["joints2d"], label=f"{row.label} {rig.name}",
      target_sigma=settings.target_sigma, seed=settings.seed, progress=settings.progress,
      head_size_px=train["head_size"],
      epochs=adaptation.epochs_for_steps(fit.steps, fit.batch_size, settings.shots),
      learning_rate=fit.learning_rate, batch_size=fit.batch_size,
      loss_temperature=fit.loss_temperature)


def _save_finetuned(settings: DemoSettings, rig, adapted: dict, checkpoint_dir: str) -> str:
  """The kept layer of the configured recipe, where --mode=evaluate and export look."""
  history = adapted["history"]
  return checkpoints.save_finetuned(
      adapted["layer"], rig, checkpoint_dir,
      {"method": adapted["start"], "recipe": settings.recipe.name, "shots": settings.shots,
       "heatmap_size": settings.heatmap_size,
       "temperature": settings.temperature, "epochs": history["epochs"],
       "loss": history["loss"][-1], "val_loss": min(history["val_loss"]), "source": "demo",
       "kept_start": history["restored_init"], "val_jdr": history["best_val_jdr"]})


def _figures(settings: DemoSettings, rig, test: dict, results: dict, methods: dict,
             shots_name: str, out_dir: str, paths: dict) -> dict:
  """methods.png and figure6.png (added to `paths`); the figure's example."""
  paths["methods_png"] = plots.plot_method_bars(
      results, os.path.join(out_dir, "methods.png"),
      title=f"{rig.name}: {settings.test_frames} test frames, {settings.heatmap_size} px heatmaps")
  initial_coords, _ = evaluate.decode_joints(test["heatmaps"], settings.temperature)
  fused = evaluate.fuse_heatmaps(methods[shots_name], test["heatmaps"], settings.eval_batch_size)
  fused_coords, _ = evaluate.decode_joints(fused, settings.temperature)
  frame, view, joint = choose_example(initial_coords, fused_coords, test["joints2d"],
                                      test["visibility"], test["head_size"])
  joint_name = joints_lib.get_joint_set(settings.joint_set).names[joint]
  matrices = {shots_name: methods[shots_name].matrices.numpy(),
              "MetaFuse^0": methods["MetaFuse^0 (calibrated)"].matrices.numpy()}
  rows, _ = figure6_panels(test["heatmaps"], matrices, test["joints2d"], frame, view, joint,
                           settings.heatmap_size, settings.target_sigma)
  markers = {"truth": (tuple(test["joints2d"][frame, view, joint]), "white"),
             "initial estimate": (tuple(initial_coords[frame, view, joint]), "red"),
             f"{shots_name} estimate": (tuple(fused_coords[frame, view, joint]), "cyan")}
  paths["figure6_png"] = plots.plot_fusion_heatmaps(
      rows, os.path.join(out_dir, "figure6.png"), markers=markers,
      title=f"{rig.name}, frame {frame}, view {view}: {joint_name} "
      f"({'occluded' if test['visibility'][frame, view, joint] <= 0 else 'visible'})")
  return {"frame": frame, "view": view, "joint": joint_name}
