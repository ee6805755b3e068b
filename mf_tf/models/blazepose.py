"""BlazePose GHUM (full): a pretrained 2D person detector and pose model for real images.

Bazarevsky et al., "BlazePose: On-device Real-time Body Pose tracking", CVPR workshops 2020;
the models are MediaPipe's (Apache-2.0), run here with `ai_edge_litert` from the local cache that
`python -m mf_tf.models.fetch_blazepose` fills once (nothing is downloaded at run time, and the
`mediapipe` package is never imported). The pipeline reproduces MediaPipe's pose graphs
(modules/pose_detection/pose_detection_cpu.pbtxt and tasks/cc/vision/pose_detector):

1. Person detection, `pose_detection.tflite`: the image is letterboxed (aspect kept, zero border)
   to 224 x 224 RGB in [-1, 1]. The model scores 2254 SSD anchors (`ssd_anchors`: strides
   8, 16, 32, 32, 32, anchor offset 0.5, fixed anchor size) and regresses 12 values per anchor:
   a box (x, y, w, h) and 4 keypoints, all in input pixels relative to the anchor
   (`decode_detections`, scale 224). Scores are sigmoid(clip(logit, +-100)); anchors above
   `min_score` (0.5) are merged by weighted non-maximum suppression (`weighted_nms`, IoU 0.3).
   Beyond MediaPipe, the detector also runs on overlapping square tiles of a wide image, which
   finds more of the small people of a multi-camera studio (`detection_windows`); a person that
   NMS leaves twice (found by windows of two sizes) is estimated once (`DUPLICATE_POSE_DISTANCE`).
2. ROI: keypoint 0 is the mid-hip centre, keypoint 1 a point whose offset from it gives the body's
   size and direction. The crop is the square centred at keypoint 0, of side
   2 |k1 - k0| x 1.25, rotated so that k1 - k0 points up in the crop (target angle 90 degrees):
   `roi_from_keypoints`.
3. Landmarks, `pose_landmark_full.tflite`: the rotated crop, 256 x 256 RGB in [0, 1] (replicated
   border), gives 39 landmarks (x, y, z, visibility, presence; x, y in crop pixels, the first 33
   are the BlazePose points), a pose presence probability and 64 x 64 x 39 heatmap logits whose
   first 33 channels are the points' heatmaps (sigmoid gives probabilities). Outputs are
   identified by their shapes (`_LANDMARK_OUTPUTS`), not their names.

Every crop is represented by its affine map from image pixels to heatmap pixels (pixel centres at
integers, `mf_tf.geometry.crops`), so heatmaps from two views fuse through
`crops.crop_fundamental_matrix`. Given the view's `Camera`, crops are sampled from the undistorted
image (the affine then acts on undistorted pixels) and the epipolar geometry between crops is exact.

Joint sets: `JOINT_SOURCES` defines every joint of h36m17, coco19 and totalcapture16 as a
weighted mean of BlazePose points (left = the person's left, as in every mf_tf set):
  - Same point: hips, knees, ankles, shoulders, elbows, wrists; coco19 nose, eyes and ears.
  - pelvis / bodycenter = midpoint of the hips (Panoptic's body centre and H36M's pelvis are the
    hip centre).
  - thorax (h36m17), neck (coco19, totalcapture16) = midpoint of the shoulders: all three mark the
    base of the neck; BlazePose has no neck point and the shoulder midpoint is the closest
    anatomical proxy (it sits a few centimetres below Panoptic's neck marker).
  - spine = midpoint of pelvis and thorax, the mean of both hips and both shoulders (H36M's spine
    marker lies about half way up the torso), as `mf_tf.data.joints` derives it from coco19.
  - h36m17 "nose" (H36M's neck/chin marker, between the thorax and the nose) = midpoint of the
    nose and the shoulder midpoint, as `mf_tf.data.joints` does from coco19.
  - head (h36m17, totalcapture16; the head-top marker) = midpoint of the ears: the centre of the
    skull, the same approximation `mf_tf.data.joints` makes from coco19's ears; BlazePose has no
    head-top point.
Heatmaps of such derived joints: a Gaussian at the derived point (from the decoded landmarks),
of the standard deviation `DERIVED_HEATMAP_SIGMA` (measured on the model's own point heatmaps),
with peak height the smallest heatmap peak among its source points (a midpoint is as reliable as
its least reliable end). Heatmaps of joints that are a BlazePose point are the model's sigmoid
heatmap, unchanged. Per-joint scores: the landmark visibility (sigmoid), the minimum over the
sources for derived joints, and 0 for a joint placed outside the image: the model extrapolates
limbs that the frame cuts off and can still call them visible (on the 25 Panoptic demo frames 11
of the 764 joints of visibility >= 0.5 lie outside the image, up to 120 px below it), and such a
guess, triangulated with one real view, puts the joint anywhere along that view's ray.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np
from scipy import special
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from mf_tf.data import joints as joints_lib
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import crops
from mf_tf.models import fetch_blazepose

DETECTOR_INPUT_SIZE = 224
LANDMARK_INPUT_SIZE = 256
HEATMAP_SIZE = 64
NUM_ANCHORS = 2254
NUM_POINTS = 33
# pose_detection_cpu.pbtxt's SsdAnchorsCalculator and TensorsToDetectionsCalculator options.
ANCHOR_STRIDES = (8, 16, 32, 32, 32)
ANCHOR_OFFSET = 0.5
BOX_SCALE = 224.0  # x/y/w/h_scale: regressions are in input pixels.
SCORE_CLIP = 100.0
MIN_DETECTION_SCORE = 0.5  # The pose landmarker task's default min_detection_confidence.
NMS_IOU_THRESHOLD = 0.3  # NonMaxSuppressionCalculator min_suppression_threshold.
# pose_detector_graph.cc: AlignmentPointsRectsCalculator (keypoints 0 -> 1, 90 degrees) and
# RectTransformationCalculator (scale 1.25, square_long).
ROI_TARGET_ANGLE = math.pi / 2
ROI_SCALE = 1.25
MIN_PRESENCE = 0.5  # tensors_to_pose_landmarks_and_segmentation.pbtxt ThresholdingCalculator.
# Two poses of one image are one person when the median distance between their joints is below
# this fraction of the body's half extent |k1 - k0| (the crop side / (2 ROI_SCALE)). The detector's
# box is a fixed 0.2 x 0.2 of its window, so weighted NMS misses a person found by windows of two
# sizes whose box centres differ by more than about 84 px (their IoU drops below 0.3), and the
# landmark model then gives that person twice. Measured on the 25 Panoptic demo frames with
# detections down to score 0.1: pairs of one person 0.029-0.105, pairs of different people
# (including one standing right behind another) 0.265 and above.
DUPLICATE_POSE_DISTANCE = 0.18
# Standard deviation, in heatmap pixels, of the Gaussian heatmaps of derived joints: the median
# per-axis spread of the model's own sigmoid heatmaps (second moment in 11 x 11 px around the
# peak) over 758 confident points of the 25 Panoptic demo frames is 1.2 px (quartiles 1.0, 1.5).
DERIVED_HEATMAP_SIGMA = 1.2
# Heatmap pixel i (centre at integer i, as everywhere in mf_tf) lies at crop coordinate i / 64
# (MediaPipe's RefineLandmarksFromHeatmapCalculator reads it so), not (i + 0.5) / 64: the
# heatmaps' local centroid sits +0.54 / +0.33 px (x / y, median of those 758 points) from the
# regressed landmarks under the (i + 0.5) reading, near the +0.5 that this shift removes.
HEATMAP_GRID_SHIFT = 0.5

BLAZEPOSE_POINTS = (
    "nose", "leye_inner", "leye", "leye_outer", "reye_inner", "reye", "reye_outer", "lear",
    "rear", "mouth_left", "mouth_right", "lshoulder", "rshoulder", "lelbow", "relbow", "lwrist",
    "rwrist", "lpinky", "rpinky", "lindex", "rindex", "lthumb", "rthumb", "lhip", "rhip", "lknee",
    "rknee", "lankle", "rankle", "lheel", "rheel", "lfoot_index", "rfoot_index")

_LIMBS = tuple(side + limb for side in "lr"
               for limb in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"))


def _point(name: str) -> dict[str, float]:
  return {name: 1.0}


def _mid(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
  """Midpoint of two (weighted) points: the mean of their weights."""
  return {k: 0.5 * a.get(k, 0.0) + 0.5 * b.get(k, 0.0) for k in {**a, **b}}


_MID_HIP = _mid(_point("lhip"), _point("rhip"))
_MID_SHOULDER = _mid(_point("lshoulder"), _point("rshoulder"))
_MID_EAR = _mid(_point("lear"), _point("rear"))
_SPINE = _mid(_MID_HIP, _MID_SHOULDER)

# joint set -> {joint: {BlazePose point: weight}}; weights are non-negative and sum to 1. See the
# module docstring for why each derived joint is defined as it is.
JOINT_SOURCES: dict[str, dict[str, dict[str, float]]] = {
    "h36m17": {
        **{j: _point(j) for j in _LIMBS},
        "pelvis": _MID_HIP, "spine": _SPINE, "thorax": _MID_SHOULDER,
        "nose": _mid(_point("nose"), _MID_SHOULDER), "head": _MID_EAR},
    "coco19": {
        **{j: _point(j) for j in _LIMBS},
        "neck": _MID_SHOULDER, "nose": _point("nose"), "bodycenter": _MID_HIP,
        "leye": _point("leye"), "lear": _point("lear"), "reye": _point("reye"),
        "rear": _point("rear")},
    "totalcapture16": {
        **{j: _point(j) for j in _LIMBS},
        "pelvis": _MID_HIP, "spine": _SPINE, "neck": _MID_SHOULDER, "head": _MID_EAR},
}


def joint_weights(joint_set) -> np.ndarray:
  """[J, 33] float64 W with project joints = W @ BlazePose points (rows sum to 1).

  Args:
    joint_set: A mf_tf joint set (JointSet or name) listed in JOINT_SOURCES.
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  if joint_set.name not in JOINT_SOURCES:
    raise ValueError(f"no BlazePose map for joint set {joint_set.name!r}; expected one of "
                     f"{sorted(JOINT_SOURCES)}")
  sources = JOINT_SOURCES[joint_set.name]
  weights = np.zeros((joint_set.num_joints, NUM_POINTS))
  for row, joint in enumerate(joint_set.names):
    for point, weight in sources[joint].items():
      weights[row, BLAZEPOSE_POINTS.index(point)] = weight
  return weights


def ssd_anchors(input_size: int = DETECTOR_INPUT_SIZE, strides=ANCHOR_STRIDES,
                offset: float = ANCHOR_OFFSET) -> np.ndarray:
  """SSD anchor centres, as MediaPipe's SsdAnchorsCalculator generates them (fixed anchor size).

  Consecutive layers of equal stride share one feature map; each of their layers contributes two
  anchors per cell (aspect ratio 1 and the interpolated scale, also of aspect 1). With a fixed
  anchor size every anchor's width and height are 1, so only the centres matter. For 224 and
  strides (8, 16, 32, 32, 32): 28^2 x 2 + 14^2 x 2 + 7^2 x 6 = 2254 anchors, cell-major within a
  feature map (rows, then columns, then the anchors of a cell).

  Args:
    input_size: Side of the square model input in pixels.
    strides: Stride of each layer.
    offset: Anchor offset within a cell (0.5: the cell centre).

  Returns:
    [A, 2] float64 (x, y) anchor centres, normalized to [0, 1] over the model input.
  """
  centres = []
  layer = 0
  while layer < len(strides):
    group = layer
    while group < len(strides) and strides[group] == strides[layer]:
      group += 1
    per_cell = 2 * (group - layer)
    cells = int(math.ceil(input_size / strides[layer]))
    ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    grid = (np.stack([xs, ys], axis=-1).reshape(-1, 2) + offset) / cells
    centres.append(np.repeat(grid, per_cell, axis=0))
    layer = group
  return np.concatenate(centres)


def decode_detections(raw_boxes, raw_scores, anchors, scale: float = BOX_SCALE):
  """Decodes the detector's regressions (TensorsToDetectionsCalculator, reverse_output_order).

  Args:
    raw_boxes: [A, 12] (x, y, w, h, then 4 keypoints x, y), input pixels relative to the anchor.
    raw_scores: [A] or [A, 1] score logits.
    anchors: [A, 2] normalized anchor centres (`ssd_anchors`).
    scale: The x/y/w/h scale (the input size).

  Returns:
    boxes: [A, 4] normalized (x_center, y_center, width, height).
    keypoints: [A, 4, 2] normalized (x, y).
    scores: [A] probabilities, sigmoid(clip(logit, -100, 100)).
  """
  raw_boxes = np.asarray(raw_boxes, np.float64)
  anchors = np.asarray(anchors, np.float64)
  if raw_boxes.ndim != 2 or raw_boxes.shape[1] != 12 or len(raw_boxes) != len(anchors):
    raise ValueError(f"raw_boxes have shape {raw_boxes.shape}, expected [{len(anchors)}, 12] "
                     "(one row per anchor)")
  values = raw_boxes / scale
  centres = values[:, :2] + anchors
  boxes = np.concatenate([centres, values[:, 2:4]], axis=-1)
  keypoints = values[:, 4:].reshape(-1, 4, 2) + anchors[:, None, :]
  logits = np.clip(np.asarray(raw_scores, np.float64).reshape(-1), -SCORE_CLIP, SCORE_CLIP)
  return boxes, keypoints, 1.0 / (1.0 + np.exp(-logits))


def encode_detection(box, keypoints, anchor, scale: float = BOX_SCALE) -> np.ndarray:
  """Inverse of `decode_detections` for one anchor: [4], [4, 2], [2] -> [12] raw regressions."""
  box = np.asarray(box, np.float64)
  anchor = np.asarray(anchor, np.float64)
  offsets = np.concatenate([box[:2] - anchor, box[2:4],
                            (np.asarray(keypoints, np.float64) - anchor).reshape(-1)])
  return offsets * scale


def box_iou(box, boxes) -> np.ndarray:
  """IoU of one (x_center, y_center, w, h) box [4] with boxes [N, 4] -> [N]."""
  box = np.asarray(box, np.float64)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  low = np.maximum(box[:2] - box[2:] / 2, boxes[:, :2] - boxes[:, 2:] / 2)
  high = np.minimum(box[:2] + box[2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)
  intersection = np.prod(np.clip(high - low, 0.0, None), axis=-1)
  union = np.prod(box[2:]) + np.prod(boxes[:, 2:], axis=-1) - intersection
  return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes, keypoints, scores, iou_threshold: float = NMS_IOU_THRESHOLD,
                 min_score: float = MIN_DETECTION_SCORE):
  """Weighted non-maximum suppression (MediaPipe's NonMaxSuppressionCalculator, WEIGHTED).

  Repeatedly takes the best remaining detection and every remaining one overlapping it by IoU
  > `iou_threshold` (itself included), and outputs their score-weighted mean box and keypoints
  with the best score.

  Args:
    boxes: [N, 4] (x_center, y_center, w, h).
    keypoints: [N, K, 2].
    scores: [N] probabilities.
    iou_threshold: Overlap above which detections merge.
    min_score: Detections below this score are dropped first.

  Returns:
    boxes [M, 4], keypoints [M, K, 2], scores [M], best first.
  """
  boxes = np.asarray(boxes, np.float64)
  keypoints = np.asarray(keypoints, np.float64)
  scores = np.asarray(scores, np.float64)
  keep = scores >= min_score
  boxes, keypoints, scores = boxes[keep], keypoints[keep], scores[keep]
  remaining = np.argsort(-scores, kind="stable")
  out_boxes, out_keypoints, out_scores = [], [], []
  while remaining.size:
    best = remaining[0]
    overlap = box_iou(boxes[best], boxes[remaining]) > iou_threshold
    overlap[0] = True  # IoU with itself, even for a degenerate box.
    members = remaining[overlap]
    weights = scores[members] / scores[members].sum()
    out_boxes.append(np.einsum("n,nc->c", weights, boxes[members]))
    out_keypoints.append(np.einsum("n,nkc->kc", weights, keypoints[members]))
    out_scores.append(scores[best])
    remaining = remaining[~overlap]
  num_keypoints = keypoints.shape[1] if keypoints.ndim == 3 else 0
  if not out_scores:
    return np.zeros((0, 4)), np.zeros((0, num_keypoints, 2)), np.zeros((0,))
  return np.stack(out_boxes), np.stack(out_keypoints), np.asarray(out_scores)


def roi_from_keypoints(center_point, scale_point, scale: float = ROI_SCALE,
                       target_angle: float = ROI_TARGET_ANGLE):
  """The rotated square person ROI from the detector's two alignment keypoints.

  Args:
    center_point: [..., 2] keypoint 0 (mid-hip centre), image pixels.
    scale_point: [..., 2] keypoint 1, image pixels.
    scale: Margin factor on the box side 2 |k1 - k0|.
    target_angle: Direction (radians, counter-clockwise from +x with y up) that k1 - k0 must take
      in the crop; pi / 2 makes it point up.

  Returns:
    center [..., 2] image pixels, size [...] pixels, rotation [...] radians in [-pi, pi)
    (see `mf_tf.geometry.crops`).
  """
  center_point = np.asarray(center_point, np.float64)
  delta = np.asarray(scale_point, np.float64) - center_point
  size = 2.0 * np.linalg.norm(delta, axis=-1) * scale
  # y points down in the image, hence the sign flip before measuring the angle.
  angle = target_angle - np.arctan2(-delta[..., 1], delta[..., 0])
  rotation = angle - 2.0 * np.pi * np.floor((angle + np.pi) / (2.0 * np.pi))
  return center_point, size, rotation


def sample_bilinear(image, coords, border: str = "zero") -> np.ndarray:
  """Bilinear samples of an image at arbitrary pixel coordinates.

  Args:
    image: [H, W, C] any numeric dtype.
    coords: [..., 2] (x, y) pixel coordinates (pixel centres at integers).
    border: "zero" (outside pixels read 0) or "replicate" (nearest edge pixel).

  Returns:
    [..., C] float32.
  """
  image = np.asarray(image)
  if border not in ("zero", "replicate"):
    raise ValueError(f"border {border!r}, expected 'zero' or 'replicate'")
  height, width = image.shape[:2]
  coords = np.asarray(coords, np.float64)
  x0 = np.floor(coords[..., 0])
  y0 = np.floor(coords[..., 1])
  fx = (coords[..., 0] - x0)[..., None].astype(np.float32)
  fy = (coords[..., 1] - y0)[..., None].astype(np.float32)
  x0 = x0.astype(np.int64)
  y0 = y0.astype(np.int64)
  if border == "replicate" and height > 1 and width > 1:
    # All four corners in one gather from a strided view of the image ([row, column] pixel
    # pairs: 2 x 2 neighbours from each top-left pixel); corners clipped to the last full 2 x 2
    # square with the weight moved to the edge pixel, which is the replicated border exactly.
    # Random access into a 6 MB frame is what costs: 4x fewer gathers, 3x faster crops.
    channels = image.shape[2] if image.ndim == 3 else 1
    pixels = np.ascontiguousarray(image).reshape(height * width * channels)
    item = pixels.strides[0]
    squares = np.lib.stride_tricks.as_strided(
        pixels, shape=((height - 1) * width, 2, 2, channels),
        strides=(channels * item, width * channels * item, channels * item, item), writeable=False)
    fx = np.where(x0 < 0, 0.0, np.where(x0 >= width - 1, 1.0, fx[..., 0]))[..., None]
    fy = np.where(y0 < 0, 0.0, np.where(y0 >= height - 1, 1.0, fy[..., 0]))[..., None]
    corners = squares[np.clip(y0, 0, height - 2) * width + np.clip(x0, 0, width - 2)]
    corners = corners.astype(np.float32)
    fx, fy = fx.astype(np.float32), fy.astype(np.float32)
    top = corners[..., 0, 0, :] * (1 - fx) + corners[..., 0, 1, :] * fx
    bottom = corners[..., 1, 0, :] * (1 - fx) + corners[..., 1, 1, :] * fx
    return (top * (1 - fy) + bottom * fy).reshape(coords.shape[:-1] + image.shape[2:])
  # One gather per corner from the flattened image (a quarter of the time of 2-D indexing).
  flat = image.reshape(height * width, -1)
  columns = (np.clip(x0, 0, width - 1), np.clip(x0 + 1, 0, width - 1))
  rows = (np.clip(y0, 0, height - 1) * width, np.clip(y0 + 1, 0, height - 1) * width)

  def fetch(row, column):
    values = flat[rows[row] + columns[column]].astype(np.float32)
    if border == "zero":
      inside = ((x0 + column >= 0) & (x0 + column < width) & (y0 + row >= 0)
                & (y0 + row < height))
      values *= inside[..., None]
    return values

  top = fetch(0, 0) * (1 - fx) + fetch(0, 1) * fx
  bottom = fetch(1, 0) * (1 - fx) + fetch(1, 1) * fx
  return top * (1 - fy) + bottom * fy


def detection_windows(height: int, width: int, tiled: bool = True):
  """Square image windows the person detector runs on, as (centre [2], side) in image pixels.

  The first is MediaPipe's letterbox: the whole image, padded to a square of side max(H, W).
  Letterboxing a 1920 x 1080 view shrinks people to 40-60 of the detector's 224 pixels, where
  it misses many: on the Panoptic demo views at frame 4500 it finds 1, 1, 1, 2, 2 people
  (00_03, 00_06, 00_12, 00_13, 00_23) where 2-3 are visible in each. With `tiled`, square tiles
  of side min(H, W), overlapping by about half a tile along the long side (3 for 16:9), run too
  (people 1.8x larger) and weighted NMS merges the detections of all windows: 2, 1, 2, 3, 2.

  Args:
    height: Image height in pixels.
    width: Image width in pixels.
    tiled: Add the tiles (none for a square image).

  Returns:
    List of (center [2] float64, side float).
  """
  long_side, short_side = max(height, width), min(height, width)
  windows = [(np.array([(width - 1) / 2, (height - 1) / 2]), float(long_side))]
  if tiled and long_side > short_side:
    count = int(math.ceil(2 * long_side / short_side)) - 1
    for start in np.linspace(0.0, long_side - short_side, count):
      along = start + (short_side - 1) / 2
      across = (short_side - 1) / 2
      center = [along, across] if width >= height else [across, along]
      windows.append((np.array(center), float(short_side)))
  return windows


def read_image(path: str) -> np.ndarray:
  """Reads a JPEG or PNG file as [H, W, 3] uint8 RGB (TensorFlow's decoder, no extra package)."""
  data = tf.io.read_file(path)
  return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


@dataclasses.dataclass(frozen=True)
class PersonBox:
  """One person found by the detector, in image pixels.

  Attributes:
    score: Detection probability.
    box: [4] (x_min, y_min, x_max, y_max) of the detector's box, image pixels.
    keypoints: [4, 2] the detector's keypoints: mid-hip centre, full-body size/rotation point,
      mid-shoulder centre, upper-body size/rotation point.
    center: [2] crop (ROI) centre, image pixels.
    size: Crop side, image pixels.
    rotation: Crop rotation, radians (see `mf_tf.geometry.crops`).
  """

  score: float
  box: np.ndarray
  keypoints: np.ndarray
  center: np.ndarray
  size: float
  rotation: float


def crop_person(image, box: PersonBox, camera: camera_lib.Camera | None = None):
  """The landmark model's input crop of one person and its affine.

  Args:
    image: [H, W, 3] RGB uint8 (or float in [0, 255]).
    box: The person.
    camera: The view's camera: when given, the crop shows the undistorted image (the ROI
      centre is undistorted, size and rotation kept) and the affine acts on undistorted pixels.

  Returns:
    crop_image: [256, 256, 3] float32 RGB in [0, 1].
    crop_affine: [3, 3] image pixels (undistorted when `camera` is given) -> heatmap pixels
      (64 x 64 grid, pixel centres at integers). With HEATMAP_GRID_SHIFT the ROI's corners map
      to heatmap points (0, 0), (64, 0), (64, 64), (0, 64) (top-left first, clockwise).
  """
  image = _check_image(image)
  center = np.asarray(box.center, np.float64)
  if camera is not None:
    center = camera_lib.undistort_points(camera, center)
  affine = crops.roi_affine(center, box.size, box.rotation, LANDMARK_INPUT_SIZE)
  pixels = sample_bilinear(
      image, crops.crop_sample_coords(affine, LANDMARK_INPUT_SIZE, camera), border="replicate")
  to_heatmap = crops.rescale_affine(affine, LANDMARK_INPUT_SIZE, HEATMAP_SIZE)
  to_heatmap[:2, 2] += HEATMAP_GRID_SHIFT
  return pixels / 255.0, to_heatmap


# Landmark model outputs, identified by shape (batch 1).
_LANDMARK_OUTPUTS = {
    "landmarks": (1, 39 * 5),
    "presence": (1, 1),
    "heatmaps": (1, HEATMAP_SIZE, HEATMAP_SIZE, 39),
}
_DETECTOR_OUTPUTS = {"boxes": (1, NUM_ANCHORS, 12), "scores": (1, NUM_ANCHORS, 1)}


def _output_indices(interpreter: Interpreter, wanted: Mapping[str, tuple[int, ...]],
                    model: str) -> dict[str, int]:
  by_shape = {tuple(int(d) for d in o["shape"]): o["index"]
              for o in interpreter.get_output_details()}
  missing = {name: shape for name, shape in wanted.items() if shape not in by_shape}
  if missing:
    raise ValueError(f"{model}: no output of shape {missing}; the model has outputs of shapes "
                     f"{sorted(by_shape)} (is it the expected BlazePose file?)")
  return {name: by_shape[shape] for name, shape in wanted.items()}


class BlazePose:
  """BlazePose GHUM (full) person detector and 2D pose model on CPU (TFLite via ai_edge_litert).

  Args:
    model_dir: Folder holding the two cached .tflite files; None for the default cache
      (`$MF_TF_BLAZEPOSE_DIR` or ~/.cache/mf_tf/blazepose). Files are checked against their
      sha256; absent files raise FileNotFoundError naming the folder and the fetch command.
    num_threads: CPU threads per model.
    min_detection_score: Person detection threshold.
    min_presence: Pose presence threshold below which `estimate` drops a person.
    duplicate_pose_distance: `estimate` keeps one pose of two whose joints lie this close
      (DUPLICATE_POSE_DISTANCE).
    tiled_detection: Also run the detector on overlapping square tiles of a non-square image
      (`detection_windows`); False runs it once on the letterboxed image, as MediaPipe does.
  """

  def __init__(self, model_dir: str | None = None, num_threads: int = 2,
               min_detection_score: float = MIN_DETECTION_SCORE,
               min_presence: float = MIN_PRESENCE, tiled_detection: bool = True,
               duplicate_pose_distance: float = DUPLICATE_POSE_DISTANCE):
    self.model_dir = model_dir
    self.num_threads = num_threads
    self.tiled_detection = tiled_detection
    self.min_detection_score = min_detection_score
    self.min_presence = min_presence
    self.duplicate_pose_distance = duplicate_pose_distance
    paths = fetch_blazepose.verified_model_paths(model_dir)
    self._detector = Interpreter(paths["pose_detection.tflite"], num_threads=num_threads)
    self._landmarker = Interpreter(paths["pose_landmark_full.tflite"], num_threads=num_threads)
    self._detector.allocate_tensors()
    self._landmarker.allocate_tensors()
    self._detector_input = self._detector.get_input_details()[0]["index"]
    self._landmarker_input = self._landmarker.get_input_details()[0]["index"]
    self._detector_outputs = _output_indices(self._detector, _DETECTOR_OUTPUTS,
                                             "pose_detection.tflite")
    self._landmarker_outputs = _output_indices(self._landmarker, _LANDMARK_OUTPUTS,
                                               "pose_landmark_full.tflite")
    self._anchors = ssd_anchors()

  def detect_people(self, image) -> list[PersonBox]:
    """Finds people in an image: the detector on each window (`detection_windows`), weighted NMS
    over all windows, then the crop ROI of each person.

    Args:
      image: [H, W, 3] RGB, uint8 (or float in [0, 255]).

    Returns:
      PersonBox per person, best score first (possibly empty).
    """
    image = _check_image(image)
    height, width = image.shape[:2]
    all_boxes, all_keypoints, all_scores = [], [], []
    for center, side in detection_windows(height, width, self.tiled_detection):
      window = crops.roi_affine(center, side, 0.0, DETECTOR_INPUT_SIZE)
      pixels = sample_bilinear(image, crops.crop_sample_coords(window, DETECTOR_INPUT_SIZE),
                               border="zero")
      self._detector.set_tensor(self._detector_input, (pixels / 127.5 - 1.0)[None])
      self._detector.invoke()
      boxes, keypoints, scores = decode_detections(
          self._detector.get_tensor(self._detector_outputs["boxes"])[0],
          self._detector.get_tensor(self._detector_outputs["scores"])[0], self._anchors)
      keep = scores >= self.min_detection_score
      # Normalized input coordinates -> input pixels (centres at integers) -> image pixels.
      to_image = np.linalg.inv(window)
      centres = crops.apply_affine(to_image, boxes[keep, None, :2] * DETECTOR_INPUT_SIZE - 0.5)
      all_boxes.append(np.concatenate([centres[:, 0], boxes[keep, 2:] * side], axis=-1))
      all_keypoints.append(crops.apply_affine(to_image,
                                              keypoints[keep] * DETECTOR_INPUT_SIZE - 0.5))
      all_scores.append(scores[keep])
    boxes, keypoints, scores = weighted_nms(
        np.concatenate(all_boxes), np.concatenate(all_keypoints), np.concatenate(all_scores),
        min_score=self.min_detection_score)
    people = []
    for box, points, score in zip(boxes, keypoints, scores):
      roi_center, size, rotation = roi_from_keypoints(points[0], points[1])
      corners = np.concatenate([box[:2] - box[2:] / 2, box[:2] + box[2:] / 2])
      people.append(PersonBox(float(score), corners, points, roi_center, float(size),
                              float(rotation)))
    return people

  def crop(self, image, box: PersonBox, camera: camera_lib.Camera | None = None):
    """The landmark model's input crop of one person and its affine (see `crop_person`)."""
    return crop_person(image, box, camera)

  def run_landmarks(self, crop_image) -> dict[str, np.ndarray]:
    """Runs the landmark model on one crop.

    Args:
      crop_image: [256, 256, 3] RGB in [0, 1].

    Returns:
      points: [33, 2] BlazePose points in heatmap pixels (64 x 64 grid, centres at integers).
      visibility: [33] probabilities.
      presence: Pose presence probability (float).
      heatmaps: [64, 64, 33] sigmoid probabilities.
      roi_points: [2, 2] the two auxiliary landmarks (33, 34: body centre and the point giving
        its size and direction) in heatmap pixels: the next frame's crop of this person, as
        MediaPipe's pose_landmarks_to_roi derives it (`roi_from_keypoints`).
    """
    crop_image = np.asarray(crop_image, np.float32)
    expected = (LANDMARK_INPUT_SIZE, LANDMARK_INPUT_SIZE, 3)
    if crop_image.shape != expected:
      raise ValueError(f"crop has shape {crop_image.shape}, expected {expected}")
    self._landmarker.set_tensor(self._landmarker_input, crop_image[None])
    self._landmarker.invoke()
    outputs = {name: self._landmarker.get_tensor(index)[0]
               for name, index in self._landmarker_outputs.items()}
    landmarks = outputs["landmarks"].reshape(39, 5).astype(np.float64)
    # Landmark x, y are crop input pixels with 0 at the crop's edge; heatmap pixel i sits at
    # i / 64 of the crop (see HEATMAP_GRID_SHIFT).
    points = landmarks[:, :2] * (HEATMAP_SIZE / LANDMARK_INPUT_SIZE)
    logits = outputs["heatmaps"][..., :NUM_POINTS].astype(np.float32)
    return {
        "points": points[:NUM_POINTS],
        "visibility": 1.0 / (1.0 + np.exp(-landmarks[:NUM_POINTS, 3])),
        "presence": float(outputs["presence"].reshape(())),
        "heatmaps": special.expit(logits),
        "roi_points": points[NUM_POINTS:NUM_POINTS + 2],
    }

  def heatmaps(self, crop_image) -> np.ndarray:
    """[64, 64, 33] heatmap probabilities of the 33 BlazePose points for one crop."""
    return self.run_landmarks(crop_image)["heatmaps"]

  def estimate(self, image, joint_set, camera: camera_lib.Camera | None = None) -> list[dict]:
    """2D poses of every person the detector finds in an image, in a project joint set.

    Args:
      image: [H, W, 3] RGB uint8 (or float in [0, 255]).
      joint_set: JointSet or name in JOINT_SOURCES (h36m17, coco19, totalcapture16).
      camera: The view's camera, to crop the undistorted image (see `crop`); None to crop the
        raw image.

    Returns:
      See `estimate_boxes`, for the boxes of `detect_people`.
    """
    return self.estimate_boxes(image, self.detect_people(image), joint_set, camera)

  def estimate_boxes(self, image, boxes, joint_set, camera: camera_lib.Camera | None = None,
                     kept: list[dict] | None = None) -> list[dict]:
    """2D poses of the people in the given crops (the detector's, or a tracked person's).

    Args:
      image: [H, W, 3] RGB uint8 (or float in [0, 255]).
      boxes: PersonBox per crop, in the order to keep them (best first).
      joint_set: JointSet or name in JOINT_SOURCES (h36m17, coco19, totalcapture16).
      camera: The view's camera, to crop the undistorted image (see `crop`); None to crop the
        raw image.
      kept: Poses already found in this image: a crop whose pose repeats one of them is dropped.

    Returns:
      One dict per crop whose pose presence reaches `min_presence` and whose joints are not
      those of a better crop (`duplicate_pose_distance`), in the order of `boxes`:
        joints2d: [J, 2] raw image pixels.
        scores: [J] per-joint visibility probabilities, 0 for a joint outside the image.
        heatmaps: [64, 64, J] float32 probabilities in crop heatmap pixels.
        crop_affine: [3, 3] image pixels (undistorted when `camera` is given) -> heatmap pixels.
        presence: pose presence probability.
        box: the PersonBox.
        next_box: the PersonBox of this person's crop in the next frame (from the landmark
          model's auxiliary points, as MediaPipe tracks a person without the detector).
    """
    image_height, image_width = _check_image(image).shape[:2]
    weights = joint_weights(joint_set)
    derived = np.count_nonzero(weights, axis=1) > 1
    kept = list(kept or [])
    results = []
    for box in boxes:
      crop_image, affine = self.crop(image, box, camera)
      out = self.run_landmarks(crop_image)
      if out["presence"] < self.min_presence:
        continue
      points = weights @ out["points"]  # [J, 2] heatmap pixels.
      peaks = out["heatmaps"].max(axis=(0, 1))  # [33]
      sources = weights > 0
      scores = np.where(sources, out["visibility"][None, :], np.inf).min(axis=1)
      heatmaps = out["heatmaps"] @ (weights * ~derived[:, None]).T  # Copies direct joints.
      grid = np.arange(HEATMAP_SIZE, dtype=np.float64)
      squared = ((grid[None, :, None] - points[:, 0]) ** 2
                 + (grid[:, None, None] - points[:, 1]) ** 2)  # [64, 64, J]
      gaussians = np.exp(-0.5 * squared / DERIVED_HEATMAP_SIGMA ** 2)
      height = np.where(sources, peaks[None, :], np.inf).min(axis=1)
      heatmaps = np.where(derived, gaussians * height, heatmaps).astype(np.float32)
      to_image = np.linalg.inv(affine)
      image_points = crops.apply_affine(to_image, points)
      roi_points = crops.apply_affine(to_image, out["roi_points"])
      if camera is not None:
        image_points = camera_lib.distort_points(camera, image_points)
        roi_points = camera_lib.distort_points(camera, roi_points)
      inside = np.all((image_points >= -0.5)
                      & (image_points <= [image_width - 0.5, image_height - 0.5]), axis=-1)
      scores = np.where(inside, scores, 0.0)
      if any(_is_duplicate_pose(image_points, other["joints2d"], other["box"],
                                self.duplicate_pose_distance) for other in kept + results):
        continue
      results.append({"joints2d": image_points, "scores": scores, "heatmaps": heatmaps,
                      "crop_affine": affine, "presence": out["presence"], "box": box,
                      "next_box": box_from_keypoints(roi_points, out["presence"])})
    return results


def box_from_keypoints(keypoints, score: float) -> PersonBox:
  """The PersonBox whose crop the two alignment keypoints define (`roi_from_keypoints`).

  Args:
    keypoints: [>= 2, 2] image pixels: body centre, then the point giving size and direction.
    score: The box's score.
  """
  keypoints = np.asarray(keypoints, np.float64)
  center, size, rotation = roi_from_keypoints(keypoints[0], keypoints[1])
  half = np.full(2, size / (2.0 * ROI_SCALE))
  corners = np.concatenate([center - half, center + half])
  return PersonBox(float(score), corners, keypoints, center, float(size), float(rotation))


def _is_duplicate_pose(joints2d, kept_joints2d, kept_box: PersonBox, distance: float) -> bool:
  """Whether a pose [J, 2] repeats a kept pose [J, 2]: median joint distance below `distance`
  times the kept body's half extent |k1 - k0| (its crop side / (2 ROI_SCALE))."""
  gaps = np.linalg.norm(np.asarray(joints2d) - np.asarray(kept_joints2d), axis=-1)
  return bool(np.median(gaps) < distance * kept_box.size / (2.0 * ROI_SCALE))


def _check_image(image) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
    raise ValueError(f"image has shape {image.shape}, expected [H, W, 3] RGB")
  return image
