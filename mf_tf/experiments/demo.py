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

from absl import logging
import numpy as np

from mf_tf import checkpoints
from mf_tf.data import codec as codec_lib
from mf_tf.data import joints as joints_lib
from mf_tf.data import world
from mf_tf.evaluation import evaluate
from mf_tf.evaluation import pictorial
from mf_tf.evaluation import plots
from mf_tf.experiments import benchmark
from mf_tf.geometry import rigs as rigs_lib
from mf_tf.geometry.rig import pair_index
from mf_tf.meta import tasks as tasks_lib
from mf_tf.models import backbone as backbone_lib
from mf_tf.serving import export as export_lib
from mf_tf.train import adaptation
from mf_tf.train import metatrain
from mf_tf.train import recipes


@dataclasses.dataclass(frozen=True)
class DemoSettings:
  """Explicit settings of the demo (see `settings_from_config` for their config keys)."""
  joint_set: str
  heatmap_size: int
  temperature: float
  target_sigma: float
  seed: int
  pretrain_rig: str
  target_rig: str
  pretrain_frames: int
  maml: metatrain.MamlSettings
  shots: int
  finetune: benchmark.FitSettings
  test_frames: int
  test_seed: int
  detector: world.DetectorParams
  pictorial_options: pictorial.PictorialOptions
  limb_frames: int
  line_width_px: float
  line_value: float
  eval_batch_size: int
  export: bool
  export_backbone: str
  export_backbone_weights: str
  export_top_k: int
  progress: bool
  recipe: recipes.Recipe
  paper_row: bool
  calibrated_variant: bool


def _pretrain_meta(settings: DemoSettings, out_dir: str, recipe: recipes.Recipe,
                   file_name: str | None = None):
  """Meta-trains on the pretraining rig what the recipe's starts read (its loss and theta
  init: "shared", the paper's, or "calibrated")."""
  theta_init = recipe.meta_theta_init
  settings = dataclasses.replace(settings, maml=dataclasses.replace(settings.maml,
                                                                    loss=recipe.loss))
  rig = rigs_lib.get_rig(settings.pretrain_rig)
  frames = world.simulate_frames(rig, settings.pretrain_frames, settings.seed, settings.joint_set,
                                 settings.heatmap_size, detector_params=settings.detector,
                                 return_heatmaps=False)
  pool = tasks_lib.FramePool.from_frames(frames, settings.heatmap_size, settings.detector)
  logging.info("demo: meta-training MetaFuse on %s (%d views, %d ordered pairs, %d frames), "
               "%d steps", rig.name, rig.num_views, len(rig.pairs), settings.pretrain_frames,
               settings.maml.num_steps)
  if theta_init == "calibrated":
    init, theta_by_pair = metatrain.calibrated_meta_init(
        rig, settings.heatmap_size, settings.line_width_px, settings.line_value)
    params = metatrain.metatrain_fusion(pool, rig.pairs, settings.maml, init=init,
                                        progress=settings.progress, theta_by_pair=theta_by_pair)
    path = os.path.join(out_dir, "meta_params_calibrated.npz")
  else:
    params = metatrain.metatrain_fusion(pool, rig.pairs, settings.maml,
                                        progress=settings.progress)
    path = os.path.join(out_dir, "meta_params.npz")
  path = os.path.join(out_dir, file_name) if file_name else path
  checkpoints.save_meta_params(params, path, {"rig": rig.name, "steps": settings.maml.num_steps,
                                            "heatmap_size": settings.heatmap_size,
                                            "theta_init": theta_init,
                                            "recipe": recipe.name})
  return params


def choose_example(initial_coords, fused_coords, joints2d, visibility, head_size):
  """(frame, view, joint) for Figure 6: an occluded joint that fusion corrects.

  Preference: occluded, wrong before fusion (error above half the head size) and right after,
  largest error reduction; else the occluded joint with the largest error reduction.

  Args:
    initial_coords, fused_coords: [N, V, J, 2] decoded joints, heatmap px.
    joints2d: [N, V, J, 2] truth; visibility: [N, V, J]; head_size: [N, V] px.
  """
  threshold = 0.5 * np.asarray(head_size)[..., None]
  before = np.linalg.norm(initial_coords - joints2d, axis=-1)
  after = np.linalg.norm(fused_coords - joints2d, axis=-1)
  occluded = (np.asarray(visibility) <= 0) & np.isfinite(before) & (threshold > 0)
  corrected = occluded & (before > threshold) & (after <= threshold)
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
                               sigma=settings.target_sigma,
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
  timings = {}
  start = time.time()
  pretrain_rig = rigs_lib.get_rig(settings.pretrain_rig)
  recipe = settings.recipe
  paper = settings.paper_row and recipe != recipes.PAPER
  meta = {}  # recipe name -> meta-trained init of its starts
  if recipe.meta_theta_init is not None:
    meta[recipe.name] = _pretrain_meta(settings, out_dir, recipe)
  if paper:
    meta["paper"] = _pretrain_meta(settings, out_dir, recipes.PAPER, "meta_params_paper.npz")
  timings["metatrain_s"] = time.time() - start

  rig = rigs_lib.get_rig(settings.target_rig)
  checkpoint_dir = checkpoint_dir or os.path.join(out_dir, "finetune", rig.name)
  overlap = set(rig.camera_names) & set(pretrain_rig.camera_names)
  if overlap:
    raise ValueError(f"target rig {rig.name!r} shares cameras {sorted(overlap)} with the "
                     f"pretraining rig {pretrain_rig.name!r}")
  start = time.time()
  common = dict(joint_set=settings.joint_set, heatmap_size=settings.heatmap_size,
                detector_params=settings.detector)
  train = world.simulate_frames(rig, settings.shots, settings.seed + 1, **common)
  test = world.simulate_frames(rig, settings.test_frames, settings.test_seed, **common)
  poses = world.simulate_frames(rig, settings.limb_frames, settings.seed, return_heatmaps=False,
                                **common)
  limb_lengths = pictorial.mean_limb_lengths(poses["joints3d"], settings.joint_set)
  line = dict(temperature=settings.temperature, line_width_px=settings.line_width_px,
              line_value=settings.line_value)
  fit = settings.finetune
  fit_kwargs = dict(target_sigma=settings.target_sigma, seed=settings.seed,
                    progress=settings.progress, head_size_px=train["head_size"],
                    epochs=adaptation.epochs_for_steps(fit.steps, fit.batch_size, settings.shots),
                    learning_rate=fit.learning_rate, batch_size=fit.batch_size,
                    loss_temperature=fit.loss_temperature)

  def adapt(row_recipe, init, name, label):
    starts = adaptation.start_layers(
        row_recipe, row_recipe.starts, rig, settings.heatmap_size, labels=train["joints2d"],
        inits={start: init for start in recipes.META_STARTS}, name=name, **line)
    return adaptation.adapt(row_recipe, starts, train["heatmaps"], train["joints2d"],
                            label=label, **fit_kwargs)

  logging.info("demo: adapting to %d labelled frames of %s (%d views), about %d steps "
               "(recipe: %s)", settings.shots, rig.name, rig.num_views, fit.steps, recipe.name)
  adapted = adapt(recipe, meta.get(recipe.name), "metafuse", f"finetune {rig.name}")
  layer, history = adapted["layer"], adapted["history"]
  losses = history["loss"]
  checkpoint = checkpoints.save_finetuned(
      layer, rig, checkpoint_dir,
      {"method": adapted["start"], "recipe": recipe.name, "shots": settings.shots,
       "heatmap_size": settings.heatmap_size,
       "temperature": settings.temperature, "epochs": history["epochs"],
       "loss": losses[-1], "val_loss": min(history["val_loss"]), "source": "demo",
       "kept_start": history["restored_init"], "val_jdr": history["best_val_jdr"]})
  timings["finetune_s"] = time.time() - start

  paper_layer = None
  if paper:
    start = time.time()
    paper_layer = adapt(recipes.PAPER, meta["paper"], "metafuse_paper",
                        f"finetune (paper) {rig.name}")["layer"]
    timings["paper_row_s"] = time.time() - start

  calibrated_variant = None
  if settings.calibrated_variant and recipe != recipes.CALIBRATED:
    start = time.time()
    meta_cal = _pretrain_meta(settings, out_dir, recipes.CALIBRATED)
    calibrated_variant = adapt(recipes.CALIBRATED, meta_cal, "metafuse_calibrated",
                               f"finetune metafuse_calibrated {rig.name}")["layer"]
    timings["calibrated_variant_s"] = time.time() - start

  start = time.time()
  shots_name = f"MetaFuse^{settings.shots}"
  methods = {
      "No-Fusion": None,
      "MetaFuse^0 (calibrated)": benchmark.calibrated_layer(
          rig, settings.heatmap_size, settings.temperature, settings.line_width_px,
          settings.line_value),
      shots_name: layer.materialize(),
  }
  if paper_layer is not None:
    methods[f"{shots_name} (paper)"] = paper_layer.materialize()
  if calibrated_variant is not None:
    methods[f"{shots_name}-calibrated"] = calibrated_variant.materialize()
  results = {}
  for name, method in methods.items():
    results[name] = evaluate.evaluate_fusion(
        method, test, rig, settings.joint_set, settings.temperature, limb_lengths=limb_lengths,
        pictorial_options=settings.pictorial_options, batch_size=settings.eval_batch_size)
  timings["evaluate_s"] = time.time() - start
  table = evaluate.results_markdown(results, f"MetaFuse demo on the new rig {rig.name} "
                                    f"({settings.shots}-shot finetuning)")
  print(table, flush=True)
  metadata = {"rig": rig.name, "pretrain_rig": pretrain_rig.name, "shots": settings.shots,
              "heatmap_size": settings.heatmap_size, "test_frames": settings.test_frames,
              "test_seed": settings.test_seed, "meta_steps": settings.maml.num_steps,
              "finetune_loss": [losses[0], losses[-1]] if losses else []}
  paths = evaluate.write_results(results, out_dir, metadata)
  paths["finetuned"] = checkpoint

  start = time.time()
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
  timings["plots_s"] = time.time() - start

  start = time.time()
  if settings.export:
    exported = _export(settings, rig, layer, out_dir)
    if exported:
      paths["export"] = exported
  else:
    logging.info("demo: export disabled (config.demo.export=False)")
  timings["export_s"] = time.time() - start
  logging.info("demo: timings %s", {k: round(v, 1) for k, v in timings.items()})
  logging.info("demo: outputs %s", paths)
  return {"results": results, "paths": paths, "timings": timings,
          "example": {"frame": frame, "view": view, "joint": joint_name}}


