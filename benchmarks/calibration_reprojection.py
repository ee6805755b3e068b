r"""Qualisys calibration on real videos: reprojection of the people, and the 1080 px wide videos.

  python -m benchmarks.calibration_reprojection [--data_dir=/path/to/pose2sim] [--frames=8]

Data: Pose2Sim's Demo_SinglePerson and Demo_MultiPerson (`--data_dir` holds both; each has
calibration/Calib.qca.txt, the same file, and videos/cam01..cam04.mp4, 1920 px high). The
calibration is read by `mf_tf.geometry.calibration_formats.read_qualisys`. `--frames` frames spread
over each video are decoded with OpenCV (BGR -> RGB); BlazePose (`mf_tf.models.blazepose`) gives
each view's people in h36m17; `mf_tf.models.association.associate` groups them across views and
`triangulate` (confidence-weighted DLT of the undistorted joints, Hartley & Zisserman 12.2, every
confident view kept) triangulates each person's joints of visibility >= 0.5.

Printed:
  1. Per demo, the median (and 90th percentile) reprojection error in px of the triangulated joints
     against the detections that took part, over all views and people; and the median height of
     the ankles (world z, mm: the floor).
  2. Demo_SinglePerson: cam01 and cam02 are 1080 px wide, their calibration 1088. The person is
     triangulated from cam03 + cam04 only (1088 px videos, untouched) and projected into cam01
     and cam02 with the file's calibration; x_detected = a x_projected + b and the same for y are
     fitted by least squares, and the RMS residual of each hypothesis is printed: cropped on the
     left (b = -8), on the right (b = 0), 4 px each side (b = -4), resized (a = 1080 / 1088).
     The 2-view triangulation's own error is large here: the same fit on Demo_MultiPerson (1088 px
     videos, nothing cropped) is printed as the control.
  3. The decisive measurement of the 8 px: the two demos were filmed by the same cameras in the
     same room, so the static background (the median of `--frames` frames, people removed) of
     each Demo_SinglePerson video is registered onto the same camera's Demo_MultiPerson video
     (SIFT matches, RANSAC, then x_single = a x_multi + b and the same for y by least squares on
     the inliers). A crop on the left gives b_x = -8, a centred crop -4, a crop on the right 0,
     each with a_x = a_y; a resize gives a_x = 1080 / 1088 = 0.9926 with a_y = 1. cam03 and
     cam04 (1088 px in both demos) show how far the cameras moved between the recordings.
  4. Demo_SinglePerson's 4-view reprojection error with the file's calibration and after
     `fit_to_image_size` to the video sizes.
BlazePose runs on the raw frames (camera=None) for Demo_SinglePerson, whose calibration does not
match two of its videos (distortion is under 0.5 px at the image corners: k1 ~ -7e-4), and with
each view's camera for Demo_MultiPerson.
"""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mf_tf.data import joints as joints_lib  # noqa: E402
from mf_tf.geometry import calibration_formats  # noqa: E402
from mf_tf.models import association, blazepose  # noqa: E402
from mf_tf.reconstruct import people  # noqa: E402

_DEFAULT_DATA = "/work/shared/data/pose2sim"
_MIN_SCORE = 0.5  # BlazePose visibility below which a joint is a guess.


def read_frames(path: str, indices) -> list[np.ndarray]:
  """[H, W, 3] uint8 RGB frames `indices` of the video at `path`."""
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise FileNotFoundError(f"cannot open video {path}")
  frames = []
  for index in indices:
    capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
    ok, frame = capture.read()
    if not ok:
      raise ValueError(f"{path}: cannot decode frame {index}")
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  capture.release()
  return frames


def detect(model, demo_dir: str, names, frames: int, cameras=None):
  """Per frame, per view, BlazePose's people: (joints2d [N, J, 2], scores [N, J]); image sizes."""
  paths = [os.path.join(demo_dir, "videos", f"{name}.mp4") for name in names]
  counts = [int(cv2.VideoCapture(path).get(cv2.CAP_PROP_FRAME_COUNT)) for path in paths]
  indices = np.linspace(0, min(counts) - 1, frames).round().astype(int)
  images = [read_frames(path, indices) for path in paths]  # [V][F]
  sizes = {name: (views[0].shape[1], views[0].shape[0]) for name, views in zip(names, images)}
  detections = []
  for frame in range(len(indices)):
    per_view = []
    for view in range(len(names)):
      camera = None if cameras is None else cameras[view]
      found = model.estimate(images[view][frame], "h36m17", camera=camera)
      per_view.append((np.array([person["joints2d"] for person in found]).reshape(-1, 17, 2),
                       np.array([person["scores"] for person in found]).reshape(-1, 17)))
    detections.append(per_view)
  return detections, sizes


def triangulate(joints2d, scores, cameras):
  """Confidence-weighted DLT of one person's joints, no view left out
  (`people.triangulate_person` without its outlier rejection).

  Returns:
    joints3d: [J, 3] world mm, NaN where fewer than 2 confident views (score >= _MIN_SCORE).
    errors: [V, J] |project(joints3d) - joints2d| px, NaN where joints3d is NaN.
  """
  return people.triangulate_person(joints2d, scores, cameras, _MIN_SCORE)


def triangulate_all(detections, rig, joint_set):
  """Associates and triangulates every person of every frame.

  Returns:
    errors: [M] reprojection errors, px, of the detections that took part.
    joints3d: [P, J, 3] mm, NaN where fewer than 2 confident views.
  """
  mirror = np.asarray(joint_set.mirror)
  errors, people3d = [], []
  for per_view in detections:
    joints2d = [points for points, _ in per_view]
    scores = [values for _, values in per_view]
    for person in association.associate(joints2d, scores, rig, mirror=mirror):
      points = np.zeros((rig.num_views, joint_set.num_joints, 2))
      weights = np.zeros((rig.num_views, joint_set.num_joints))
      for view, index in person.members.items():
        order = mirror if person.mirrored[view] else np.arange(len(mirror))
        points[view] = joints2d[view][index][order]
        weights[view] = scores[view][index][order]
      joints3d, person_errors = triangulate(points, weights, rig.cameras)
      used = (weights >= _MIN_SCORE) & np.isfinite(person_errors)
      errors.append(person_errors[used])
      people3d.append(joints3d)
  return np.concatenate(errors), np.array(people3d)


def report(label: str, errors, people3d, joint_set) -> None:
  ankles = [joint_set.names.index(name) for name in ("lankle", "rankle")]
  heights = people3d[:, ankles, 2].ravel()
  print(f"{label}: {len(people3d)} people x frames, {errors.size} joint detections, "
        f"reprojection error median {np.median(errors):.2f} px, 90th percentile {np.percentile(errors, 90):.2f} px; "
        f"ankle height median {np.nanmedian(heights):.0f} mm")


def robust_line(x, y, iterations: int = 3, cut: float = 3.0):
  """Least-squares y = a x + b, refitted without residuals beyond `cut` x 1.4826 MAD.

  Returns:
    a, b, their standard errors, the residual RMS (px) and the number of points kept.
  """
  keep = np.ones(len(x), bool)
  for _ in range(iterations + 1):
    design = np.stack([x[keep], np.ones(keep.sum())], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y[keep], rcond=None)
    residual = y - (a * x + b)
    spread = 1.4826 * np.median(np.abs(residual[keep] - np.median(residual[keep])))
    keep = np.abs(residual) <= cut * max(spread, 1e-9)
  design = np.stack([x[keep], np.ones(keep.sum())], axis=1)
  (a, b), *_ = np.linalg.lstsq(design, y[keep], rcond=None)
  residual = y[keep] - design @ [a, b]
  a_error, b_error = np.sqrt(np.diag(np.linalg.inv(design.T @ design) * residual.var(ddof=2)))
  return a, b, a_error, b_error, float(np.sqrt(np.mean(residual ** 2))), int(keep.sum())


def cross_view_fit(detections, rig, sizes, joint_set, label: str) -> None:
  """Triangulates each person from cam03 + cam04 and fits cam01, cam02's detections to them.

  People are matched across the 4 views by `association.associate`; a joint counts when it is
  confident in cam03, cam04 and the target view.
  """
  names = rig.camera_names
  sources = [names.index("cam03"), names.index("cam04")]
  targets = [names.index("cam01"), names.index("cam02")]
  mirror = np.asarray(joint_set.mirror)
  pairs = {target: ([], []) for target in targets}
  for per_view in detections:
    joints2d = [points for points, _ in per_view]
    scores = [values for _, values in per_view]
    for person in association.associate(joints2d, scores, rig, mirror=mirror):
      if not all(view in person.members for view in sources):
        continue
      points, weights = {}, {}
      for view, index in person.members.items():
        order = mirror if person.mirrored[view] else np.arange(len(mirror))
        points[view] = joints2d[view][index][order]
        weights[view] = scores[view][index][order]
      joints3d, _ = triangulate(np.stack([points[view] for view in sources]),
                                np.stack([weights[view] for view in sources]),
                                [rig.cameras[view] for view in sources])
      for target in targets:
        if target not in person.members:
          continue
        seen = np.isfinite(joints3d[:, 0]) & (weights[target] >= _MIN_SCORE)
        pairs[target][0].append(rig.cameras[target].project(joints3d[seen])[0])
        pairs[target][1].append(points[target][seen])
  for target in targets:
    camera = rig.cameras[target]
    projected, detected = (np.concatenate(values) for values in pairs[target])
    video_width, video_height = sizes[camera.name]
    print(f"{label} {camera.name}: video {video_width}x{video_height}, calibration "
          f"{camera.width}x{camera.height}, {len(projected)} joints, projected x "
          f"{projected[:, 0].min():.0f}..{projected[:, 0].max():.0f} px, y "
          f"{projected[:, 1].min():.0f}..{projected[:, 1].max():.0f} px")
    for axis, coordinate in ((0, "x"), (1, "y")):
      a, b, a_error, b_error, rms, kept = robust_line(projected[:, axis], detected[:, axis])
      print(f"  {coordinate}_detected = {a:.4f} (+- {a_error:.4f}) * {coordinate}_projected "
            f"{b:+.2f} (+- {b_error:.2f}) px; residual RMS {rms:.2f} px over {kept} joints")
    difference = camera.width - video_width
    scale = video_width / camera.width
    hypotheses = {
        f"cropped on the left (x - {difference})": projected[:, 0] - difference,
        "cropped on the right (x)": projected[:, 0],
        f"cropped each side (x - {difference / 2:g})": projected[:, 0] - difference / 2,
        f"resized (x * {scale:.4f})": scale * (projected[:, 0] + 0.5) - 0.5,
    }
    for name, prediction in hypotheses.items():
      error = detected[:, 0] - prediction
      print(f"  {name:30s} x_detected - x_predicted: median {np.median(error):+.2f} px")


def median_background(path: str, frames: int) -> np.ndarray:
  """[H, W] uint8 grey median of `frames` frames spread over the video: the static scene."""
  capture = cv2.VideoCapture(path)
  count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
  capture.release()
  images = read_frames(path, np.linspace(0, count - 1, frames).round().astype(int))
  grey = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in images]
  return np.median(np.stack(grey), axis=0).astype(np.uint8)


def register_backgrounds(single_dir: str, multi_dir: str, names, frames: int) -> None:
  """Fits x_single = a x_multi + b (and y) between the two demos' backgrounds, per camera."""
  sift = cv2.SIFT_create(nfeatures=5000)
  matcher = cv2.BFMatcher()
  for name in names:
    single, multi = (median_background(os.path.join(folder, "videos", f"{name}.mp4"), frames)
                     for folder in (single_dir, multi_dir))
    keys_single, features_single = sift.detectAndCompute(single, None)
    keys_multi, features_multi = sift.detectAndCompute(multi, None)
    matches = [first for first, second in matcher.knnMatch(features_multi, features_single, k=2)
               if first.distance < 0.7 * second.distance]  # Lowe's ratio test.
    points_multi = np.float64([keys_multi[match.queryIdx].pt for match in matches])
    points_single = np.float64([keys_single[match.trainIdx].pt for match in matches])
    _, inliers = cv2.estimateAffine2D(points_multi, points_single, ransacReprojThreshold=1.0,
                                      maxIters=5000, confidence=0.999)
    inliers = inliers.ravel().astype(bool)
    fits = []
    for axis, coordinate in ((0, "x"), (1, "y")):
      a, b, a_error, b_error, rms, _ = robust_line(points_multi[inliers, axis],
                                                   points_single[inliers, axis], iterations=0)
      fits.append(f"{coordinate}_single = {a:.5f} (+- {a_error:.5f}) {coordinate}_multi {b:+.2f} "
                  f"(+- {b_error:.2f}) px, RMS {rms:.2f} px")
    print(f"{name}: Demo_SinglePerson {single.shape[1]}x{single.shape[0]}, Demo_MultiPerson "
          f"{multi.shape[1]}x{multi.shape[0]}, {inliers.sum()}/{len(matches)} background "
          f"matches kept, x_multi {points_multi[inliers, 0].min():.0f}.."
          f"{points_multi[inliers, 0].max():.0f} px")
    print("  " + "; ".join(fits))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=_DEFAULT_DATA,
                      help="Folder holding Demo_SinglePerson and Demo_MultiPerson.")
  parser.add_argument("--frames", type=int, default=8, help="Frames per video.")
  args = parser.parse_args()
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
  joint_set = joints_lib.get_joint_set("h36m17")
  model = blazepose.BlazePose()

  multi = os.path.join(args.data_dir, "Demo_MultiPerson")
  rig = calibration_formats.read_qualisys(os.path.join(multi, "calibration", "Calib.qca.txt"))
  detections, sizes = detect(model, multi, rig.camera_names, args.frames, rig.cameras)
  report("Demo_MultiPerson, 4 views", *triangulate_all(detections, rig, joint_set), joint_set)
  cross_view_fit(detections, rig, sizes, joint_set, "Demo_MultiPerson (control)")

  single = os.path.join(args.data_dir, "Demo_SinglePerson")
  rig = calibration_formats.read_qualisys(os.path.join(single, "calibration", "Calib.qca.txt"))
  detections, sizes = detect(model, single, rig.camera_names, args.frames)
  print(f"Demo_SinglePerson video sizes {sizes}")
  report("Demo_SinglePerson, 4 views, calibration as in the file",
         *triangulate_all(detections, rig, joint_set), joint_set)
  cross_view_fit(detections, rig, sizes, joint_set, "Demo_SinglePerson")
  register_backgrounds(single, multi, rig.camera_names, max(args.frames, 15))
  fitted = calibration_formats.fit_to_image_size(rig, sizes)
  report("Demo_SinglePerson, 4 views, fit_to_image_size",
         *triangulate_all(detections, fitted, joint_set), joint_set)
  subset = [rig.camera_names.index(name) for name in ("cam03", "cam04")]
  report("Demo_SinglePerson, cam03 + cam04 only",
         *triangulate_all([[per_view[view] for view in subset] for per_view in detections],
                          rig.subset(subset), joint_set), joint_set)


if __name__ == "__main__":
  main()
