r"""Real Panoptic frames: 3D reconstruction with and without epipolar fusion of the crop heatmaps.

  python -m benchmarks.video_real_frames [--frames_dir=tests/fixtures/panoptic_demo] \
      [--line_value=0.1] [--threshold_px=20]

BlazePose runs once per view and instant; the same detections then go through
`mf_tf.reconstruct.people.reconstruct_people` with fusion=none and fusion=epipolar (same
association, so people correspond). Then the recovery of missed views
(`mf_tf.reconstruct.tracking`, mechanism 3): detections per view before and after, and people
reconstructed per instant (`reconstructor.Reconstructor`, a fresh one per instant since the instants
are not consecutive). Printed: people reconstructed per instant; the median and 90th percentile
of the reprojection error (raw image px) of the triangulated joints against each view's 2D
estimate; and, for the joints whose single-view estimate was inconsistent with the other views
(reprojection error > --threshold_px without fusion), how many are below the threshold after
fusion; then the triangulated joints and the lengths of the bones that
`mf_tf.reconstruct.people.reference_bone_lengths` checks, as ratios to the reference skeleton
(`mf_tf.data.skeleton.BONE_LENGTHS_MM`). No ground truth is involved: this measures multi-view
consistency and plausibility, not accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from configs import default  # noqa: E402
from mf_tf.data import joints as joints_lib  # noqa: E402
from mf_tf.models import blazepose  # noqa: E402
from mf_tf.geometry import calibration_formats  # noqa: E402
from mf_tf.modes import video  # noqa: E402
from mf_tf.reconstruct import people as people_lib  # noqa: E402
from mf_tf.reconstruct import reconstructor  # noqa: E402
from mf_tf.reconstruct import recording as recording_lib  # noqa: E402

_DEFAULT_FRAMES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "tests", "fixtures", "panoptic_demo")


def main() -> None:
  config = default.get_config()
  settings = video.session_settings(config)  # --mode=video's defaults.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--frames_dir", default=os.path.normpath(_DEFAULT_FRAMES))
  parser.add_argument("--rig", default=None, help="Default: <frames_dir>/camera_parameters.json")
  parser.add_argument("--joint_set", default="h36m17")
  parser.add_argument("--line_value", type=float, default=config.fusion.line_value)
  parser.add_argument("--line_width_px", type=float, default=config.fusion.line_width_px)
  parser.add_argument("--threshold_px", type=float, default=20.0)
  args = parser.parse_args()
  recording = recording_lib.open_recording(args.frames_dir)
  cameras = recording.camera_names
  rig = calibration_formats.read_calibration(
      args.rig or os.path.join(args.frames_dir, "camera_parameters.json"), names=cameras)
  joint_set = joints_lib.get_joint_set(args.joint_set)
  model = blazepose.BlazePose()
  errors = {"none": [], "epipolar": []}
  inconsistent = corrected = worsened = 0
  reference = people_lib.reference_bone_lengths(joint_set)
  triangulated, ratios = 0, []
  print(f"{recording.num_frames} instants x {len(cameras)} views {cameras}, joint set {joint_set.name}, "
        f"line value {args.line_value}")
  print("instant   detections per view   people (views each; * one view's sides swapped)")
  recovery = {"before": np.zeros(len(cameras), int), "after": np.zeros(len(cameras), int),
              "people": [], "people_recovered": []}
  for _, key, images in recording.frames():
    estimates = [model.estimate(image, joint_set, camera=camera)
                 for image, camera in zip(images, rig.cameras)]
    results = {fusion: people_lib.reconstruct_people(
        estimates, rig, joint_set, dataclasses.replace(
            settings.instant, fusion=fusion, line_width_px=args.line_width_px,
            line_value=args.line_value))
        for fusion in errors}
    for fusion, result in results.items():
      for person in result:
        errors[fusion].append(person["errors"].ravel())
    for plain, fused in zip(results["none"], results["epipolar"]):
      bad = plain["errors"] > args.threshold_px  # NaN compares False.
      inconsistent += int(bad.sum())
      corrected += int((bad & (fused["errors"] <= args.threshold_px)).sum())
      worsened += int(((plain["errors"] <= args.threshold_px)
                       & (fused["errors"] > args.threshold_px)).sum())
    people = results["epipolar"]
    for person in people:
      points = person["joints3d"]
      triangulated += int(np.isfinite(points[:, 0]).sum())
      for joint, parent in enumerate(joint_set.parents):
        if parent >= 0 and np.isfinite(reference[joint]):
          ratios.append(np.linalg.norm(points[joint] - points[parent]) / reference[joint])
    step = reconstructor.Reconstructor(model, rig, joint_set, settings.instant,
                                       settings.tracking).step(images)
    recovery["before"] += step["detections"]
    recovery["after"] += np.add(step["detections"], step["recovered"])
    recovery["people"].append(len(people))
    recovery["people_recovered"].append(len(step["people"]))
    # Over the confident joints (those triangulated from) of the people seen by >= 3 views.
    step_errors = np.concatenate(
        [np.where(person["scores"] >= 0.5, person["errors"], np.nan).ravel()
         for person in step["people"] if len(person["views"]) >= 3] + [np.zeros(0)])
    recovery.setdefault("median_px", []).append(
        round(float(np.nanmedian(step_errors)), 2) if np.isfinite(step_errors).any() else None)
    used = step_errors[step_errors <= settings.instant.max_error_px]  # The inliers.
    recovery.setdefault("median_inliers_px", []).append(
        round(float(np.median(used)), 2) if used.size else None)
    print(f"{key}  {[len(view) for view in estimates]}   {len(people)} ("
          + ", ".join(f"{len(p['views'])}{'*' if any(p['mirrored']) else ''}" for p in people)
          + f");  with recovery: detections {np.add(step['detections'], step['recovered']).tolist()}"
          f", {len(step['people'])} people ("
          + ", ".join(str(len(p["views"])) for p in step["people"]) + ")")
  print(f"detections per view over all instants {cameras}: before recovery "
        f"{recovery['before'].tolist()}, after {recovery['after'].tolist()}; people per instant "
        f"{recovery['people']} -> {recovery['people_recovered']}; median reprojection error per "
        f"instant with recovery, confident joints of the people seen by >= 3 views (px): "
        f"{recovery['median_px']}; the same over the inliers (views that stayed in the joint's "
        f"triangulation, error <= {settings.instant.max_error_px:g} px): "
        f"{recovery['median_inliers_px']}")
  print("reprojection error of the triangulated joints vs each view's 2D estimate (raw px):")
  for fusion, values in errors.items():
    values = np.concatenate(values) if values else np.zeros(0)
    values = values[np.isfinite(values)]
    print(f"  fusion={fusion:9s} joints x views {values.size:4d}  median {np.median(values):6.2f}"
          f"  90th percentile {np.percentile(values, 90):6.2f}  > {args.threshold_px:g} px: "
          f"{np.mean(values > args.threshold_px) * 100:.1f} %")
  print(f"inconsistent single-view joints (error > {args.threshold_px:g} px without fusion): "
        f"{inconsistent}; below the threshold after fusion: {corrected}; consistent joints made "
        f"inconsistent by fusion: {worsened}")
  ratios = np.asarray(ratios)
  ratios = ratios[np.isfinite(ratios)]
  if ratios.size:
    plausible = np.mean((ratios >= 0.7) & (ratios <= 1.3)) * 100
    print(f"fusion=epipolar: {triangulated} joints triangulated; {ratios.size} checked bones, "
          f"length / reference: median {np.median(ratios):.2f}, range {ratios.min():.2f}-"
          f"{ratios.max():.2f}, within 0.7-1.3: {plausible:.0f} %")


if __name__ == "__main__":
  main()
