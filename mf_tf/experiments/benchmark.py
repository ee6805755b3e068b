r"""The paper's benchmark protocol (Sec. 5.1-5.2, Table 1, Figure 7): `--mode=benchmark`.

  python -m mf_tf.main --mode=benchmark --config=configs/benchmark.py --workdir=/tmp/mf_bench
  python -m mf_tf.main --mode=benchmark --config=configs/benchmark.py:smoke --workdir=/tmp/mf_s

Protocol:
  1. Pretraining rig (20 Panoptic VGA cameras, 380 ordered pairs): simulate frames and pretrain
     * MetaFuse: MAML over pair tasks (`mf_tf.train.metatrain.metatrain_fusion`);
     * AffineFuse: the same factorized model (one omega_base, one theta init shared by every
       pair) trained by plain Adam on the same pair tasks, no inner loop (`pretrain_affine`);
       the only difference to MetaFuse is the meta-learning algorithm (paper Table 1);
     * NaiveFuse: free HW x HW matrices on the first V cameras of the pretraining rig, for each
       view count V of the held-out rigs (`pretrain_naive`; the paper uses four cameras).
  2. Held-out rigs (never seen in pretraining): 4-camera subsets of the 6 held-out Panoptic
     cameras (several trials, averaged), the Human3.6M rig, Shelf, and any rig files listed.
     Per rig, training frames (the first K are the K-shot set) and test frames from another seed.
  3. Methods, adapted by `mf_tf.train.adaptation.adapt` with the run's recipe
     (`mf_tf.train.recipes`; a step budget turned into epochs) and evaluated by
     `mf_tf.evaluation.evaluate.evaluate_fusion` on the test frames:
       no_fusion       K = "0"   the detector heatmaps;
       metafuse        K = "0"   calibrated initialization (`mf_tf.fusion.calibrated`), no data;
       metafuse        K in Ks   the recipe's starts (e.g. the K labels' geometry, or the
                                 meta-learned omega_base, frozen), theta finetuned on K frames,
                                 the best start by the recipe's selection kept;
       metafuse_paper  K in Ks   the same with the paper recipe (`paper_rows`);
       affine          K in Ks   SGD-pretrained omega_base (frozen), theta finetuned;
       naive       K in Ks      pretrained matrices finetuned on K frames;
       naive       K = "full"   NaiveFuse on all the rig's training frames: the better start
                                (validation JDR) of the scaled exact MSE optimum and the
                                epipolar map of the labels' geometry, then Adam steps.
  4. Output in <workdir>/benchmark/: results.json (written atomically)
       {"rigs": {RIG: {METHOD: {K: result}}}, "targets": {RIG: {check: {...}}}, "config": {...}}
     with each result as in `evaluate.evaluate_fusion` (JDR in percent, MPJPE in mm), the
     tables in results.md, and one Figure-7-style plot per rig (figure7_<rig>.png).

The data are the simulated detector's heatmaps (fast) or, with `source="images"`, heatmaps of a
backbone briefly trained on rendered images of the same worlds (smaller, slower).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import math
import multiprocessing
import os
import time
from typing import Callable

from absl import logging
import numpy as np
import tensorflow as tf

from mf_tf import checkpoints
from mf_tf import files
from mf_tf.data import joints as joints_lib
from mf_tf.data import world
from mf_tf.evaluation import evaluate
from mf_tf.evaluation import plots
from mf_tf.evaluation import pictorial
from mf_tf.fusion import starts as fusion_starts
from mf_tf.geometry import rigs as rigs_lib
from mf_tf.meta import maml
from mf_tf.models import backbone as backbone_lib
from mf_tf.meta import tasks as tasks_lib
from mf_tf.train import adaptation
from mf_tf.train import finetune as finetune_lib
from mf_tf.train import metatrain
from mf_tf.train import pretrain as pretrain_lib
from mf_tf.train import pretraining
from mf_tf.train import recipes
from mf_tf.train import warmup as warmup_lib

METHODS = ("no_fusion", "naive", "affine", "metafuse", "metafuse_paper")
NAIVE_FULL_SOLVERS = ("epipolar", "least_squares", "fit")
NUMERIC_KEYS = ("jdr_mean", "jdr_visible", "jdr_occluded", "mpjpe_triangulation_mm",
                "mpjpe_pictorial_mm")


@dataclasses.dataclass(frozen=True)
class FitSettings:
  """Adam training of a whole-rig fusion layer on labelled frames.

  Attributes:
    steps: Optimizer steps.
    learning_rate: Adam learning rate.
    batch_size: Frames per step (capped at the number of frames).
    loss_temperature: Softmax temperature of the training loss; None: the read-out temperature
      (see `config.fusion.loss_temperature`).
  """
  steps: int
  learning_rate: float
  batch_size: int
  loss_temperature: float | None


@dataclasses.dataclass(frozen=True)
class ExperimentSettings:
  """What the demo and the benchmark share: the synthetic world, pretraining and evaluation.

  Attributes:
    joint_set: Joint set name.
    heatmap_size: Heatmap side H = W, px.
    temperature: Fusion softmax temperature (the read-out's).
    target_sigma: Gaussian target std, heatmap px.
    seed: Base seed of every draw.
    pretrain_rig: Pretraining rig name or file.
    pretrain_frames: Frames simulated on the pretraining rig.
    maml: `MamlSettings` of MetaFuse meta-training.
    detector: `DetectorParams` (64 px units).
    pictorial_options: RPSM options; None skips the RPSM (MPJPE by triangulation only).
    limb_frames: Training poses giving the RPSM limb lengths.
    line_width_px, line_value: Calibrated MetaFuse^0 line base.
    eval_batch_size: Frames per fusion call in evaluation.
    recipe: The `recipes.Recipe` of the MetaFuse^K rows (its starts) and of every method's
      training (its loss, selection, theta parameterization and proximal weight).
  """
  joint_set: str
  heatmap_size: int
  temperature: float
  target_sigma: float
  seed: int
  pretrain_rig: str
  pretrain_frames: int
  maml: metatrain.MamlSettings
  detector: world.DetectorParams
  pictorial_options: pictorial.PictorialOptions | None
  limb_frames: int
  line_width_px: float
  line_value: float
  eval_batch_size: int
  recipe: recipes.Recipe


@dataclasses.dataclass(frozen=True)
class BenchmarkSettings(ExperimentSettings):
  """Everything the protocol needs, as explicit values (see `settings_from_config`): the shared
  `ExperimentSettings` and these.

  Attributes:
    affine_pretrain: Steps and Adam settings of AffineFuse pretraining (tasks and frames per
      step as in `maml`).
    naive_pretrain: NaiveFuse pretraining on the first V pretraining cameras.
    heldout_rigs: Held-out rig names or files, evaluated whole.
    panoptic_rig: Rig whose camera subsets make the Panoptic trials ("" for none).
    panoptic_trials: Number of trials (distinct camera subsets).
    panoptic_views: Cameras per trial.
    shots: The K values (finetuning frames).
    train_frames: Training frames per held-out rig (NaiveFuse^full uses all; >= max K).
    test_frames: Test frames per held-out rig.
    finetune: Finetuning of theta (MetaFuse, AffineFuse): paper Adam lr 5e-3.
    naive_finetune: Finetuning of NaiveFuse on K frames.
    naive_full: Adam steps of NaiveFuse^full on all training frames (from its solver's start).
    naive_full_solver: Start of NaiveFuse^full's `naive_full` Adam steps (the recipe's loss and
      selection), chosen by validation JDR (`finetune.solve_naive_fusion`): "epipolar" (the
      better of the scaled MSE optimum and the epipolar matrices of the geometry estimated from
      the training labels), "least_squares" (the exact MSE optimum, its scale chosen) or "fit"
      (zero matrices, as the paper).
    source: "detector" or "images".
    images: Settings of the image path (dict), used when source == "images".
    paper_rows: Also run "metafuse_paper": MetaFuse^K with `recipes.PAPER` (when `recipe` is
      another).
    outlier_px: Robust triangulation threshold (heatmap px) or None for the plain DLT.
    workers: Processes that run the held-out rigs' trials side by side (source "detector"; the
      image source runs them in this process). An AffineFusion train step runs on one core, so
      a second process keeps the other one busy.
    worker_threads: TensorFlow intra- and inter-op threads of each worker process; 0 leaves
      TensorFlow's default (every core; against 1 thread per worker measured in BUILD.md).
  """
  affine_pretrain: FitSettings
  naive_pretrain: FitSettings
  heldout_rigs: tuple
  panoptic_rig: str
  panoptic_trials: int
  panoptic_views: int
  shots: tuple
  train_frames: int
  test_frames: int
  finetune: FitSettings
  naive_finetune: FitSettings
  naive_full: FitSettings
  naive_full_solver: str
  source: str
  images: dict
  paper_rows: bool
  outlier_px: float | None
  workers: int
  worker_threads: int

  def __post_init__(self):
    if self.source not in ("detector", "images"):
      raise ValueError(f"benchmark source={self.source!r}, expected 'detector' or 'images'")
    if self.naive_full_solver not in NAIVE_FULL_SOLVERS:
      raise ValueError(f"benchmark naive_full_solver={self.naive_full_solver!r}, expected one "
                       f"of {NAIVE_FULL_SOLVERS}")
    if not self.shots or min(self.shots) < 1:
      raise ValueError(f"benchmark shots={self.shots}, expected positive K values")
    if self.train_frames < max(self.shots):
      raise ValueError(f"benchmark train_frames={self.train_frames} is below the largest K "
                       f"{max(self.shots)}")
    if int(self.workers) != self.workers or self.workers < 1:
      raise ValueError(f"benchmark workers={self.workers}, expected an integer >= 1")
    if int(self.worker_threads) != self.worker_threads or self.worker_threads < 0:
      raise ValueError(f"benchmark worker_threads={self.worker_threads}, expected an integer "
                       ">= 0 (0: TensorFlow's default)")

  def adaptation_rows(self) -> list[tuple]:
    """[(row, recipe, starts)] of the adapted rows in table order: MetaFuse^K with `recipe`'s
    starts, AffineFuse^K and NaiveFuse^K (from their pretrained models, trained with `recipe`),
    and MetaFuse^K with the paper's recipe (`paper_rows`)."""
    row_recipes = self.row_recipes()
    rows = [("metafuse", self.recipe, self.recipe.starts), ("affine", self.recipe, ("affine",)),
            ("naive", self.recipe, ("naive",))]
    if "metafuse_paper" in row_recipes:
      rows.append(("metafuse_paper", recipes.PAPER, recipes.PAPER.starts))
    return rows

  def row_recipes(self) -> dict:
    """{MetaFuse^K row: recipe}: "metafuse" with `recipe`, and "metafuse_paper" with the
    paper's (`paper_rows`, when `recipe` is another)."""
    rows = {"metafuse": self.recipe}
    if self.paper_rows and self.recipe != recipes.PAPER:
      rows["metafuse_paper"] = recipes.PAPER
    return rows


# ----------------------------------------------------------------------------- training


def pretrain_affine(pool: tasks_lib.FramePool, pairs, maml_settings: metatrain.MamlSettings,
                    fit: FitSettings, *, init: maml.MetaParams | None = None,
                    progress: bool = False) -> maml.MetaParams:
  """AffineFuse pretraining: the factorized model trained by plain Adam on pair tasks.

  The same tasks as MetaFuse (`TaskSampler` with the MAML settings' tasks per step and frames
  per task; support and query frames together, since there is no inner step), the same
  parameters (omega_base [H, W] and one theta [HW, 6] shared by every pair), no adaptation in the
  objective.

  Args:
    pool: Pretraining frames.
    pairs: [P, 2] ordered pairs to draw tasks from.
    maml_settings: Task sizes, temperature, target sigma and seed.
    fit: Steps and learning rate.
    init: Initial parameters; None: `metatrain.default_meta_params`.
    progress: Show a progress bar.

  Returns:
    `MetaParams` as numpy.
  """
  return pretrain_lib.pretrain_affine(
      pool, pairs, steps=int(fit.steps), tasks_per_step=maml_settings.tasks_per_step,
      frames_per_task=maml_settings.support_size + maml_settings.query_size,
      learning_rate=fit.learning_rate, temperature=maml_settings.temperature,
      target_sigma=maml_settings.target_sigma, seed=maml_settings.seed + 7919, init=init,
      progress=progress, loss=maml_settings.loss)


def finetune(layer, heatmaps, joints2d, fit: FitSettings, *, target_sigma: float, seed: int,
             progress: bool = False, label: str = "finetune", **options) -> dict:
  """Training of one fusion layer by `mf_tf.train.finetune.finetune_fusion` on a step budget
  (`adaptation.epochs_for_steps`): NaiveFuse pretraining and whole-rig training. `recipe` (loss,
  selection, proximal, head_size_px, compiled: `options`) is passed to `finetune_fusion`.
  """
  count = len(heatmaps)
  epochs = adaptation.epochs_for_steps(fit.steps, fit.batch_size, count)
  history = finetune_lib.finetune_fusion(
      layer, heatmaps, joints2d, target_sigma=target_sigma, learning_rate=fit.learning_rate,
      epochs=epochs, batch_size=fit.batch_size, seed=seed, progress=progress,
      loss_temperature=fit.loss_temperature, **options)
  logging.info("%s: %d epochs on %d frames, loss %.4f -> %.4f, val_loss %.4f -> %.4f", label,
               history["epochs"], count, history["loss"][0], history["loss"][-1],
               history["val_loss"][0], min(history["val_loss"]))
  return history


def calibrated_layer(rig, heatmap_size: int, temperature: float, line_width_px: float,
                     line_value: float):
  """MetaFuse^0: the rig's epipolar theta and line base, materialized (no training)."""
  layer = fusion_starts.make_fusion_layer("calibrated", rig, heatmap_size,
                                          temperature=temperature, line_width_px=line_width_px,
                                          line_value=line_value, name="calibrated")
  return layer.materialize()


# ----------------------------------------------------------------------------- data


def simulate(rig, num_frames: int, seed: int, settings: BenchmarkSettings, *,
             dense: bool = True, backbone=None) -> dict:
  """Frames of a rig in the benchmark's data source.

  Args:
    rig: The rig.
    num_frames, seed: Frames to simulate and their seed.
    settings: `BenchmarkSettings` (joint set, heatmap size, detector, source).
    dense: Return dense "heatmaps" (else the detector's compact state only).
    backbone: With source "images": the model mapping rendered images to heatmaps.
  """
  images = settings.source == "images"
  if images and backbone is None:
    raise ValueError("source='images' needs a backbone (prepare_image_backbone)")
  frames = world.simulate_frames(rig, int(num_frames), int(seed), settings.joint_set,
                                 settings.heatmap_size, detector_params=settings.detector,
                                 return_heatmaps=dense and not images, render_images=images,
                                 image_size=int(settings.images.get("image_size", 128)))
  if images:
    rendered = frames.pop("images")
    flat = rendered.reshape((-1,) + rendered.shape[2:]).astype(np.float32)
    heatmaps = backbone.predict(flat, batch_size=32, verbose=0)
    frames["heatmaps"] = heatmaps.reshape(rendered.shape[:2] + heatmaps.shape[1:]).astype(
        np.float32)
    for key in ("peaks", "amplitudes", "noise_seed"):  # Detector state: not this source's.
      frames.pop(key, None)
  _check_finite(frames, f"{rig.name} ({settings.source})")
  return frames


def _check_finite(frames: dict, label: str) -> None:
  """Raises FloatingPointError naming the first frame whose heatmaps (or detector state) are not
  finite: no frame is dropped or replaced, so a non-finite input is never hidden."""
  for key in ("heatmaps", "peaks", "amplitudes"):
    if key not in frames:
      continue
    values = frames[key]
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if not finite.all():
      bad = np.flatnonzero(~finite)
      raise FloatingPointError(f"{label}: simulated {key!r} of frame {int(bad[0])} hold NaN or "
                               f"Inf ({len(bad)} of {len(values)} frames, first "
                               f"{bad[:10].tolist()}); expected finite values")


def prepare_image_backbone(pretrain_rig, settings: BenchmarkSettings, workdir: str | None = None):
  """Warms up a small SimpleBaseline backbone on rendered pretraining-rig images (MSE).

  The backbone (settings.images["backbone"], default "mobilenetv2_035", from `weights=None` or
  settings.images["weights"]) is trained for settings.images["epochs"] epochs on
  settings.images["frames"] frames of the pretraining rig (a seed no other stage uses), then
  computes the heatmaps of every rig.

  Returns:
    The trained `keras.Model`.
  """
  options = settings.images
  image_size = int(options.get("image_size", 128))
  if image_size // 4 != settings.heatmap_size:
    raise ValueError(f"images.image_size={image_size} gives {image_size // 4} px heatmaps, but "
                     f"heatmap_size={settings.heatmap_size}; expected image_size = 4 x heatmap")
  joint_set = joints_lib.get_joint_set(settings.joint_set)
  model = backbone_lib.build_backbone(str(options.get("backbone", "mobilenetv2_035")),
                                      image_size, joint_set.num_joints,
                                      weights=options.get("weights") or None)
  frames = world.simulate_frames(pretrain_rig, int(options.get("frames", 64)),
                                 settings.seed + 31, settings.joint_set, settings.heatmap_size,
                                 return_heatmaps=False, render_images=True,
                                 image_size=image_size)
  images = frames["images"].reshape((-1, image_size, image_size, 3))
  joints2d = frames["joints2d"].reshape((-1,) + frames["joints2d"].shape[2:])
  visibility = np.ones(joints2d.shape[:-1], np.float32)  # Occluded joints are supervised too.
  logging.info("benchmark: warming up the image backbone on %d images", len(images))
  warmup_lib.warmup_backbone(model, images, joints2d, visibility,
                             target_sigma=settings.target_sigma,
                             epochs=int(options.get("epochs", 2)),
                             batch_size=int(options.get("batch_size", 16)),
                             learning_rate=float(options.get("learning_rate", 1e-3)),
                             validation_fraction=0.0, seed=settings.seed, progress=False)
  if workdir:
    model.save_weights(os.path.join(workdir, "backbone.weights.h5"))
  return model


def panoptic_subsets(num_cameras: int, views: int, trials: int, seed: int) -> list[tuple]:
  """`trials` distinct `views`-camera subsets of `num_cameras` cameras, drawn by seed."""
  combos = list(itertools.combinations(range(num_cameras), views))
  if trials > len(combos):
    raise ValueError(f"panoptic_trials={trials}, but only {len(combos)} distinct "
                     f"{views}-camera subsets of {num_cameras} cameras exist")
  order = np.random.default_rng(seed).permutation(len(combos))[:trials]
  return [combos[i] for i in sorted(order)]


# ----------------------------------------------------------------------------- protocol


@dataclasses.dataclass
class Pretrained:
  """Pretrained fusion models: MetaFuse and AffineFuse parameters, NaiveFuse per view count.

  `metafuse` is the meta-trained init of the recipe's MetaFuse^K starts (None when they read
  none), `metafuse_paper` the paper's meta-learned init (None without paper rows).
  """
  metafuse: maml.MetaParams | None
  affine: maml.MetaParams
  naive: dict  # {num_views: [P, HW, HW] matrices}
  timings: dict
  metafuse_paper: maml.MetaParams | None = None


def pretrain(settings: BenchmarkSettings, view_counts, *, workdir: str | None = None,
             progress: bool = True, backbone=None,
             executor: concurrent.futures.Executor | None = None,
             then: Callable[[], None] | None = None) -> Pretrained:
  """Stage 1 of the protocol on the pretraining rig (module docstring).

  Args:
    settings: `BenchmarkSettings`.
    view_counts: The view counts of the held-out rigs (one NaiveFuse pretraining each).
    workdir: If set, meta-parameters go to <workdir>/metafuse.npz and affine.npz.
    progress: Progress bars.
    backbone: The image backbone (source "images").
    executor: Worker processes (`_worker_pool`): meta-training is submitted there and runs
      while this process pretrains AffineFuse and NaiveFuse (the same parameters as here).
    then: Called once meta-training is submitted, before the rest (e.g. to queue more work).
  """
  rig = rigs_lib.get_rig(settings.pretrain_rig)
  timings = {}
  start = time.time()
  logging.info("benchmark: simulating %d frames on the pretraining rig %s (%d views)",
               settings.pretrain_frames, rig.name, rig.num_views)
  frames = simulate(rig, settings.pretrain_frames, settings.seed, settings,
                    dense=settings.source == "images", backbone=backbone)
  pool = tasks_lib.FramePool.from_frames(frames, settings.heatmap_size, settings.detector,
                                         dense=settings.source == "images")
  pairs = rig.pairs
  timings["simulate_s"] = time.time() - start

  start = time.time()
  parallel = executor is not None
  meta_params, futures = {}, {}
  for name, recipe in settings.row_recipes().items():
    if recipe.meta_theta_init is None:
      continue
    logging.info("benchmark: MetaFuse meta-training (%s recipe, %s theta), %d steps of %d tasks "
                 "over %d pairs%s", recipe.name, recipe.meta_theta_init, settings.maml.num_steps,
                 settings.maml.tasks_per_step, len(pairs), " (worker process)" if parallel else "")
    job = (recipe, pool, pairs, settings.maml, rig, settings.line_width_px, settings.line_value)
    if parallel:
      futures[name] = executor.submit(_metatrain_job, *job, int(settings.worker_threads))
    else:
      meta_params[name] = _metatrain_job(*job, progress=progress)[0]
  if not parallel:
    timings["metafuse_pretrain_s"] = time.time() - start
  if then is not None:
    then()

  start = time.time()
  logging.info("benchmark: AffineFuse pretraining (plain Adam), %d steps",
               settings.affine_pretrain.steps)
  affine = pretrain_affine(pool, pairs, settings.maml, settings.affine_pretrain,
                           progress=progress)
  timings["affine_pretrain_s"] = time.time() - start
  if workdir:
    checkpoints.save_meta_params(affine, os.path.join(workdir, "affine.npz"), {"method": "sgd"})

  start = time.time()
  naive = {num_views: _pretrain_naive(rig.subset(range(num_views)), settings, progress=progress,
                                      backbone=backbone)
           for num_views in sorted(set(int(v) for v in view_counts))}
  timings["naive_pretrain_s"] = time.time() - start
  for name, future in futures.items():
    meta_params[name], seconds = future.result()
    timings["metafuse_pretrain_s"] = timings.get("metafuse_pretrain_s", 0) + seconds
  meta, paper = meta_params.get("metafuse"), meta_params.get("metafuse_paper")
  if workdir:
    for name, params in (("metafuse", meta), ("metafuse_paper", paper)):
      if params is not None:
        checkpoints.save_meta_params(params, os.path.join(workdir, f"{name}.npz"),
                                   {"method": "maml",
                                    "recipe": settings.row_recipes()[name].name})
  return Pretrained(meta, affine, naive, timings, paper)


def _pretrain_naive(subset, settings: BenchmarkSettings, *, progress: bool,
                    backbone=None) -> np.ndarray:
  """NaiveFuse on the first V pretraining cameras (`subset`), trained with the recipe's loss
  and selection: its [P, HW, HW] matrices."""
  logging.info("benchmark: NaiveFuse pretraining on %s, %d steps", subset.name,
               settings.naive_pretrain.steps)
  frames = simulate(subset, settings.pretrain_frames, settings.seed + 17, settings,
                    backbone=backbone)
  layer = fusion_starts.make_fusion_layer("naive", subset, settings.heatmap_size,
                                          temperature=settings.temperature,
                                          name=f"naive_pretrain_{subset.num_views}")
  finetune(layer, frames["heatmaps"], frames["joints2d"], settings.naive_pretrain,
           target_sigma=settings.target_sigma, seed=settings.seed, progress=progress,
           label=f"naive pretrain V={subset.num_views}", loss=settings.recipe.loss,
           selection=settings.recipe.selection)
  return layer.matrices.numpy()


def _eval(layer, frames, rig, settings, limb_lengths):
  return evaluate.evaluate_fusion(layer, frames, rig, settings.joint_set, settings.temperature,
                                  limb_lengths=limb_lengths,
                                  pictorial_options=settings.pictorial_options,
                                  batch_size=settings.eval_batch_size,
                                  outlier_px=settings.outlier_px)


PARTS = ("all", "unpretrained", "pretrained")


def needs_pretraining(method: str, shots, settings: BenchmarkSettings) -> bool:
  """Whether a benchmark row needs stage 1 (the pretraining rig): No-Fusion, MetaFuse^0,
  NaiveFuse^full and the self-calibrated MetaFuse^K do not, so they can run during it."""
  if method == "no_fusion" or str(shots) in ("0", "full"):
    return False
  recipe = settings.row_recipes().get(method)
  return recipe is None or recipe.meta_theta_init is not None


def _shots_order(shots: str):
  return (shots == "full", int(shots) if shots.isdigit() else 0)


def merge_results(parts: list[dict]) -> dict:
  """One {method: {K: result}} from the parts of a trial (K in order: 0, the Ks, full)."""
  return {method: dict(sorted(((k, r) for part in parts for k, r in part.get(method, {}).items()),
                              key=lambda item: _shots_order(item[0])))
          for method in METHODS}


def benchmark_rig(rig, pretrained: Pretrained | None, settings: BenchmarkSettings, *, seed: int,
                  progress: bool = False, backbone=None, part: str = "all") -> dict:
  """Every method on one held-out rig (or one part of them).

  Args:
    rig: The held-out `Rig`.
    pretrained: Stage-1 models (None for part "unpretrained").
    settings: `BenchmarkSettings`.
    seed: Seed of the rig's training frames; test frames use seed + 1.
    progress: Progress bars for training.
    backbone: The image backbone (source "images").
    part: "all", or the rows that need no pretraining ("unpretrained", `needs_pretraining`) or
      the others ("pretrained"); `merge_results` joins the two.

  Returns:
    {method: {K (str): result dict}}.
  """
  if part not in PARTS:
    raise ValueError(f"benchmark part={part!r}, expected one of {PARTS}")
  if pretrained is None and part != "unpretrained":
    raise ValueError(f"benchmark part={part!r} needs the pretrained models")
  train = simulate(rig, settings.train_frames, seed, settings, backbone=backbone)
  test = simulate(rig, settings.test_frames, seed + 1, settings, backbone=backbone)
  limb_lengths = pictorial.mean_limb_lengths(train["joints3d"][:settings.limb_frames],
                                             settings.joint_set)
  results = {method: {} for method in METHODS}

  def wanted(method, shots):
    return part == "all" or needs_pretraining(method, shots, settings) == (part == "pretrained")

  def record(method, shots, layer):
    start = time.time()
    result = _eval(layer, test, rig, settings, limb_lengths)
    results[method][str(shots)] = result
    logging.info("%s %s^%s: JDR %.1f%% (visible %.1f, occluded %.1f), MPJPE %.1f / %.1f mm "
                 "[eval %.0f s]", rig.name, method, shots, result["jdr_mean"],
                 result["jdr_visible"], result["jdr_occluded"],
                 result["mpjpe_triangulation_mm"], result["mpjpe_pictorial_mm"],
                 time.time() - start)

  if wanted("no_fusion", 0):
    record("no_fusion", 0, None)
    record("metafuse", 0, calibrated_layer(rig, settings.heatmap_size, settings.temperature,
                                           settings.line_width_px, settings.line_value))
  slots = _LayerSlots()
  for shots in settings.shots:
    for name, recipe, starts in settings.adaptation_rows():
      if wanted(name, shots):
        layer = _adapt_row(rig, name, recipe, starts, pretrained, train, shots, settings, slots,
                           seed=seed, progress=progress)
        record(name, shots, layer if name == "naive" else layer.materialize())
  if wanted("naive", "full"):
    record("naive", "full", _naive_full(rig, train, settings, slots, seed=seed,
                                        progress=progress))
  return results


class _LayerSlots:
  """One layer object and compiled train step per row and start, its weights set anew for every
  K (and NaiveFuse^full): the step is traced and compiled once per row and rig, not per K."""

  def __init__(self):
    self._slots = {}

  def reuse(self, name: str, starts) -> tuple[list, dict]:
    """([(start, the slot's layer holding the start's weights)], {start: compiled-step dict})."""
    kept = []
    for start, layer in starts:
      key = (name, start)
      if key not in self._slots:
        self._slots[key] = (layer, {})
      else:
        self._slots[key][0].set_weights(layer.get_weights())
      kept.append((start, self._slots[key][0]))
    return kept, {start: self._slots[(name, start)][1] for start, _ in starts}


def _adapt_row(rig, name: str, recipe, starts, pretrained: Pretrained | None, train: dict,
               shots: int, settings: BenchmarkSettings, slots: _LayerSlots, *, seed: int,
               progress: bool):
  """Row `name`^K: its starts adapted to the first K training frames (`adaptation.adapt`)."""
  heatmaps, joints2d = train["heatmaps"][:shots], train["joints2d"][:shots]
  inits = {}
  if pretrained is not None:  # Without pretrained models only starts that read none get here.
    inits = {"metafuse": (pretrained.metafuse_paper if name == "metafuse_paper"
                          else pretrained.metafuse),
             "metafuse_calibrated": pretrained.metafuse, "affine": pretrained.affine,
             "naive": pretrained.naive[rig.num_views]}
  layers, compiled = slots.reuse(name, adaptation.start_layers(
      recipe, starts, rig, settings.heatmap_size, inits=inits, labels=joints2d, name=name,
      **_line(settings)))
  fit = settings.naive_finetune if name == "naive" else settings.finetune
  adapted = adaptation.adapt(
      recipe, layers, heatmaps, joints2d, target_sigma=settings.target_sigma,
      epochs=adaptation.epochs_for_steps(fit.steps, fit.batch_size, len(heatmaps)),
      learning_rate=fit.learning_rate, batch_size=fit.batch_size,
      loss_temperature=fit.loss_temperature, seed=seed,
      head_size_px=train["head_size"][:shots] if "head_size" in train else None,
      progress=progress, compiled=compiled, label=f"{rig.name} {name}^{shots}")
  return adapted["layer"]


def _naive_full(rig, train: dict, settings: BenchmarkSettings, slots: _LayerSlots, *, seed: int,
                progress: bool):
  """NaiveFuse^full: solved on all training frames (`naive_full_solver`), then Adam steps with
  the recipe's loss (from the solved start, or from zero with "fit")."""
  [(_, layer)], compiled = slots.reuse("naive", adaptation.start_layers(
      settings.recipe, ("naive",), rig, settings.heatmap_size, name="naive_full",
      **_line(settings)))
  if settings.naive_full_solver != "fit":
    solved = finetune_lib.solve_naive_fusion(
        layer, train["heatmaps"], train["joints2d"], target_sigma=settings.target_sigma,
        seed=seed, head_size_px=train.get("head_size"),
        epipolar_rig=rig if settings.naive_full_solver == "epipolar" else None,
        line_width_px=settings.line_width_px, line_value=settings.line_value)
    logging.info("%s naive^full: solved on %d frames, kept %s", rig.name,
                 solved["train_frames"], solved["start"])
  finetune(layer, train["heatmaps"], train["joints2d"], settings.naive_full,
           label=f"{rig.name} naive^full", head_size_px=train.get("head_size"),
           compiled=compiled["naive"], loss=settings.recipe.loss,
           selection=settings.recipe.selection, proximal=settings.recipe.proximal,
           target_sigma=settings.target_sigma, seed=seed, progress=progress)
  return layer


def _line(settings: BenchmarkSettings) -> dict:
  """The read-out temperature and calibrated line of `start_layers`."""
  return dict(temperature=settings.temperature, line_width_px=settings.line_width_px,
              line_value=settings.line_value)


def average_results(results: list[dict]) -> dict:
  """Mean over trials of {method: {K: result}} (numeric fields and per-joint JDR)."""
  if len(results) == 1:
    return results[0]
  out = {}
  for method, by_k in results[0].items():
    out[method] = {}
    for shots, first in by_k.items():
      items = [r[method][shots] for r in results]
      merged = {key: float(np.nanmean([item[key] for item in items])) for key in NUMERIC_KEYS}
      merged["jdr_per_joint"] = {
          joint: float(np.nanmean([item["jdr_per_joint"][joint] for item in items]))
          for joint in first["jdr_per_joint"]}
      merged["num_frames"] = int(sum(item.get("num_frames", 0) for item in items))
      merged["trials"] = len(items)
      out[method][shots] = merged
  return out


def _get(rig_results, method, shots, key="jdr_mean"):
  value = rig_results.get(method, {}).get(str(shots), {}).get(key)
  return None if value is None or not math.isfinite(value) else float(value)


def check_targets(rig_results: dict, shots) -> dict:
  """The paper's findings (and this project's targets) on one held-out rig.

  Each check is {"value": ..., "target": text, "met": bool}; checks whose inputs are missing
  (e.g. K = 50 not run) are left out.
  """
  checks = {}

  def add(name, value, target, met):
    checks[name] = {"value": value, "target": target, "met": bool(met)}

  none0 = _get(rig_results, "no_fusion", 0)
  meta50 = _get(rig_results, "metafuse", 50)
  if none0 is not None and meta50 is not None:
    add("metafuse50_gain", meta50 - none0, "MetaFuse^50 - No-Fusion >= 3 JDR points",
        meta50 - none0 >= 3.0)
    gain_occ = _get(rig_results, "metafuse", 50, "jdr_occluded") - _get(
        rig_results, "no_fusion", 0, "jdr_occluded")
    gain_vis = _get(rig_results, "metafuse", 50, "jdr_visible") - _get(
        rig_results, "no_fusion", 0, "jdr_visible")
    add("metafuse50_gain_occluded_minus_visible", gain_occ - gain_vis,
        "gain concentrated on occluded joints (occluded gain > visible gain)", gain_occ > gain_vis)
    for other in ("affine", "naive"):
      value = _get(rig_results, other, 50)
      if value is not None:
        add(f"metafuse50_vs_{other}50", meta50 - value,
            f"MetaFuse^50 >= {_LABELS[other]}^50 + 1", meta50 >= value + 1.0)
  base = _get(rig_results, "no_fusion", 0, "mpjpe_triangulation_mm")
  fused = [(result["jdr_mean"], result["mpjpe_triangulation_mm"])
           for method, by_k in rig_results.items() if method != "no_fusion"
           for result in by_k.values()]
  if base and fused:
    best = max(fused)[1]  # MPJPE of the method with the best JDR.
    add("best_fused_mpjpe_reduction", 1.0 - best / base,
        "MPJPE (triangulation) of the best fused method >= 10% below No-Fusion",
        best <= 0.9 * base)
  for k in [k for k in shots if k <= 100]:
    meta, affine, naive = (_get(rig_results, m, k) for m in ("metafuse", "affine", "naive"))
    if None not in (meta, affine, naive):
      add(f"order_k{k}", [meta, affine, naive], f"MetaFuse^{k} > AffineFuse^{k} > NaiveFuse^{k}",
          meta > affine > naive)
  naive50 = _get(rig_results, "naive", 50)
  if naive50 is not None and none0 is not None:
    add("naive50_below_no_fusion", naive50 - none0, "NaiveFuse^50 < No-Fusion", naive50 < none0)
  full = _get(rig_results, "naive", "full")
  if full is not None and 500 in shots:
    at_500 = [_get(rig_results, m, 500) for m in ("metafuse", "affine", "naive")]
    best = max([v for v in at_500 if v is not None] + [full])
    add("naive_full_near_best", full - best, "NaiveFuse^full best or within 1 point of the best "
        "method at K = 500", full >= best - 1.0)
  calib = _get(rig_results, "metafuse", 0)
  if calib is not None and none0 is not None:
    add("metafuse0_calibrated_gain", calib - none0, "MetaFuse^0 (calibrated) > No-Fusion",
        calib > none0)
  if calib is not None and meta50 is not None:
    add("metafuse50_vs_metafuse0", meta50 - calib, "MetaFuse^50 (geometry from the labels, "
        "finetuned) >= MetaFuse^0 - 0.5 (finetuning never loses its start)",
        meta50 >= calib - 0.5)
  return checks


_LABELS = {"no_fusion": "No-Fusion", "naive": "NaiveFuse", "affine": "AffineFuse",
           "metafuse": "MetaFuse", "metafuse_paper": "MetaFuse"}
KEY_JOINTS = ("elbow", "wrist", "knee", "ankle")


def joint_group_jdr(result: dict, group: str) -> float:
  """Mean JDR of a joint group: "mean" or a joint name without its side ("wrist")."""
  if group == "mean":
    return float(result["jdr_mean"])
  values = [v for joint, v in result["jdr_per_joint"].items()
            if joint in (group, "l" + group, "r" + group) and v is not None]
  return float(np.mean(values)) if values else float("nan")


def _cell(value, digits=1):
  return "n/a" if value is None or not math.isfinite(float(value)) else f"{value:.{digits}f}"


def method_label(method: str, shots) -> str:
  if method == "no_fusion":
    return "No-Fusion"
  if method == "metafuse" and str(shots) == "0":
    return "MetaFuse^0 (calibrated)"
  if method == "metafuse_paper":
    return f"MetaFuse^{shots} (paper)"
  return f"{_LABELS[method]}^{shots}"


def results_markdown(payload: dict) -> str:
  """Tables of a benchmark payload: one per rig, then the target checks."""
  lines = ["# MetaFuse benchmark", "",
           "JDR in percent (2D error below half the head size, all views and frames), MPJPE in "
           "mm without alignment (DLT triangulation / pictorial model).", ""]
  for rig, by_method in payload["rigs"].items():
    lines += [f"## {rig}", "",
              "| method | JDR mean | visible | occluded | " +
              " | ".join(KEY_JOINTS) + " | MPJPE tri | MPJPE pict |",
              "| --- |" + " ---: |" * (5 + len(KEY_JOINTS))]
    for method in METHODS:
      for shots, result in by_method.get(method, {}).items():
        joints = " | ".join(_cell(joint_group_jdr(result, g)) for g in KEY_JOINTS)
        lines.append(
            f"| {method_label(method, shots)} | {_cell(result['jdr_mean'])} | "
            f"{_cell(result['jdr_visible'])} | {_cell(result['jdr_occluded'])} | {joints} | "
            f"{_cell(result['mpjpe_triangulation_mm'])} | "
            f"{_cell(result['mpjpe_pictorial_mm'])} |")
    lines.append("")
  if payload.get("targets"):
    lines += ["## Paper findings on the held-out rigs", "", "| rig | check | value | met |",
              "| --- | --- | --- | --- |"]
    for rig, checks in payload["targets"].items():
      for name, check in checks.items():
        value = check["value"]
        text = (", ".join(_cell(v) for v in value) if isinstance(value, list)
                else _cell(value, 3 if "reduction" in name else 1))
        lines.append(f"| {rig} | {check['target']} | {text} | {'yes' if check['met'] else 'NO'} |")
    lines.append("")
  return "\n".join(lines)


def write_json_atomic(payload: dict, path: str) -> None:
  """Writes JSON to a temporary file beside `path`, then renames it over `path`.

  The text is made in memory first, and `files.write_atomic` removes its temporary file when
  the write fails: the previous results stay, and nothing half-written is left beside them.
  """
  text = json.dumps(evaluate._json_safe(payload), indent=1)  # pylint: disable=protected-access
  files.write_atomic(path, text + "\n")


def heldout_rigs(settings: BenchmarkSettings) -> list[tuple[str, list]]:
  """[(result name, [Rig per trial])] of the held-out rigs."""
  out = []
  if settings.panoptic_rig and settings.panoptic_trials > 0:
    full = rigs_lib.get_rig(settings.panoptic_rig)
    subsets = panoptic_subsets(full.num_views, settings.panoptic_views, settings.panoptic_trials,
                               settings.seed)
    out.append((full.name, [full.subset(s) for s in subsets]))
  for name in settings.heldout_rigs:
    rig = rigs_lib.get_rig(name)
    out.append((rig.name, [rig]))
  return out


def _worker_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
  """Spawned worker processes (TensorFlow does not survive a fork)."""
  return concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context("spawn"))


def _in_worker(threads: int | None) -> None:
  """A spawned worker's TensorFlow threads (0: TensorFlow's default) and log format and level
  (the parent's: absl, INFO); None: this process, nothing to set."""
  if threads is None:
    return
  if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  logging.use_absl_handler()  # Timestamped lines, as the parent's.
  logging.set_verbosity(logging.INFO)


def _metatrain_job(recipe, pool, pairs, maml_settings, rig, line_width_px, line_value,
                   threads: int | None = None,
                   progress: bool = False) -> tuple[maml.MetaParams, float]:
  """The recipe's meta-training (`pretraining.meta_training`), here or in a worker process:
  (params, seconds). `threads` None: this process (no worker set-up)."""
  _in_worker(threads)
  start = time.time()
  params = pretraining.meta_training(recipe, pool, pairs, maml_settings, rig=rig,
                                     line_width_px=line_width_px, line_value=line_value,
                                     progress=progress)
  return params, time.time() - start


def _rig_job(rig, pretrained: Pretrained | None, settings: BenchmarkSettings, seed: int,
             progress: bool, backbone=None, threads: int | None = None,
             part: str = "all") -> tuple[dict, float]:
  """One held-out trial or part of it (`benchmark_rig`), here or in a worker: (results, s)."""
  _in_worker(threads)
  start = time.time()
  logging.info("benchmark: held-out rig %s (%d views, seed %d, rows: %s)", rig.name,
               rig.num_views, seed, part)
  results = benchmark_rig(rig, pretrained, settings, seed=seed, progress=progress,
                          backbone=backbone, part=part)
  return results, time.time() - start


def _run_protocol(jobs, settings: BenchmarkSettings, view_counts, out_dir: str, progress: bool,
                  backbone, timings: dict):
  """Stage 1 and the held-out trials: yields (name, trial, results, seconds) of every (name,
  trial, trials, rig, seed) job as it ends, after adding the pretraining timings to `timings`.

  In this process: pretraining, then each trial whole. With `settings.workers` > 1 (source
  "detector"), spawned worker processes: meta-training is submitted first, then every trial's
  rows that need no pretraining (`needs_pretraining`), which run while this process pretrains
  AffineFuse and NaiveFuse; then the other rows. Rigs with the most camera pairs go first.
  """
  workers = int(settings.workers)
  if workers <= 1 or backbone is not None:
    pretrained = pretrain(settings, view_counts, workdir=out_dir, progress=progress,
                          backbone=backbone)
    timings.update(pretrained.timings)
    for name, trial, _, rig, seed in jobs:  # `_rig_job` logs the rig it starts.
      yield (name, trial) + _rig_job(rig, pretrained, settings, seed, progress, backbone)
    return
  threads = int(settings.worker_threads)
  order = sorted(jobs, key=lambda job: -job[3].num_views * (job[3].num_views - 1))
  logging.info("benchmark: %d held-out trials in 2 parts each on %d worker processes (%s threads "
               "each)", len(jobs), workers, threads or "TensorFlow's default")
  futures = {}
  with _worker_pool(workers) as executor:

    def submit(part, pretrained=None):
      for name, trial, trials, rig, seed in order:
        future = executor.submit(_rig_job, rig, pretrained, settings, seed, False, None, threads,
                                 part)
        futures[future] = (name, trial, trials, rig)

    try:
      pretrained = pretrain(settings, view_counts, workdir=out_dir, progress=progress,
                            executor=executor, then=lambda: submit("unpretrained"))
      timings.update(pretrained.timings)
      submit("pretrained", pretrained)
      parts = {}
      for future in concurrent.futures.as_completed(list(futures)):
        name, trial, trials, rig = futures[future]
        results, seconds = future.result()
        parts.setdefault((name, trial), []).append((results, seconds))
        if len(parts[(name, trial)]) < 2:
          continue
        seconds = sum(s for _, s in parts[(name, trial)])
        logging.info("benchmark: %s (trial %d/%d, %d views) done, %.0f s in workers", rig.name,
                     trial + 1, trials, rig.num_views, seconds)
        yield name, trial, merge_results([r for r, _ in parts[(name, trial)]]), seconds
    except BaseException:  # A failed job or an interrupt: queued jobs do not start.
      executor.shutdown(wait=False, cancel_futures=True)
      raise


def run_benchmark(settings: BenchmarkSettings, out_dir: str, *, config_dict: dict | None = None,
                  progress: bool = True) -> dict:
  """The whole protocol (module docstring); writes results.json, results.md and the plots.

  Returns:
    The payload written to results.json.
  """
  start = time.time()
  os.makedirs(out_dir, exist_ok=True)
  targets = heldout_rigs(settings)
  pretrain_rig = rigs_lib.get_rig(settings.pretrain_rig)
  held_cameras = {c.name for _, trial_rigs in targets for r in trial_rigs for c in r.cameras}
  overlap = held_cameras & set(pretrain_rig.camera_names)
  if overlap:
    raise ValueError(f"held-out rigs share cameras {sorted(overlap)} with the pretraining rig "
                     f"{pretrain_rig.name!r}; the protocol needs unseen cameras")
  backbone = (prepare_image_backbone(pretrain_rig, settings, out_dir)
              if settings.source == "images" else None)
  view_counts = {r.num_views for _, trial_rigs in targets for r in trial_rigs}
  payload = {"rigs": {}, "targets": {}, "trials": {},
             "config": config_dict if config_dict is not None else dataclasses.asdict(settings),
             "timings": {}}
  json_path = os.path.join(out_dir, "results.json")
  jobs = [(name, trial, len(trial_rigs), rig, settings.seed + 1000 * (index + 1) + 10 * trial)
          for index, (name, trial_rigs) in enumerate(targets)
          for trial, rig in enumerate(trial_rigs)]
  done = {name: {} for name, _ in targets}
  for name, trial, result, seconds in _run_protocol(jobs, settings, view_counts, out_dir,
                                                    progress, backbone, payload["timings"]):
    done[name][trial] = result
    payload["timings"][f"rig_{name}_s"] = payload["timings"].get(f"rig_{name}_s", 0) + seconds
    trial_rigs = dict(targets)[name]
    if len(done[name]) < len(trial_rigs):
      continue
    payload["rigs"][name] = average_results([done[name][t] for t in range(len(trial_rigs))])
    payload["trials"][name] = [r.name for r in trial_rigs]
    payload["targets"][name] = check_targets(payload["rigs"][name], settings.shots)
    write_json_atomic(payload, json_path)  # Partial results survive an interrupted run.
    plots.plot_jdr_vs_shots(payload["rigs"][name], os.path.join(out_dir, f"figure7_{name}.png"),
                            title=f"JDR on the held-out rig {name}")
  for key in ("rigs", "targets", "trials"):  # Config order (workers end in any order).
    payload[key] = {name: payload[key][name] for name, _ in targets}
  payload["timings"]["total_s"] = time.time() - start
  write_json_atomic(payload, json_path)
  files.write_atomic(os.path.join(out_dir, "results.md"), results_markdown(payload))
  logging.info("benchmark: wrote %s (%.0f s)", json_path, payload["timings"]["total_s"])
  return payload


# ----------------------------------------------------------------------------- config edge


