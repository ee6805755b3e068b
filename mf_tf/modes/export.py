r"""--mode=export: one TF Serving SavedModel version per rig of config.export.rigs + models.config.

    python -m mf_tf.main --mode=export --workdir=/tmp/mf_tf [--config.export.top_k=256]

The backbone is config.export.backbone_weights (default: the warm-up's); each rig's fusion is its
finetuned checkpoint or MetaFuse^0 (config.export.fusion_source). The SavedModel layout and
signatures are `mf_tf.serving.export`'s; the batching_parameters beside models.config come from
config.export.batching (`mf_tf.serving.batching`).
"""

from __future__ import annotations

import os

import keras
import numpy as np

from mf_tf import checkpoints
from mf_tf import files
from mf_tf.data import world
from mf_tf.data.joints import get_joint_set
from mf_tf.fusion import starts as fusion_starts
from mf_tf.geometry import calibration
from mf_tf.geometry import rigs
from mf_tf.models.backbone import build_backbone
from mf_tf.modes import common
from mf_tf.serving import batching
from mf_tf.serving import export
from mf_tf.serving import model_config
from mf_tf.serving import server


def export_dir(config, workdir: str) -> str:
  """The export root: `config.export.dir`, else `<workdir>/export`."""
  return config.export.get("dir") or os.path.join(workdir, "export")


def load_backbone(config, workdir: str):
  """The trained backbone named by `config.export.backbone_weights` (see configs/default.py).

  A `.keras` file is loaded with `keras.saving.load_model(safe_mode=True)` (no Lambda layers, no
  arbitrary code); a `.weights.h5` file is loaded into `build_backbone(config.model.backbone)`.
  """
  path = config.export.backbone_weights or os.path.join(workdir, "warmup", "backbone.weights.h5")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"backbone file {path!r} does not exist; train one with --mode=warmup or set "
        "--config.export.backbone_weights=FILE (.keras or .weights.h5)")
  if path.endswith(".keras"):
    return keras.saving.load_model(path, compile=False, safe_mode=True)
  num_joints = len(get_joint_set(config.joint_set).names)
  return build_backbone(config.model.backbone, config.image_size, num_joints, weights=path)


def load_fusion(config, workdir: str, rig_spec: str):
  """(AffineFusion, Rig) of one rig, from `config.export.fusion_source`.

  The rig is given as --config.rig.target is: a built-in rig name or a canonical rig file, whose
  "name" field names the rig (the served model and the finetuned checkpoint folder
  `<config.export.finetuned_dir>/<rig name>`, default `<workdir>/finetune/<rig name>`). A name
  that is neither names a finetuned rig's folder, whose stored rig.json gives the rig.

  "finetuned": `mf_tf.checkpoints.load_finetuned` of the rig's folder, refused when the
  checkpoint's stored rig has other cameras than the given rig (`check_finetuned_rig`).
  "calibrated": MetaFuse^0, theta and base from the rig's calibration (no labelled frame).

  Raises:
    FileNotFoundError: "finetuned" and no checkpoint for the rig.
    ValueError: An unknown fusion source or rig; RigMismatchError (a ValueError) when the
      checkpoint was finetuned for another calibration.
  """
  source = config.export.fusion_source
  if source not in ("finetuned", "calibrated"):
    raise ValueError(f"config.export.fusion_source is {source!r}, expected 'finetuned' or "
                     "'calibrated'")
  root = config.export.finetuned_dir or os.path.join(workdir, "finetune")
  known = os.path.isfile(rig_spec) or rig_spec in rigs.list_rigs()
  target = rigs.get_rig(rig_spec) if known else None
  unknown = "" if known else (f"; {rig_spec!r} is neither a rig file nor a built-in rig, one of "
                              f"{rigs.list_rigs()}")
  if target is None and not files.NAME_PATTERN.fullmatch(rig_spec):
    raise ValueError(f"no rig {rig_spec!r}: not a finetuned rig's folder name either (a rig name "
                     f"of letters, digits, '.', '_' or '-'){unknown}")
  rig_dir = (checkpoints.finetuned_rig_dir(root, target) if target is not None
             else files.inside(root, rig_spec))
  if source == "calibrated":
    if target is None:  # A finetuned rig named by its folder: its checkpoint holds the rig.
      stored = os.path.join(rig_dir, "rig.json")
      if not os.path.isfile(stored):
        raise ValueError(f"no rig {rig_spec!r}: no finetuned rig file {stored!r}{unknown}")
      target = calibration.load_rig_file(stored)
    settings = common.fusion_settings(config)
    fusion = fusion_starts.make_fusion_layer(
        "calibrated", target, int(config.heatmap_size), temperature=settings.temperature,
        line_width_px=settings.line_width_px, line_value=settings.line_value, name="fusion")
    return fusion, target
  if not os.path.isdir(rig_dir):
    name = rig_spec if target is None else target.name
    raise FileNotFoundError(
        f"no finetuned fusion for rig {name!r} at {rig_dir!r}{unknown}; run --mode=finetune "
        f"--config.rig.target={rig_spec} first or export MetaFuse^0 with "
        "--config.export.fusion_source=calibrated")
  if target is None:
    fusion, rig, _ = checkpoints.load_finetuned(rig_dir)
    return fusion, rig
  fusion, _, _ = checkpoints.load_finetuned_for(rig_dir, target, rig_spec)
  return fusion, target


def batching_settings(config) -> batching.BatchingSettings:
  """The `batching_parameters` of `config.export.batching` (every field read from it).

  Raises:
    ValueError: A bad value, or a max_batch_size below the largest request the served models
      take (`server.MAX_BATCH_FRAMES`), which TF Serving would refuse.
  """
  section = config.export.batching
  try:
    settings = batching.BatchingSettings(
        max_batch_size=int(section.max_batch_size),
        batch_timeout_micros=int(section.batch_timeout_micros),
        max_enqueued_batches=int(section.max_enqueued_batches),
        num_batch_threads=int(section.num_batch_threads),
        allowed_batch_sizes=tuple(int(part) for part in str(section.allowed_batch_sizes)
                                  .split(",") if part.strip()))
  except ValueError as error:
    raise ValueError(f"config.export.batching: {error}") from error
  if settings.max_batch_size < server.MAX_BATCH_FRAMES:
    raise ValueError(f"config.export.batching.max_batch_size={settings.max_batch_size}, expected "
                     f">= {server.MAX_BATCH_FRAMES}: the frames one request may carry")
  return settings


def synthetic_images(config, image_size: int, count: int) -> np.ndarray:
  """`count` rendered views of the synthetic world seen by `config.rig.target`: uint8 [N,S,S,3]."""
  rig = rigs.get_rig(config.rig.target)
  frames = -(-int(count) // rig.num_views)
  images = world.simulate_frames(rig, frames, seed=config.seed, render_images=True,
                                 image_size=image_size, return_heatmaps=False,
                                 render_options=dict(config.render))["images"]
  return images.reshape((-1, image_size, image_size, 3))[:int(count)]


def run(config, workdir: str) -> list[str]:
  """`--mode=export`: one SavedModel version per rig of `config.export.rigs` + models.config.

  Each comma-separated entry of `config.export.rigs` (default `config.rig.target`) is a built-in
  rig name or a rig file (see `load_fusion`); the model is served under the rig's name. Every
  rig is loaded before anything is written.

  Raises:
    ValueError: two entries give rigs of one name (they would be two versions of one served
      model), naming both entries.
  """
  root = export_dir(config, workdir)
  names = [n.strip() for n in (config.export.rigs or config.rig.target).split(",") if n.strip()]
  loaded = [(name, *load_fusion(config, workdir, name)) for name in names]
  first = {}
  for name, _, rig in loaded:
    if rig.name in first:
      raise ValueError(
          f"config.export.rigs entries {first[rig.name]!r} and {name!r} both give the rig "
          f"{rig.name!r}: expected one entry per served model name (rename one rig's \"name\")")
    first[rig.name] = name
  batching_parameters = batching_settings(config)
  backbone = load_backbone(config, workdir)
  top_k = int(config.export.top_k) or None
  settings = common.fusion_settings(config)
  paths = []
  for name, fusion, rig in loaded:
    export.check_fusion_parameters(fusion, rig.name)  # Theta is gone once materialized.
    materialized = fusion.materialize(top_k=top_k)
    path = export.export_rig(
        backbone, materialized, rig, root, triangulate=bool(config.export.triangulate),
        line_width_px=settings.line_width_px, line_value=settings.line_value,
        version=int(config.export.version) or None,
        base_path_prefix=config.export.base_path_prefix or None, warmup=config.export.warmup,
        batching=batching_parameters,
        export_config={"fusion_source": config.export.fusion_source,
                       "joint_set": config.joint_set, "config": config.to_dict()})
    print(f"exported {rig.name!r} ({rig.num_views} views, "
          f"{'dense' if top_k is None else f'top-{top_k}'} fusion) to {path}")
    paths.append(path)
  print(f"models.config: {os.path.join(root, model_config.MODELS_CONFIG)}; "
        f"{os.path.join(root, batching.BATCHING_PARAMETERS)}")
  return paths
