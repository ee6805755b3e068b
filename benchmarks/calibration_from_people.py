r"""Calibration from people against reference calibrations, with a peer on the same keypoints.

  python -m benchmarks.calibration_from_people [--frames=10,25,50,100] [--output=FILE.json]

Recordings (skipped when absent): the Pose2Sim demos `../shared/data/pose2sim/Demo_MultiPerson`
and `Demo_SinglePerson` (4 cameras; intrinsics and reference: their Qualisys `Calib.qca.txt`) and
the Panoptic demo frames `tests/fixtures/panoptic_demo` (5 cameras x 5 instants; intrinsics and
reference: `camera_parameters.json`). BlazePose runs once per recording on up to the largest
frame count (spread over the recording); every row reuses those keypoints and the identities of
`reconstruct.people_matching.match_people` (tracks, or frame by frame for the Panoptic instants).

Rows: mf_tf (`people_calibration.estimate_extrinsics`) per frame count, and with 1 versus all
people; the peer "opencv": `cv2.findEssentialMat` + `cv2.recoverPose` per camera pair on the same
confident correspondences, chained over the maximum spanning tree of correspondence counts from
the first camera, each edge's baseline scaled so that the people's median head-to-ankles height
triangulated by that pair is the same stated height. The stated height is the one the reference
rig gives the same keypoints (so that neither method is judged on the height's error), and the
errors are after the similarity that best aligns the centres (`compare_rigs(with_scale=True)`).
Columns: worst camera's rotation error (deg), worst centre error (% of the rig's size), MPJPE
between the people triangulated with the estimated and the reference rig (mm,
`rig_comparison.compare_reconstructions`), seconds of the estimate (detection excluded).

The peer "aniposelib": `CameraGroup.bundle_adjust_iter` (extrinsics only) from the cameras
mf_tf's own bundle adjustment started from (`CalibrationResult.start_rig`), on the same
confident keypoints; it runs in its own environment (`benchmarks/calibration_peers.py`; set up
with `bash benchmarks/peers/setup_peers.sh`) and its rows are skipped when that is absent.

Agreement of a rig with the keypoints: per camera pair, the median Sampson distance (pixels,
H&Z 11.4.3) of the joints both views see confidently in one person slot, under the reference rig
and under the estimate: where the reference's is far above the estimate's, the detector's
keypoints and the reference disagree, and no method that fits the keypoints can reach the
reference there.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time

import cv2
import numpy as np

from mf_tf.geometry import calibration_formats
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import epipolar
from mf_tf.geometry import people_calibration
from mf_tf.geometry import people_sfm
from mf_tf.geometry import rig_comparison
from mf_tf.geometry.rig import Rig
from mf_tf.models import blazepose
from mf_tf.reconstruct import people_matching
from mf_tf.reconstruct import people_tracks
from mf_tf.reconstruct import recording as recording_lib

from benchmarks import calibration_peers

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARED = os.path.join(os.path.dirname(_ROOT), "shared", "data", "pose2sim")
RECORDINGS = (
    ("pose2sim_multi", os.path.join(_SHARED, "Demo_MultiPerson"),
     os.path.join(_SHARED, "Demo_MultiPerson", "calibration", "Calib.qca.txt")),
    ("pose2sim_single", os.path.join(_SHARED, "Demo_SinglePerson"),
     os.path.join(_SHARED, "Demo_SinglePerson", "calibration", "Calib.qca.txt")),
    ("panoptic_demo", os.path.join(_ROOT, "tests", "fixtures", "panoptic_demo"),
     os.path.join(_ROOT, "tests", "fixtures", "panoptic_demo", "camera_parameters.json")),
)
JOINT_SET = "h36m17"
HEAD, ANKLES = 10, (3, 6)  # h36m17 head and ankles (people_calibration.JOINT_INDEX).


def _reference(path, recording):
  full = calibration_formats.read_calibration(path, image_sizes=recording.frame_sizes)
  rig = full.subset([full.camera_names.index(name) for name in recording.camera_names])
  return calibration_formats.fit_to_image_size(rig, recording.frame_sizes)


def detect(source, calibration, max_frames, model, cache_dir=""):
  """(detections [F][V], reference rig) for max_frames spread over the recording.

  With `cache_dir`, the detections are kept in `<cache_dir>/<recording>_<max_frames>.pkl` and
  read back on the next run (BlazePose is the slow part; the estimates are not).
  """
  with recording_lib.open_recording(source) as recording:
    reference = _reference(calibration, recording)
    cache = (os.path.join(cache_dir, f"{os.path.basename(os.path.normpath(source))}_"
                          f"{max_frames}.pkl") if cache_dir else "")
    if cache and os.path.exists(cache):
      with open(cache, "rb") as f:  # Written by this script below.
        return pickle.load(f), reference
    stride = max(1, int(np.ceil(recording.num_frames / max_frames)))
    frames = (images for _, _, images in recording.frames(0, recording.num_frames, stride))
    detections = people_tracks.detect([model], frames, reference.cameras, JOINT_SET)
  if cache:
    os.makedirs(cache_dir, exist_ok=True)
    with open(cache, "wb") as f:
      pickle.dump(detections, f)
  return detections, reference


def stature(points3d):
  """Median head-to-ankles-midpoint distance times STATURE_RATIO ([..., J, 3] mm)."""
  ankles = np.mean([points3d[..., a, :] for a in ANKLES], 0)
  height = np.linalg.norm(points3d[..., HEAD, :] - ankles, axis=-1)
  return float(np.nanmedian(height)) * people_calibration.STATURE_RATIO


def opencv_chain(observations, cameras, height_mm, min_score=0.5):
  """The peer: pairwise essential matrices chained over a maximum spanning tree (see docstring)."""
  points, scores = observations.points, observations.scores
  num_views = len(cameras)
  seen = (scores >= min_score) & np.isfinite(points).all(-1)  # [F, V, P, J]
  normalized = np.stack([camera_lib.undistort_normalized(
      camera_lib._pixels_to_normalized(camera.K, np.nan_to_num(points[:, v])), camera.dist)
      for v, camera in enumerate(cameras)], 1)
  shared = np.array([[(seen[:, a] & seen[:, b]).sum() for b in range(num_views)]
                     for a in range(num_views)])
  np.fill_diagonal(shared, -1)
  placed, R, t = {0}, {0: np.eye(3)}, {0: np.zeros(3)}
  while len(placed) < num_views:
    a, b = max(((a, b) for a in placed for b in range(num_views) if b not in placed),
               key=lambda pair: shared[pair])
    both = seen[:, a] & seen[:, b]
    xa, xb = normalized[:, a][both], normalized[:, b][both]
    focal = np.mean([cameras[a].K[0, 0], cameras[b].K[0, 0]])
    E, mask = cv2.findEssentialMat(xa, xb, np.eye(3), method=cv2.RANSAC, prob=0.999,
                                   threshold=people_sfm.RANSAC_THRESHOLD_PX / focal)
    _, R_ab, t_ab, mask = cv2.recoverPose(E[:3], xa, xb, np.eye(3), mask=mask)
    t_ab = t_ab.ravel()
    # Scale: the people's height triangulated by this pair (unit baseline) -> height_mm.
    P_a, P_b = np.c_[np.eye(3), np.zeros(3)], np.c_[R_ab, t_ab]
    homogeneous = cv2.triangulatePoints(P_a, P_b, normalized[:, a].reshape(-1, 2).T,
                                        normalized[:, b].reshape(-1, 2).T)
    local = (homogeneous[:3] / homogeneous[3]).T.reshape(normalized[:, a].shape[:-1] + (3,))
    local = np.where(both[..., None], local, np.nan)
    scale = height_mm / stature(local)
    R[b] = R_ab @ R[a]
    t[b] = R_ab @ t[a] + scale * t_ab
    placed.add(b)
  return Rig("opencv", [camera_lib.Camera(name=c.name, K=c.K, R=R[v], t=t[v], dist=c.dist,
                                          width=c.width, height=c.height)
                        for v, c in enumerate(cameras)])


def pair_agreement(observations, rig, min_score=0.5):
  """{"a-b": median Sampson distance (px) of the confident joints both views see} per pair."""
  points, scores = observations.points, observations.scores
  seen = (scores >= min_score) & np.isfinite(points).all(-1)
  normalized = [camera_lib._pixels_to_normalized(camera.K, camera_lib.undistort_points(
      camera, np.nan_to_num(points[:, v]))) for v, camera in enumerate(rig.cameras)]
  agreement = {}
  for a, camera_a in enumerate(rig.cameras):
    for b in range(a + 1, len(rig.cameras)):
      camera_b = rig.cameras[b]
      R, t = epipolar.relative_pose(camera_a, camera_b)
      E = epipolar.skew(t) @ R  # x_b^T E x_a = 0 (H&Z 9.6).
      both = seen[:, a] & seen[:, b]
      distance = people_tracks.sampson_distance(E, normalized[a][both], normalized[b][both])
      focal = np.mean([camera_a.K[0, 0], camera_b.K[0, 0]])
      agreement[f"{camera_a.name}-{camera_b.name}"] = float(np.median(distance) * focal)
  return agreement


def evaluate(rig, reference, observations):
  errors = rig_comparison.compare_rigs(rig, reference, with_scale=True)
  mpjpe = rig_comparison.compare_reconstructions(observations, rig, reference, with_scale=True)
  return {"rotation_deg": errors["max_rotation_deg"], "center_percent":
          errors["max_center_percent"], "mpjpe_mm": mpjpe["mpjpe_mm"],
          "per_camera_rotation_deg": errors["rotation_deg"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--frames", default="10,25,50,100")
  parser.add_argument("--output", default="")
  parser.add_argument("--cache", default="", help="folder keeping the detections between runs")
  parser.add_argument("--recordings", default=",".join(name for name, _, _ in RECORDINGS))
  args = parser.parse_args()
  counts = [int(part) for part in args.frames.split(",")]
  model = blazepose.BlazePose(num_threads=os.cpu_count() or 1)
  rows = []
  for name, source, calibration in RECORDINGS:
    if name not in args.recordings.split(","):
      continue
    if not os.path.exists(source):
      print(f"{name}: {source} not found, skipped")
      continue
    started = time.perf_counter()
    detections, reference = detect(source, calibration, max(counts), model, args.cache)
    print(f"{name}: {len(detections)} frames detected in {time.perf_counter() - started:.0f} s")
    for count in counts:
      if count > len(detections) and count != counts[0]:
        continue
      chosen = np.unique(np.linspace(0, len(detections) - 1, min(count, len(detections)))
                         .round().astype(int))
      for people in (None, 1):
        observations = people_matching.match_people(
            [detections[k] for k in chosen], reference.cameras, JOINT_SET, max_people=people)
        num_people = observations.scores.shape[2]
        if people == 1 and rows and rows[-1]["recording"] == name and rows[-1]["people"] == 1:
          continue  # One person already: the same rows.
        height = stature(rig_comparison.triangulate_observations(observations, reference))
        estimates = {}

        def mf_tf_estimate():
          estimates["mf_tf"] = people_calibration.estimate_extrinsics(
              observations, reference.cameras, person_height_mm=height)
          return estimates["mf_tf"].rig

        methods = {
            "mf_tf": mf_tf_estimate,
            "opencv": lambda: opencv_chain(observations, reference.cameras, height),
        }
        if calibration_peers.aniposelib_available():
          methods["aniposelib"] = lambda: calibration_peers.aniposelib_bundle_adjust(
              observations, estimates["mf_tf"].start_rig)
        for method, estimate in methods.items():
          started = time.perf_counter()
          try:
            rig = estimate()
            row = evaluate(rig, reference, observations)
          except (ValueError, KeyError, cv2.error) as error:
            row = {"rotation_deg": np.nan, "center_percent": np.nan, "mpjpe_mm": np.nan,
                   "error": str(error)[:120]}
          rows.append({"recording": name, "frames": len(chosen), "people": num_people,
                       "method": method, "seconds": time.perf_counter() - started, **row})
          if method == "mf_tf" and "error" not in row and count == max(counts) and not people:
            for label, which in (("reference", reference), ("mf_tf", rig)):
              agreement = pair_agreement(observations, which)
              rows[-1][f"agreement_{label}_px"] = agreement
              print(f"  keypoints' median Sampson distance under the {label} rig (px): "
                    + ", ".join(f"{pair} {value:.1f}" for pair, value in agreement.items()))
          print(f"  {method:7s} {len(chosen):4d} frames {num_people} people: rotation "
                f"{row['rotation_deg']:.2f} deg, centre {row['center_percent']:.2f}%, MPJPE "
                f"{row['mpjpe_mm']:.1f} mm {row.get('error', '')}", flush=True)
  print("\n| recording | frames | people | method | max rotation (deg) | max centre (% rig) "
        "| MPJPE vs reference rig (mm) | estimate (s) |")
  print("|---|---:|---:|---|---:|---:|---:|---:|")
  for row in rows:
    print(f"| {row['recording']} | {row['frames']} | {row['people']} | {row['method']} | "
          f"{row['rotation_deg']:.2f} | {row['center_percent']:.2f} | {row['mpjpe_mm']:.1f} | "
          f"{row['seconds']:.1f} |")
  if args.output:
    with open(args.output, "w") as f:
      json.dump(rows, f, indent=1, default=float)


if __name__ == "__main__":
  main()
