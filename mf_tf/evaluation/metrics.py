"""2D and 3D pose metrics: joint detection rate (JDR) and MPJPE.

JDR (MetaFuse section 5.1, after Amin et al. 2013 and CrossView, Qiu et al. 2019): a joint is
detected when the distance between its estimated and ground-truth 2D locations is below half the
head size; the rate is the percentage of detected joints. MPJPE: mean Euclidean distance between
estimated and ground-truth 3D joints in millimetres, with no alignment (no root centring, no
Procrustes).

Head size, per data source (all in heatmap pixels, the unit of every 2D metric here):
  * Synthetic world (mf_tf/data/world.py): the frames' "head_size" field [N, V], the projected
    length of a `world.HEAD_SIZE_MM` (~230 mm, chin to crown) segment held at the 3D head joint
    perpendicular to the viewing ray: HEAD_SIZE_MM * sqrt(fx_h * fy_h) / depth(head), with the
    focal lengths scaled to heatmap pixels.
  * Human3.6M, CrossView protocol: a fixed 25.6 px at 256 px person-crop input, i.e. one tenth
    of the heatmap side (`crossview_head_size(heatmap_size)`: 6.4 px at 64). The constant is
    defined for person crops and is used only where heatmaps are person crops as in CrossView.
  * CMU Panoptic, Total Capture, and Human3.6M with whole-image heatmaps (the mf_tf
    convention): no head box is annotated, so the head size is the synthetic world's
    definition applied to the 3D head (`projected_head_size`): h36m17 / totalcapture16 "head"
    joint; coco19 has no head top, so the mean of its ears (the point `joints.convert_joints`
    maps to h36m17 "head"). One definition for every 3D-labelled source keeps JDR comparable
    across them.
"""

from __future__ import annotations

import numpy as np

from mf_tf.data import world

# CrossView's Human3.6M JDR threshold: head size 25.6 px at 256 px input (= 0.1 of the side).
CROSSVIEW_HEAD_SIZE_FRACTION = 25.6 / 256.0

def crossview_head_size(heatmap_size: int) -> float:
  """CrossView's fixed Human3.6M head size (25.6 px at 256 px input) in heatmap pixels."""
  return float(heatmap_size) * CROSSVIEW_HEAD_SIZE_FRACTION


def projected_head_size(head_points, rig, heatmap_size: int) -> np.ndarray:
  """Head size of 3D-labelled frames per view, the synthetic world's definition.

  Args:
    head_points: [N, 3] 3D head point in world millimetres (see the module docstring).
    rig: `Rig` whose cameras the heatmaps cover.
    heatmap_size: Heatmap side H = W in pixels.

  Returns:
    [N, V] float64 heatmap pixels; NaN where the head is behind a camera (such a view does not
    count in `jdr`).
  """

  head_points = np.asarray(head_points, np.float64)
  if head_points.ndim != 2 or head_points.shape[-1] != 3:
    raise ValueError(f"head_points has shape {head_points.shape}, expected [N, 3]")
  sizes = world.head_sizes(rig, head_points, heatmap_size).astype(np.float64)
  return np.where(sizes > 0, sizes, np.nan)


def _check_points(name, array, shape_text, ndim, last):
  array = np.asarray(array, np.float64)
  if array.ndim != ndim or array.shape[-1] != last:
    raise ValueError(f"{name} has shape {array.shape}, expected {shape_text}")
  return array


def _valid_mask(valid, gt, shape, name):
  finite = np.all(np.isfinite(gt), axis=-1)
  if valid is None:
    return finite
  valid = np.asarray(valid)
  if valid.shape != shape:
    raise ValueError(f"{name} has shape {valid.shape}, expected {shape}")
  return finite & (valid > 0)


def detections(pred2d, gt2d, head_size, valid=None):
  """Per-joint detection flags for JDR.

  Args:
    pred2d: [N, V, J, 2] estimated 2D joints (heatmap pixels).
    gt2d: [N, V, J, 2] ground-truth 2D joints (same units).
    head_size: Scalar, [N, V] or [N, V, J] head size (same units); threshold is half of it.
    valid: Optional [N, V, J]; > 0 where the joint counts. Non-finite ground truth never counts.

  Returns:
    (detected, valid): two [N, V, J] bool arrays; detected is False wherever valid is False.
  """
  pred2d = _check_points("pred2d", pred2d, "[N, V, J, 2]", 4, 2)
  gt2d = _check_points("gt2d", gt2d, "[N, V, J, 2]", 4, 2)
  if pred2d.shape != gt2d.shape:
    raise ValueError(f"pred2d has shape {pred2d.shape} but gt2d has shape {gt2d.shape}")
  mask = _valid_mask(valid, gt2d, gt2d.shape[:-1], "valid")
  head_size = np.asarray(head_size, np.float64)
  if head_size.ndim == 2:
    head_size = head_size[..., None]
  try:
    threshold = np.broadcast_to(0.5 * head_size, mask.shape)
  except ValueError:
    raise ValueError(
        f"head_size has shape {np.shape(head_size)}, expected a scalar, [N, V] or [N, V, J] "
        f"for joints of shape {gt2d.shape[:-1]}") from None
  mask &= np.isfinite(threshold)
  error = np.linalg.norm(pred2d - gt2d, axis=-1)
  # A non-finite estimate is a miss, not a skipped joint.
  detected = mask & np.isfinite(error) & (np.nan_to_num(error, nan=np.inf) < threshold)
  return detected, mask


def _percent(detected, mask, axis):
  count = mask.sum(axis=axis)
  hits = (detected & mask).sum(axis=axis)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, 100.0 * hits / np.maximum(count, 1), np.nan)


def jdr(pred2d, gt2d, head_size, valid=None) -> dict:
  """Joint detection rate, per joint and averaged over joints.

  Args:
    pred2d: [N, V, J, 2] estimated 2D joints (heatmap pixels).
    gt2d: [N, V, J, 2] ground-truth 2D joints.
    head_size: Scalar, [N, V] or [N, V, J] head size; a joint is detected when its error is
      strictly below half the head size.
    valid: Optional [N, V, J]; > 0 where the joint counts (e.g. inside the image).

  Returns:
    dict with "per_joint": [J] float64 percent over all frames and views (NaN for a joint with
    no valid sample), "mean": float, the mean of the per-joint rates over joints that have
    samples (the paper's average over joints), "count": [J] int number of valid samples.
  """
  detected, mask = detections(pred2d, gt2d, head_size, valid)
  per_joint = _percent(detected, mask, axis=(0, 1))
  mean = float(np.nanmean(per_joint)) if np.any(np.isfinite(per_joint)) else float("nan")
  return {"per_joint": per_joint, "mean": mean, "count": mask.sum(axis=(0, 1))}


def jdr_split(pred2d, gt2d, head_size, visibility, valid=None) -> dict:
  """JDR of visible and of occluded joints separately.

  Occluded joints are rare for some joints, so each rate pools every valid (frame, view, joint)
  sample of its kind rather than averaging per-joint rates.

  Args:
    pred2d, gt2d, head_size, valid: as in `jdr`.
    visibility: [N, V, J]; > 0 for a visible joint, <= 0 for an occluded one.

  Returns:
    dict with "visible" and "occluded" (float percent, NaN when there is no such sample) and
    "visible_count", "occluded_count" (int).
  """
  detected, mask = detections(pred2d, gt2d, head_size, valid)
  visibility = np.asarray(visibility)
  if visibility.shape != mask.shape:
    raise ValueError(f"visibility has shape {visibility.shape}, expected {mask.shape}")
  visible = mask & (visibility > 0)
  occluded = mask & ~(visibility > 0)
  return {
      "visible": float(_percent(detected, visible, axis=None)),
      "occluded": float(_percent(detected, occluded, axis=None)),
      "visible_count": int(visible.sum()),
      "occluded_count": int(occluded.sum()),
  }


def mpjpe_per_joint(pred3d, gt3d, valid=None) -> np.ndarray:
  """Mean per-joint position error of each joint, no alignment.

  Args:
    pred3d: [N, J, 3] estimated 3D joints in millimetres.
    gt3d: [N, J, 3] ground-truth 3D joints in millimetres.
    valid: Optional [N, J]; > 0 where the joint counts. Non-finite ground truth never counts.

  Returns:
    [J] float64 millimetres (NaN for a joint with no valid sample). A non-finite estimate of a
    valid joint makes its joint's error NaN rather than being skipped.
  """
  pred3d = _check_points("pred3d", pred3d, "[N, J, 3]", 3, 3)
  gt3d = _check_points("gt3d", gt3d, "[N, J, 3]", 3, 3)
  if pred3d.shape != gt3d.shape:
    raise ValueError(f"pred3d has shape {pred3d.shape} but gt3d has shape {gt3d.shape}")
  mask = _valid_mask(valid, gt3d, gt3d.shape[:-1], "valid")
  error = np.linalg.norm(pred3d - gt3d, axis=-1)
  total = np.where(mask, error, 0.0).sum(axis=0)
  count = mask.sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mpjpe(pred3d, gt3d, valid=None) -> float:
  """Mean per-joint position error in millimetres over all valid joints, no alignment.

  Args:
    pred3d: [N, J, 3] estimated 3D joints in millimetres.
    gt3d: [N, J, 3] ground-truth 3D joints in millimetres.
    valid: Optional [N, J]; > 0 where the joint counts.

  Returns:
    The mean over every valid (frame, joint) of ||pred - gt||; NaN when nothing is valid or a
    valid estimate is non-finite.
  """
  pred3d = _check_points("pred3d", pred3d, "[N, J, 3]", 3, 3)
  gt3d = _check_points("gt3d", gt3d, "[N, J, 3]", 3, 3)
  if pred3d.shape != gt3d.shape:
    raise ValueError(f"pred3d has shape {pred3d.shape} but gt3d has shape {gt3d.shape}")
  mask = _valid_mask(valid, gt3d, gt3d.shape[:-1], "valid")
  if not mask.any():
    return float("nan")
  error = np.linalg.norm(pred3d - gt3d, axis=-1)
  return float(error[mask].mean())
