"""What `mf_tf.reconstruct.pipeline` writes: per-frame records, overlay videos, motion files, the
summary (the layout is in the pipeline's module docstring)."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np

from mf_tf import files
from mf_tf.geometry.rig import Rig
from mf_tf.reconstruct import motion_files
from mf_tf.reconstruct import render
from mf_tf.reconstruct import tracking


def _rounded(array, digits: int = 2) -> list:
  """Nested lists rounded to `digits`, NaN -> None (JSON null)."""
  array = np.round(np.asarray(array, np.float64), digits)
  return np.where(np.isnan(array), None, array).tolist()


def frame_record(index: int, key: str, rig: Rig, result: dict) -> dict:
  """One line of frames.jsonl.

    {"index": int, "key": str, "detections": {camera: poses before recovery},
     "recovered": {camera: poses added by recovery}, "detector_runs": [cameras],
     "people": [{"track": int, "views": [cameras], "mirrored": [bool],
                 "joints3d_mm": [J x ([x, y, z] | null)],
                 "joints2d": {camera: [J x [x, y]]} (fused, raw px),
                 "scores": {camera: [J]},
                 "reprojection_error_px": {camera: [J x (float | null)]}}]}
  """
  names = rig.camera_names
  people = []
  for person in result["people"]:
    cams = [names[view] for view in person["views"]]
    people.append({
        "track": int(person["track"]), "views": cams, "mirrored": list(person["mirrored"]),
        "joints3d_mm": _rounded(person["joints3d"], 1),
        "joints2d": dict(zip(cams, _rounded(person["joints2d_after"]))),
        "scores": dict(zip(cams, _rounded(person["scores"], 3))),
        "reprojection_error_px": dict(zip(cams, _rounded(person["errors"]))),
    })
  return {"index": index, "key": key,
          "detections": dict(zip(names, result["detections"])),
          "recovered": dict(zip(names, result["recovered"])),
          "detector_runs": [name for name, run in zip(names, result["detector_runs"]) if run],
          "people": people}


def summary(tracks, written, positions, rig: Rig, joint_set, filter_name: str, fps: float,
            done: int, elapsed: float, seconds: float, detections, recovered, errors,
            stage_seconds: dict, per_frame: list) -> dict:
  """summary.json (see `mf_tf.reconstruct.pipeline`'s module docstring)."""
  return {
      "frames": done, "fps": fps, "cameras": list(rig.camera_names),
      "joint_set": joint_set.name, "joint_names": list(joint_set.names),
      "filter": filter_name,
      "tracks": {str(track): {
          "frames_seen": int(value["seen"].sum()),
          "first_frame": int(np.flatnonzero(value["seen"])[0]),
          "last_frame": int(np.flatnonzero(value["seen"])[-1]),
          "joint_frames_filled": int(value["filled"].any(axis=-1).sum()),
          "files": written[track]} for track, value in tracks.items()},
      "short_tracks_dropped": sorted(int(t) for t in positions if t not in tracks),
      "detections_per_view": dict(zip(rig.camera_names, detections.tolist())),
      "recovered_per_view": dict(zip(rig.camera_names, recovered.tolist())),
      "median_reprojection_error_px": float(np.median(errors)) if errors else None,
      "frames_per_second": done / elapsed if elapsed > 0 else None,
      "seconds": seconds,
      "stage_seconds": {name: round(value, 3) for name, value in stage_seconds.items()},
      "per_frame": per_frame,
  }


def write_overlays(writers, stack, output_dir, rig, images, result, joint_set, fps, scale):
  """Draws one frame's people on every view and appends it to overlays/<camera>.mp4 (a writer per
  view opened in `writers` on first use and closed by `stack`)."""
  for view, (camera, image) in enumerate(zip(rig.cameras, images)):
    drawn = []
    for person in result["people"]:
      reprojected, _ = tracking.project_person(person["joints3d"], camera)
      joints2d = (person["joints2d_after"][person["views"].index(view)]
                  if view in person["views"] else None)
      drawn.append({"label": int(person["track"]),
                    "joints2d": None if joints2d is None else joints2d * scale,
                    "reprojected": reprojected * scale})
    height, width = image.shape[:2]
    size = (max(2, int(round(width * scale)) // 2 * 2), max(2, int(round(height * scale)) // 2 * 2))
    if view not in writers:
      writers[view] = stack.enter_context(render.VideoWriter(
          os.path.join(output_dir, "overlays", f"{camera.name}.mp4"), fps, *size))
    small = image if scale == 1 else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    writers[view].write(render.draw_people(small, drawn, joint_set.limbs))


def write_raw_tracks(path, positions, tracks, joint_set, fps) -> None:
  """The written tracks before gap filling and filtering, for filter studies
  (benchmarks/filter_study.py --tracks): positions_<track> [T, J, 3] mm, fps, limbs."""
  arrays = {f"positions_{track}": positions[track] for track in tracks}
  if arrays and len(arrays) == 1:
    arrays["positions"] = next(iter(arrays.values()))
  buffer = io.BytesIO()
  np.savez(buffer, fps=np.float64(fps), limbs=np.asarray(joint_set.limbs, np.int64),
           joint_names=np.asarray(joint_set.names), **arrays)
  files.write_atomic(path, buffer.getvalue())


def write_motion_files(output_dir, tracks, joint_set, fps, rig: Rig, formats) -> dict:
  """motion/person<track>.trc | .c3d | .csv of the given formats; {track: [relative paths]}."""
  written = {}
  folder = os.path.join(output_dir, "motion")
  os.makedirs(folder, exist_ok=True)
  for track, value in tracks.items():
    stem = os.path.join(folder, f"person{track}")
    names = list(joint_set.names)
    paths = []
    if "trc" in formats:
      motion_files.write_trc(stem + ".trc", value["positions"], names, fps, up=rig.up)
      paths.append(stem + ".trc")
    if "c3d" in formats:
      motion_files.write_c3d(stem + ".c3d", value["positions"], names, fps)
      paths.append(stem + ".c3d")
    if "csv" in formats:
      motion_files.write_csv(stem + ".csv", value["positions"], names, fps)
      paths.append(stem + ".csv")
    written[track] = [os.path.relpath(path, output_dir) for path in paths]
  return written
