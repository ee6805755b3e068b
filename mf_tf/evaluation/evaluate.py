"""Evaluation of a fusion method on a rig: 2D JDR and 3D MPJPE (paper section 5).

Per method, on frames with ground truth:

  heatmaps [N, V, H, W, J] -> fusion layer (None: No-Fusion) -> fused [N, V, H, W, J]
    -> temperature softmax per channel -> decode (argmax + sub-pixel) -> 2D joints, scores
    -> JDR (all, per joint, visible, occluded)
    -> 3D by confidence-weighted DLT of the 2D joints        -> MPJPE (triangulation)
    -> 3D by the recursive pictorial structure model on the fused heatmaps, grid centred on
       the triangulated root, limb lengths from training poses -> MPJPE (pictorial)

The pictorial model reads the fused heatmaps before the softmax (clipped at 0, peak 1 per
channel): the temperature softmax is monotone per channel, so it changes no 2D estimate, but it
lifts the whole background to exp(-1 / T) of the peak, which view-averaged evidence then counts.

A method's result is a flat dict (the benchmark schema), JDR in percent, MPJPE in millimetres:
  {"jdr_mean", "jdr_per_joint": {joint: float}, "jdr_visible", "jdr_occluded",
   "mpjpe_triangulation_mm", "mpjpe_pictorial_mm", "num_frames"}

--mode=evaluate (`mf_tf.modes.evaluate`) runs it on simulated frames of config.rig.target.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import tensorflow as tf

from mf_tf import files
from mf_tf.data import joints as joints_lib
from mf_tf.data import skeleton as skeleton_lib
from mf_tf.data.codec import HeatmapCodec
from mf_tf.evaluation import metrics
from mf_tf.evaluation import pictorial
from mf_tf.evaluation import triangulate
from mf_tf.fusion import readout

RESULT_KEYS = ("jdr_mean", "jdr_per_joint", "jdr_visible", "jdr_occluded",
               "mpjpe_triangulation_mm", "mpjpe_pictorial_mm")


def default_limb_lengths(joint_set) -> np.ndarray:
  """[J] limb lengths (mm) of the skeleton calibrated on real poses, for h36m17 only.

  Used when no training poses are given: these constants were measured on real Human3.6M and
  Panoptic poses (`mf_tf.data.skeleton.BONE_LENGTHS_MM`), never on evaluation frames.
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  if joint_set.name != skeleton_lib.JOINT_SET.name:
    raise ValueError(f"no default limb lengths for joint set {joint_set.name!r}; pass "
                     "limb_lengths=pictorial.mean_limb_lengths(training_poses, joint_set)")
  return np.asarray(skeleton_lib.BONE_LENGTHS_MM, np.float64)


def fuse_heatmaps(fusion_layer, heatmaps, batch_size: int = 16) -> np.ndarray:
  """Fused heatmaps before the softmax, in batches.

  Args:
    fusion_layer: A fusion layer (`mf_tf.fusion.layers`, called as layer(h, softmax=False)) or
      any callable [b, V, H, W, J] -> same; None for No-Fusion (heatmaps unchanged).
    heatmaps: [N, V, H, W, J].
    batch_size: Frames per call.

  Returns:
    [N, V, H, W, J] float32.
  """
  heatmaps = np.asarray(heatmaps, np.float32)
  if heatmaps.ndim != 5:
    raise ValueError(f"heatmaps have shape {heatmaps.shape}, expected [N, V, H, W, J]")
  if fusion_layer is None:
    return heatmaps
  outputs = [np.asarray(fusion_layer(tf.constant(heatmaps[start:start + batch_size])))
             for start in range(0, len(heatmaps), batch_size)]
  fused = np.concatenate(outputs, axis=0) if outputs else heatmaps.copy()
  if fused.shape != heatmaps.shape or not np.all(np.isfinite(fused)):
    raise ValueError(f"fusion output has shape {fused.shape} or non-finite values, expected "
                     f"finite {heatmaps.shape}")
  return fused


def decode_joints(fused, temperature: float):
  """2D joints from fused heatmaps: `mf_tf.fusion.readout.decode_fused` (as the served model).

  Args:
    fused: [N, V, H, W, J] fused heatmaps (pre-softmax).
    temperature: Softmax temperature T (paper: 0.2).

  Returns:
    coords: [N, V, J, 2] float64 heatmap pixels; scores: [N, V, J] float64 softmax peak
    probabilities (the triangulation confidences).
  """
  fused = tf.convert_to_tensor(fused, tf.float32)
  coords, scores = readout.decode_fused(fused, temperature, HeatmapCodec(int(fused.shape[2])))
  return coords.numpy().astype(np.float64), scores.numpy().astype(np.float64)


def _inside(joints2d, height, width):
  x, y = joints2d[..., 0], joints2d[..., 1]
  return (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)


def evaluate_fusion(fusion_layer, frames: dict, rig, joint_set, temperature: float = 0.2, *,
                    limb_lengths=None, head_size=None,
                    pictorial_options: pictorial.PictorialOptions = pictorial.PictorialOptions(),
                    batch_size: int = 16, outlier_px: float | None = None) -> dict:
  """JDR and MPJPE of one fusion method on frames with ground truth.

  Args:
    fusion_layer: Fusion layer or callable (pre-softmax output), or None for No-Fusion.
    frames: dict with "heatmaps" [N, V, H, W, J], "joints2d" [N, V, J, 2] heatmap px,
      "joints3d" [N, J, 3] mm, "visibility" [N, V, J], and "head_size" [N, V] heatmap px unless
      `head_size` is given (see `mf_tf.evaluation.metrics` for head size per data source).
    rig: `Rig` of the V views.
    joint_set: JointSet or name.
    temperature: Softmax temperature of the read-out.
    limb_lengths: [J] mean limb lengths of TRAINING poses (`pictorial.mean_limb_lengths`);
      None: `default_limb_lengths(joint_set)`.
    head_size: Optional scalar or [N, V] head size in heatmap px overriding frames["head_size"].
    pictorial_options: `pictorial.PictorialOptions`; None skips the RPSM (its MPJPE is nan).
    batch_size: Frames per fusion call.
    outlier_px: Robust triangulation (`triangulate_heatmap_joints`): views reprojecting farther
      than this many heatmap px are dropped; None: plain weighted DLT. "mpjpe_triangulation_mm"
      uses it; "mpjpe_dlt_mm" is always the plain DLT.

  Returns:
    The result dict (module docstring). A joint counts in the 2D metrics in the views where its
    true projection lies inside the heatmap and in front of the camera; it is "visible" when
    frames["visibility"] > 0 there and "occluded" otherwise.
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  missing = [k for k in ("heatmaps", "joints2d", "joints3d", "visibility") if k not in frames]
  if head_size is None and "head_size" not in frames:
    missing.append("head_size")
  if missing:
    raise ValueError(f"frames lack {missing}; expected keys heatmaps, joints2d, joints3d, "
                     "visibility, head_size")
  heatmaps = np.asarray(frames["heatmaps"], np.float32)
  num_frames, num_views, height, width, num_joints = heatmaps.shape
  if num_views != rig.num_views or num_joints != joint_set.num_joints:
    raise ValueError(f"heatmaps have shape {heatmaps.shape}, expected {rig.num_views} views of "
                     f"rig {rig.name!r} and {joint_set.num_joints} joints of {joint_set.name!r}")
  joints2d = np.asarray(frames["joints2d"], np.float64)
  joints3d = np.asarray(frames["joints3d"], np.float64)
  visibility = np.asarray(frames["visibility"])
  head = np.asarray(frames["head_size"] if head_size is None else head_size, np.float64)
  if head.ndim == 2:
    head = np.where(head > 0, head, np.nan)  # 0 marks a head behind the camera.
  limb_lengths = default_limb_lengths(joint_set) if limb_lengths is None else limb_lengths

  fused = fuse_heatmaps(fusion_layer, heatmaps, batch_size)
  coords, scores = decode_joints(fused, temperature)
  valid = _inside(joints2d, height, width)
  if head.ndim == 2:
    valid &= np.isfinite(head)[..., None]
  jdr = metrics.jdr(coords, joints2d, head, valid)
  split = metrics.jdr_split(coords, joints2d, head, visibility, valid)

  plain = triangulate.triangulate_heatmap_joints(coords, scores, rig, (height, width))
  triangulated = plain if outlier_px is None else triangulate.triangulate_heatmap_joints(
      coords, scores, rig, (height, width), outlier_px)
  if pictorial_options is None:  # 2D and DLT only (studies; RPSM is the slow part).
    estimated = np.full_like(triangulated, np.nan)
  elif num_frames:
    center = triangulated[:, joint_set.root]
    estimated = pictorial.rpsm(fused, rig, joint_set, limb_lengths, center, pictorial_options)
  else:
    estimated = triangulated
  return {
      "jdr_mean": jdr["mean"],
      "jdr_per_joint": {name: float(value) for name, value in zip(joint_set.names,
                                                                  jdr["per_joint"])},
      "jdr_visible": split["visible"],
      "jdr_occluded": split["occluded"],
      "mpjpe_triangulation_mm": metrics.mpjpe(triangulated, joints3d),
      "mpjpe_dlt_mm": metrics.mpjpe(plain, joints3d),
      "mpjpe_pictorial_mm": metrics.mpjpe(estimated, joints3d),
      "num_frames": int(num_frames),
  }


def _json_safe(value):
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return None if not math.isfinite(float(value)) else float(value)
  return value


def _cell(value, digits=1):
  return "n/a" if value is None or not math.isfinite(float(value)) else f"{value:.{digits}f}"


def results_markdown(results: dict, title: str = "Evaluation") -> str:
  """A readable markdown report: a summary table and a per-joint JDR table.

  Args:
    results: {method name: result dict (module docstring)}.
    title: Heading.
  """
  lines = [f"# {title}", "",
           "JDR in percent (2D error below half the head size), MPJPE in mm (no alignment).", "",
           "| method | frames | JDR mean | JDR visible | JDR occluded | MPJPE triangulation | "
           "MPJPE pictorial |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for name, result in results.items():
    lines.append(
        f"| {name} | {result.get('num_frames', '')} | {_cell(result['jdr_mean'])} | "
        f"{_cell(result['jdr_visible'])} | {_cell(result['jdr_occluded'])} | "
        f"{_cell(result['mpjpe_triangulation_mm'])} | {_cell(result['mpjpe_pictorial_mm'])} |")
  joints = list(next(iter(results.values()))["jdr_per_joint"]) if results else []
  if joints:
    lines += ["", "## JDR per joint", "", "| joint | " + " | ".join(results) + " |",
              "| --- |" + " ---: |" * len(results)]
    for joint in joints:
      lines.append(f"| {joint} | " + " | ".join(
          _cell(result["jdr_per_joint"].get(joint)) for result in results.values()) + " |")
  return "\n".join(lines) + "\n"


def write_results(results: dict, out_dir: str, metadata: dict | None = None) -> dict:
  """Writes results.json (machine-readable) and results.md (tables) into `out_dir`, each
  through a temporary file and a rename (`mf_tf.files.write_atomic`).

  Args:
    results: {method name: result dict}.
    out_dir: Created if missing.
    metadata: Optional JSON-serializable description (rig, seed, frames, options).

  Returns:
    {"json": path, "markdown": path}.
  """
  os.makedirs(out_dir, exist_ok=True)
  payload = {"metadata": _json_safe(metadata or {}), "methods": _json_safe(results)}
  title = "Evaluation" + (f" on rig {metadata['rig']}" if metadata and "rig" in metadata else "")
  # Both texts are made before either file is replaced; each is written atomically (a failed
  # write leaves the previous results).
  json_text = json.dumps(payload, indent=2, sort_keys=False) + "\n"
  markdown = results_markdown(results, title)
  json_path = files.write_atomic(os.path.join(out_dir, "results.json"), json_text)
  markdown_path = files.write_atomic(os.path.join(out_dir, "results.md"), markdown)
  return {"json": json_path, "markdown": markdown_path}


