"""--mode=evaluate: JDR and MPJPE of fusion methods on held-out frames of the target rig.

Synthetic frames of config.rig.target from a held-out seed (config.seed +
config.evaluate.seed_offset), limb lengths from training poses of config.seed, and the methods of
config.evaluate.methods (`build_methods`: No-Fusion, the rig's calibrated MetaFuse^0 fusion, the
rig's finetuned fusion), scored by `mf_tf.evaluation.evaluate.evaluate_fusion`; results go to
<workdir>/evaluate/<rig>/results.{json,md}.

  python -m mf_tf.main --mode=evaluate --workdir=/tmp/mf_tf
  python -m mf_tf.main --mode=evaluate --config=configs/default.py:smoke --workdir=/tmp/mf_tf_smoke
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging

from mf_tf import checkpoints
from mf_tf.data import joints as joints_lib
from mf_tf.data import world
from mf_tf.evaluation import evaluate
from mf_tf.evaluation import pictorial
from mf_tf.fusion import starts as fusion_starts
from mf_tf.modes import common


def pictorial_options_from_config(section) -> pictorial.PictorialOptions:
  """`PictorialOptions` from the config.evaluate section."""
  return pictorial.PictorialOptions(
      box_size_mm=float(section.box_size_mm), coarse_bins=int(section.coarse_bins),
      refine_bins=int(section.refine_bins), refine_iterations=int(section.refine_iterations),
      limb_tolerance=float(section.limb_tolerance), limb_sigma_mm=float(section.limb_sigma_mm),
      sampling=str(section.sampling))


def build_methods(names, config, workdir: str, rig, heatmap_size: int,
                  rig_source: str | None = None) -> dict:
  """{name: fusion layer or None} of the methods named in `names`.

  Args:
    names: Sequence of "no_fusion" (None), "calibrated" (MetaFuse^0: the rig's epipolar theta
      and line base, no training; `mf_tf.fusion.calibrated`) and "finetuned" (the rig's
      finetuned fusion, loaded with `mf_tf.checkpoints.load_finetuned_for`, which refuses a
      checkpoint whose stored rig has other cameras than `rig`).
    config: The experiment config (fusion and evaluate sections).
    workdir: Work directory; the finetuned checkpoint defaults to <workdir>/finetune/<rig.name>.
    rig: The evaluated `Rig`.
    heatmap_size: Heatmap side in pixels.
    rig_source: How the rig was given (built-in name or rig file), for messages; None: its name.

  Raises:
    RigMismatchError: The finetuned checkpoint was trained for another calibration.
  """
  fusion = common.fusion_settings(config)
  methods = {}
  for name in names:
    if name == "no_fusion":
      methods[name] = None
    elif name == "calibrated":
      layer = fusion_starts.make_fusion_layer(
          "calibrated", rig, heatmap_size, temperature=fusion.temperature,
          line_width_px=fusion.line_width_px, line_value=fusion.line_value, name="calibrated")
      methods[name] = layer.materialize()  # Matrices computed once, not per batch.
    elif name == "finetuned":
      checkpoint = config.evaluate.checkpoint or checkpoints.finetuned_rig_dir(
          os.path.join(workdir, "finetune"), rig)
      if os.path.exists(checkpoint):
        methods[name] = checkpoints.load_finetuned_for(
            checkpoint, rig, rig.name if rig_source is None else rig_source)[0]
      elif config.evaluate.checkpoint:
        raise FileNotFoundError(f"config.evaluate.checkpoint={checkpoint!r} does not exist")
      else:
        logging.warning("no finetuned fusion at %s; skipping method 'finetuned'", checkpoint)
    else:
      raise ValueError(f"unknown evaluation method {name!r}; expected no_fusion, calibrated or "
                       "finetuned")
  return methods


def run(config, workdir: str) -> dict:
  """--mode=evaluate: writes <workdir>/evaluate/<rig>/results.{json,md}."""
  rig = common.rig(config, "target")  # A built-in name or a rig file ("name": rig.name).
  out_dir = common.rig_output_dir(workdir, "evaluate", rig)  # Checked before any work.
  joint_set = joints_lib.get_joint_set(config.joint_set)
  section = config.evaluate
  seed = int(config.seed) + int(section.seed_offset)
  detector = world.detector_params_from_config(config.detector)
  frames = world.simulate_frames(rig, int(section.num_frames), seed, joint_set,
                                 int(config.heatmap_size), detector_params=detector)
  training = world.simulate_frames(rig, int(section.limb_frames), int(config.seed), joint_set,
                                   int(config.heatmap_size), return_heatmaps=False)
  limb_lengths = pictorial.mean_limb_lengths(training["joints3d"], joint_set)
  options = pictorial_options_from_config(section)
  results = {}
  names = [name.strip() for name in str(section.methods).split(",") if name.strip()]
  methods = build_methods(names, config, workdir, rig, int(config.heatmap_size),
                          rig_source=str(config.rig.target))
  for name, layer in methods.items():
    results[name] = evaluate.evaluate_fusion(layer, frames, rig, joint_set,
                                             common.fusion_settings(config).temperature,
                                             limb_lengths=limb_lengths,
                                             pictorial_options=options,
                                             batch_size=int(section.batch_size),
                                             outlier_px=float(section.outlier_px) or None)
    logging.info("%s: JDR %.1f%%, MPJPE triangulation %.1f mm, pictorial %.1f mm", name,
                 results[name]["jdr_mean"], results[name]["mpjpe_triangulation_mm"],
                 results[name]["mpjpe_pictorial_mm"])
  metadata = {"rig": rig.name, "joint_set": joint_set.name, "seed": seed,
              "num_frames": int(section.num_frames), "heatmap_size": int(config.heatmap_size),
              "temperature": common.fusion_settings(config).temperature,
              "pictorial": dataclasses.asdict(options),
              "outlier_px": float(section.outlier_px)}
  paths = evaluate.write_results(results, out_dir, metadata)
  logging.info("wrote %s and %s", paths["json"], paths["markdown"])
  return results
