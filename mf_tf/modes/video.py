r"""--mode=video: multi-person 3D poses from synchronized real frames of a calibrated rig.

  python -m mf_tf.main --mode=video --workdir=/tmp/video \
      --config.video.frames_dir=tests/fixtures/panoptic_demo \
      --config.video.rig=tests/fixtures/panoptic_demo/camera_parameters.json

Input: `frames_dir` holds one subfolder per camera, named as the rig's cameras (e.g. 00_03), each
with one image per instant (.jpg / .jpeg / .png). An instant's key is the file name without its
extension and without a leading "<camera>_" (00_03/00_03_00004500.jpg -> "00004500"), so every
folder must hold the same keys. `rig` is a canonical rig file (`calibration.load_rig_file`), a
built-in rig name, or a Panoptic calibration JSON (its cameras picked by folder name); the views
are the folders, in sorted order.

Per instant: BlazePose in every view (crops of the undistorted image, `models.blazepose`),
cross-view association (`models.association`), then per person seen by >= 2 views: fusion of
the crop heatmaps along the exact per-frame crop geometry (`fusion.epipolar_fusion` with
`geometry.crops.crop_fundamental_matrix`; `fusion=none` skips it), sub-pixel argmax decoding
(`data.codec.HeatmapCodec.decode`), back to image pixels, and a confidence-weighted DLT over the
person's views (`geometry.triangulation`; weights: BlazePose's joint visibility, views below
`min_score` dropped).

Output (under `output_dir`, default <workdir>/video):
  frames/<key>.json, one per instant:
    {"instant": key, "index": int, "joint_set": name, "joint_names": [J], "fusion": "none" |
     "epipolar", "cameras": [V names], "images": {camera: path},
     "detections": {camera: number of people BlazePose found},
     "people": [                                  # seen by >= 2 views; [] if nobody
       {"id": int (order within this instant: more views first; not tracked over time),
        "views": [camera names],
        "joints2d_before": {camera: [J x [x, y]]}, # raw image px, decoded from BlazePose heatmaps
        "joints2d_after": {camera: [J x [x, y]]},  # the same after fusion (= before for none)
        "scores": {camera: [J]},                   # BlazePose joint visibility
        "joints3d_mm": [J x ([x, y, z] | null)],   # world mm; null: < 2 confident views
        "reprojection_error_px": {camera: [J x (float | null)]}}]}
                                                   # |project(joints3d) - joints2d_after|, raw px
  overlays/<key>_<camera>.png: the view with each person's fused 2D joints (dots) and its
    reprojected 3D skeleton (lines, the joint set's limbs), one colour per person id.
  summary.json: per instant, the number of people and the median reprojection error.
"""

from __future__ import annotations

import json
import os
import re
from typing import Sequence

import numpy as np
from absl import logging
from keras.utils import Progbar

from mf_tf.data import codec as codec_lib
from mf_tf.data import joints as joints_lib
from mf_tf.fusion import epipolar_fusion
from mf_tf.geometry import calibration
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import crops
from mf_tf.geometry import rigs
from mf_tf.geometry import triangulation
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.rig import ordered_pairs
from mf_tf.models import association
from mf_tf.models import blazepose

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
FUSIONS = ("none", "epipolar")


# ------------------------------------------------------------------------------------------------
# Inputs.


def list_instants(frames_dir: str) -> tuple[list[str], list[str], dict[str, dict[str, str]]]:
  """Camera folders and the synchronized frames of each instant.

  Args:
    frames_dir: Folder with one subfolder per camera.

  Returns:
    cameras: sorted folder names; keys: sorted instant keys; paths: {key: {camera: file}}.

  Raises:
    FileNotFoundError: frames_dir missing, fewer than 2 camera folders, a folder without
      images, or an instant missing in some folder (named).
  """
  if not os.path.isdir(frames_dir):
    raise FileNotFoundError(f"frames_dir {frames_dir!r} is not a folder; expected one subfolder "
                            "of synchronized frames per camera")
  cameras = sorted(name for name in os.listdir(frames_dir)
                   if os.path.isdir(os.path.join(frames_dir, name)))
  if len(cameras) < 2:
    raise FileNotFoundError(f"frames_dir {frames_dir!r} has camera folders {cameras}; expected "
                            "at least 2 (one per camera, named as the rig's cameras)")
  frames = {}
  for camera in cameras:
    folder = os.path.join(frames_dir, camera)
    files = {}
    for name in sorted(os.listdir(folder)):
      stem, extension = os.path.splitext(name)
      if extension.lower() in IMAGE_EXTENSIONS:
        files[re.sub(f"^{re.escape(camera)}_", "", stem)] = os.path.join(folder, name)
    if not files:
      raise FileNotFoundError(f"camera folder {folder!r} holds no image ({IMAGE_EXTENSIONS})")
    frames[camera] = files
  keys = sorted(set().union(*(files.keys() for files in frames.values())))
  for camera, files in frames.items():
    missing = [key for key in keys if key not in files]
    if missing:
      raise FileNotFoundError(
          f"camera folder {os.path.join(frames_dir, camera)!r} lacks the frames of instants "
          f"{missing[:5]}{' ...' if len(missing) > 5 else ''} that other cameras have; expected "
          "synchronized frames in every folder")
  return cameras, keys, {key: {camera: frames[camera][key] for camera in cameras}
                         for key in keys}


def load_rig(rig_spec: str, cameras: Sequence[str]) -> Rig:
  """The rig of the given camera folders, in their order.

  Args:
    rig_spec: Canonical rig file, built-in rig name, or Panoptic calibration JSON.
    cameras: Camera (folder) names.

  Raises:
    ValueError: empty spec, or a folder naming no camera of the rig (a rig with fewer cameras).
    FileNotFoundError: the file does not exist.
  """
  if not rig_spec:
    raise ValueError("config.video.rig is empty; expected a rig file, a built-in rig name or a "
                     "Panoptic calibration JSON")
  panoptic = False
  if os.path.isfile(rig_spec):
    with open(rig_spec) as stream:
      try:
        data = json.load(stream)
      except json.JSONDecodeError as error:
        raise ValueError(f"rig file {rig_spec!r} is not valid JSON: {error}") from None
    entries = data.get("cameras") if isinstance(data, dict) else None
    panoptic = bool(entries) and isinstance(entries[0], dict) and "distCoef" in entries[0]
  elif os.sep in rig_spec or rig_spec.endswith(".json"):
    raise FileNotFoundError(f"rig file {rig_spec!r} not found")
  if panoptic:
    available = [str(entry.get("name")) for entry in data["cameras"]]
  else:
    full = rigs.get_rig(rig_spec)
    available = list(full.camera_names)
  missing = [camera for camera in cameras if camera not in available]
  if missing:
    shown = f"{available[:8]}{' ...' if len(available) > 8 else ''}"
    raise ValueError(f"camera folders {missing} have no camera in rig {rig_spec!r} "
                     f"({len(available)} cameras: {shown}); expected one folder per rig camera, "
                     "named as the camera")
  if panoptic:
    return calibration.read_panoptic(rig_spec, names=list(cameras))
  return full.subset([available.index(camera) for camera in cameras], name=full.name)


def check_image(image: np.ndarray, camera: camera_lib.Camera, path: str) -> None:
  """Raises ValueError naming the file when an image's size is not its camera's."""
  height, width = image.shape[:2]
  if (width, height) != (int(camera.width), int(camera.height)):
    raise ValueError(f"frame {path!r} is {width}x{height}, expected {int(camera.width)}x"
                     f"{int(camera.height)} (camera {camera.name!r} of the rig); every frame of a "
                     "camera must have its calibrated size")


# ------------------------------------------------------------------------------------------------
# One person, one instant.


def fuse_person(heatmaps, affines, cameras, fusion: str, line_width_px: float,
                line_value: float) -> np.ndarray:
  """Fuses one person's crop heatmaps along the per-frame crop geometry.

  Args:
    heatmaps: [V, 64, 64, J] BlazePose crop heatmaps of the person's views.
    affines: [V, 3, 3] undistorted image px -> heatmap px of each crop.
    cameras: The V cameras.
    fusion: "none" or "epipolar".
    line_width_px, line_value: The calibrated line base.

  Returns:
    [V, 64, 64, J] float32.
  """
  heatmaps = np.asarray(heatmaps, np.float32)
  if fusion == "none":
    return heatmaps
  pairs = ordered_pairs(len(cameras))
  fundamental = np.stack([crops.crop_fundamental_matrix(cameras[s], cameras[t], affines[s],
                                                        affines[t]) for s, t in pairs])
  return epipolar_fusion.epipolar_fuse(heatmaps, fundamental, line_width_px=line_width_px,
                                       line_value=line_value).numpy()


def decode_to_image(heatmaps, affines, cameras) -> np.ndarray:
  """[V, H, W, J] crop heatmaps -> [V, J, 2] RAW image px (sub-pixel argmax, then A^-1, distort)."""
  coords, _ = codec_lib.HeatmapCodec(int(heatmaps.shape[1])).decode(heatmaps)
  undistorted = crops.apply_affine(np.linalg.inv(np.asarray(affines, np.float64)),
                                   coords.numpy().astype(np.float64))
  return np.stack([camera_lib.distort_points(camera, points)
                   for camera, points in zip(cameras, undistorted)])


def triangulate_person(joints2d, scores, cameras, min_score: float):
  """Confidence-weighted DLT and reprojection errors of one person.

  Args:
    joints2d: [V, J, 2] raw image px.
    scores: [V, J] confidences; views below min_score are dropped per joint.
    cameras: The V cameras.
    min_score: Confidence threshold.

  Returns:
    joints3d: [J, 3] world mm, NaN where < 2 confident views.
    errors: [V, J] |project(joints3d) - joints2d| raw px (NaN where joints3d is NaN).
  """
  undistorted = np.stack([camera_lib.undistort_points(camera, points)
                          for camera, points in zip(cameras, joints2d)])
  weights = np.where(np.asarray(scores) >= min_score, np.asarray(scores, np.float64), 0.0)
  projections = np.stack([camera.projection_matrix for camera in cameras])
  joints3d = triangulation.triangulate_dlt_np(projections, undistorted, weights)
  joints3d[(weights > 0).sum(0) < 2] = np.nan
  reprojected = np.stack([camera.project(np.nan_to_num(joints3d))[0] for camera in cameras])
  errors = np.linalg.norm(reprojected - joints2d, axis=-1)
  errors[:, np.isnan(joints3d[:, 0])] = np.nan
  return joints3d, errors


def reconstruct_instant(images, rig: Rig, model, joint_set, *, fusion: str = "epipolar",
                        line_width_px: float = epipolar_fusion.DEFAULT_LINE_WIDTH_PX,
                        line_value: float = epipolar_fusion.DEFAULT_LINE_VALUE,
                        max_cost_px: float = association.DEFAULT_MAX_COST_PX,
                        min_score: float = association.DEFAULT_MIN_SCORE,
                        estimates=None) -> dict:
  """People of one instant (the "detections" and "people" fields of the per-frame JSON).

  Args:
    images: Per view, [H, W, 3] RGB.
    rig: The views' cameras.
    model: A `blazepose.BlazePose` (unused when `estimates` is given).
    joint_set: JointSet.
    fusion: "none" or "epipolar".
    line_width_px, line_value: Calibrated line base of the fusion.
    max_cost_px, min_score: Association threshold and joint confidence threshold.
    estimates: Optional per view `model.estimate` results (to compare fusions on one run).

  Returns:
    {"detections": [V counts], "people": [per person dict with numpy arrays: views, joints2d
     before / after [Vp, J, 2], scores [Vp, J], joints3d [J, 3], errors [Vp, J]]}.
  """
  if fusion not in FUSIONS:
    raise ValueError(f"fusion {fusion!r}, expected one of {FUSIONS}")
  if estimates is None:
    estimates = [model.estimate(image, joint_set, camera=camera)
                 for image, camera in zip(images, rig.cameras)]
  people = association.associate(
      [np.stack([p["joints2d"] for p in view]) if view else np.zeros((0, joint_set.num_joints, 2))
       for view in estimates],
      [np.stack([p["scores"] for p in view]) if view else np.zeros((0, joint_set.num_joints))
       for view in estimates], rig, max_cost_px=max_cost_px, min_score=min_score)
  results = []
  for members in people:
    views = sorted(members)
    chosen = [estimates[view][members[view]] for view in views]
    cameras = [rig.cameras[view] for view in views]
    heatmaps = np.stack([person["heatmaps"] for person in chosen])
    affines = np.stack([person["crop_affine"] for person in chosen])
    scores = np.stack([person["scores"] for person in chosen])
    before = decode_to_image(heatmaps, affines, cameras)
    fused = fuse_person(heatmaps, affines, cameras, fusion, line_width_px, line_value)
    after = before if fusion == "none" else decode_to_image(fused, affines, cameras)
    joints3d, errors = triangulate_person(after, scores, cameras, min_score)
    results.append({"views": views, "joints2d_before": before, "joints2d_after": after,
                    "scores": scores, "joints3d": joints3d, "errors": errors})
  return {"detections": [len(view) for view in estimates], "people": results}


# ------------------------------------------------------------------------------------------------
# Outputs.


def _nullable(array) -> list:
  """Nested lists with NaN -> None (JSON null), rounded to 0.01."""
  array = np.asarray(array, np.float64)
  if array.ndim == 0:
    return None if np.isnan(array) else round(float(array), 2)
  return [_nullable(item) for item in array]


def frame_record(key: str, index: int, rig: Rig, joint_set, fusion: str, paths, result) -> dict:
  """The per-frame JSON object (schema in the module docstring)."""
  names = rig.camera_names
  people = []
  for person_id, person in enumerate(result["people"]):
    cams = [names[view] for view in person["views"]]
    joints3d = [None if np.isnan(point[0]) else [round(float(v), 1) for v in point]
                for point in person["joints3d"]]
    people.append({
        "id": person_id, "views": cams,
        "joints2d_before": dict(zip(cams, _nullable(person["joints2d_before"]))),
        "joints2d_after": dict(zip(cams, _nullable(person["joints2d_after"]))),
        "scores": dict(zip(cams, _nullable(person["scores"]))),
        "joints3d_mm": joints3d,
        "reprojection_error_px": dict(zip(cams, _nullable(person["errors"]))),
    })
  return {"instant": key, "index": index, "joint_set": joint_set.name,
          "joint_names": list(joint_set.names), "fusion": fusion, "cameras": list(names),
          "images": {camera: paths[camera] for camera in names},
          "detections": dict(zip(names, result["detections"])), "people": people}


def write_json(path: str, record) -> None:
  """Writes JSON atomically (temporary file, then rename)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = path + ".tmp"
  with open(temporary, "w") as stream:
    json.dump(record, stream, indent=1)
  os.replace(temporary, path)


def write_overlay(path: str, image, camera: camera_lib.Camera, view: int, people,
                  joint_set) -> None:
  """One view with each person's fused joints (dots) and reprojected 3D skeleton (lines)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  height, width = image.shape[:2]
  figure = plt.figure(figsize=(width / 200, height / 200), dpi=100)
  axes = figure.add_axes([0, 0, 1, 1])
  axes.imshow(image)
  axes.set_xlim(0, width)
  axes.set_ylim(height, 0)
  axes.axis("off")
  colors = plt.get_cmap("tab10")
  for person_id, person in enumerate(people):
    color = colors(person_id % 10)
    if view in person["views"]:
      points = person["joints2d_after"][person["views"].index(view)]
      axes.scatter(points[:, 0], points[:, 1], s=6, color=color, edgecolors="white",
                   linewidths=0.3, zorder=3)
    reprojected, depth = camera.project(np.nan_to_num(person["joints3d"]))
    valid = ~np.isnan(person["joints3d"][:, 0]) & (depth > 0)
    for parent, child in joint_set.limbs:
      if valid[parent] and valid[child]:
        axes.plot(reprojected[[parent, child], 0], reprojected[[parent, child], 1],
                  color=color, linewidth=1.2, zorder=2)
    inside = valid & np.all((reprojected >= 0) & (reprojected < [width, height]), axis=-1)
    if inside.any():
      top = reprojected[inside][np.argmin(reprojected[inside, 1])]
      axes.text(top[0], top[1] - 15, f"{person_id}", color=color, fontsize=7, ha="center")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  figure.savefig(path, dpi=100)
  plt.close(figure)


# ------------------------------------------------------------------------------------------------
# The mode.


def run(config, workdir: str) -> None:
  """--mode=video: reads config.video (see configs/default.py) and writes the outputs above."""
  settings = config.video
  if settings.fusion not in FUSIONS:
    raise ValueError(f"config.video.fusion={settings.fusion!r}, expected one of {FUSIONS}")
  if int(settings.max_frames) < 0:
    raise ValueError(f"config.video.max_frames={settings.max_frames}, expected >= 0 (0: all)")
  joint_set = joints_lib.get_joint_set(settings.joint_set)
  cameras, keys, paths = list_instants(os.path.expanduser(settings.frames_dir))
  rig = load_rig(os.path.expanduser(settings.rig), cameras)
  if int(settings.max_frames):
    keys = keys[:int(settings.max_frames)]
  output_dir = settings.output_dir or os.path.join(workdir, "video")
  model = None  # Loaded after the first instant's frames passed their checks.
  logging.info("video: %d instants x %d cameras %s, fusion=%s -> %s", len(keys), len(cameras),
               cameras, settings.fusion, output_dir)
  progress = Progbar(len(keys), unit_name="instant")
  summary = []
  for index, key in enumerate(keys):
    images = []
    for camera in rig.cameras:
      image = blazepose.read_image(paths[key][camera.name])
      check_image(image, camera, paths[key][camera.name])
      images.append(image)
    model = model or blazepose.BlazePose()
    result = reconstruct_instant(
        images, rig, model, joint_set, fusion=settings.fusion,
        line_width_px=float(config.fusion.line_width_px),
        line_value=float(config.fusion.line_value),
        max_cost_px=float(settings.max_cost_px), min_score=float(settings.min_score))
    write_json(os.path.join(output_dir, "frames", f"{key}.json"),
               frame_record(key, index, rig, joint_set, settings.fusion, paths[key], result))
    if settings.overlays:
      for view, (camera, image) in enumerate(zip(rig.cameras, images)):
        write_overlay(os.path.join(output_dir, "overlays", f"{key}_{camera.name}.png"), image,
                      camera, view, result["people"], joint_set)
    errors = [person["errors"] for person in result["people"]]
    median = float(np.nanmedian(np.concatenate([e.ravel() for e in errors]))) if errors else None
    summary.append({"instant": key, "people": len(result["people"]),
                    "median_reprojection_error_px": median})
    progress.update(index + 1, values=[("people", len(result["people"]))])
  write_json(os.path.join(output_dir, "summary.json"), summary)
