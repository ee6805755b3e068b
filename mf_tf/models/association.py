"""Cross-view association of 2D person detections: which detection in each view is which person.

Cost of a pair of detections (person a in view u, person b in view v): the mean symmetric
epipolar distance of their joints confident in both (score >= `min_score`), in undistorted
image pixels (Hartley & Zisserman 9.2; the joints are undistorted with each view's camera):

    cost(a, b) = mean_j 0.5 (d(x_b,j, F x_a,j) + d(x_a,j, F^T x_b,j))

with F the fundamental matrix of the pair (u -> v, `epipolar.fundamental_matrix`). Pairs with
fewer than `min_joints` shared confident joints cost infinity.

Clustering (greedy, average linkage): every cross-view pair with cost < `max_cost_px` is an edge;
edges are taken cheapest first, and an edge merges the two clusters of its ends when they hold
no view in common (each person is seen at most once per view, so each detection is used at most
once) and the mean cost over every cross-view pair of detections of the merged cluster stays
below `max_cost_px` (a chain of cheap edges cannot join two people). Clusters seen by >= 2 views
are the people; a detection that matches no other view is left out.

Threshold: `max_cost_px` defaults to 30 px, for 1920 x 1080 views (about 1.5 % of the image
width; scale it with the image). On the 25 Panoptic demo frames the joints that BlazePose
estimates for one person reproject a median 10 px (90th percentile 41 px) from their DLT point
before fusion (benchmarks/video_real_frames.py), and a mean over 4+ joints stays well under 30 px;
on projected real Panoptic poses of 3 people (tests/models/test_models_association.py) the
closest pair of different people costs 50 px.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import epipolar
from mf_tf.geometry.rig import Rig

DEFAULT_MAX_COST_PX = 30.0
DEFAULT_MIN_SCORE = 0.5  # BlazePose visibility: below it a joint is a guess.
DEFAULT_MIN_JOINTS = 4  # Shared confident joints needed to compare two detections.


def symmetric_epipolar_distance(F, points_source, points_target) -> np.ndarray:
  """Mean of the two point-to-epipolar-line distances, elementwise over joints.

  Args:
    F: [3, 3] x_target^T F x_source = 0 (undistorted pixels).
    points_source: [..., 2] undistorted source pixels.
    points_target: [..., 2] undistorted target pixels (broadcast with points_source).

  Returns:
    [...] pixels.
  """
  in_target = epipolar.epipolar_lines(F, points_source)
  in_source = epipolar.epipolar_lines(np.swapaxes(F, -1, -2), points_target)
  return 0.5 * (epipolar.point_line_distance(points_target, in_target)
                + epipolar.point_line_distance(points_source, in_source))


def pair_costs(F, joints_source, scores_source, joints_target, scores_target, *,
               min_score: float = DEFAULT_MIN_SCORE,
               min_joints: int = DEFAULT_MIN_JOINTS) -> np.ndarray:
  """Cost of every (source detection, target detection) of one view pair.

  Args:
    F: [3, 3] fundamental matrix source -> target.
    joints_source: [A, J, 2] undistorted pixels of the A source detections.
    scores_source: [A, J] joint confidences.
    joints_target: [B, J, 2] undistorted pixels.
    scores_target: [B, J].
    min_score: Joints below it in either view are not compared.
    min_joints: Fewer shared confident joints give an infinite cost.

  Returns:
    [A, B] mean symmetric epipolar distance in pixels (inf where not comparable).
  """
  joints_source = np.asarray(joints_source, np.float64)
  joints_target = np.asarray(joints_target, np.float64)
  distance = symmetric_epipolar_distance(F, joints_source[:, None], joints_target[None])
  shared = ((np.asarray(scores_source)[:, None] >= min_score)
            & (np.asarray(scores_target)[None] >= min_score) & np.isfinite(distance))
  count = shared.sum(-1)
  total = np.where(shared, distance, 0.0).sum(-1)
  return np.where(count >= min_joints, total / np.maximum(count, 1), np.inf)


def associate(joints2d: Sequence[np.ndarray], scores: Sequence[np.ndarray], rig: Rig, *,
              max_cost_px: float = DEFAULT_MAX_COST_PX, min_score: float = DEFAULT_MIN_SCORE,
              min_joints: int = DEFAULT_MIN_JOINTS) -> list[dict[int, int]]:
  """Groups per-view detections into people seen by >= 2 views (see the module docstring).

  Args:
    joints2d: Per view, [N_v, J, 2] RAW image pixels of its N_v detections (N_v may be 0).
    scores: Per view, [N_v, J] joint confidences.
    rig: The calibrated rig, views in the same order.
    max_cost_px: Largest mean symmetric epipolar distance of one person, undistorted pixels.
    min_score: Joint confidence threshold.
    min_joints: Shared confident joints needed to compare two detections.

  Returns:
    One dict per person {view: detection index}, >= 2 views each, every detection in at most
    one person; people with more views first, then by mean cost.
  """
  num_views = rig.num_views
  if len(joints2d) != num_views or len(scores) != num_views:
    raise ValueError(f"got detections for {len(joints2d)} views and scores for {len(scores)}, "
                     f"expected one entry per camera of rig {rig.name!r} ({num_views})")
  undistorted = []
  for view, (camera, points) in enumerate(zip(rig.cameras, joints2d)):
    points = np.asarray(points, np.float64)
    if points.size and (points.ndim != 3 or points.shape[-1] != 2):
      raise ValueError(f"view {view}: joints2d has shape {points.shape}, expected [N, J, 2]")
    points = points.reshape(-1, points.shape[-2] if points.ndim == 3 else 1, 2)
    flat = camera_lib.undistort_points(camera, points.reshape(-1, 2)) if points.size else points
    undistorted.append(np.asarray(flat).reshape(points.shape))
  # Edges: (cost, (view_u, a), (view_v, b)), u < v.
  costs = {}
  edges = []
  for u in range(num_views):
    for v in range(u + 1, num_views):
      if not len(undistorted[u]) or not len(undistorted[v]):
        continue
      F = epipolar.fundamental_matrix(rig.cameras[u], rig.cameras[v])
      matrix = pair_costs(F, undistorted[u], scores[u], undistorted[v], scores[v],
                          min_score=min_score, min_joints=min_joints)
      for a, b in zip(*np.nonzero(np.isfinite(matrix))):
        costs[(u, int(a)), (v, int(b))] = costs[(v, int(b)), (u, int(a))] = float(matrix[a, b])
        if matrix[a, b] < max_cost_px:
          edges.append((float(matrix[a, b]), (u, int(a)), (v, int(b))))
  cluster_of = {}  # (view, detection) -> cluster id
  clusters: dict[int, dict[int, int]] = {}
  for _, first, second in sorted(edges):
    for node in (first, second):
      if node not in cluster_of:
        cluster_of[node] = len(cluster_of)  # A fresh id: ids only grow.
        clusters[cluster_of[node]] = {node[0]: node[1]}
    left, right = cluster_of[first], cluster_of[second]
    if left == right or set(clusters[left]) & set(clusters[right]):
      continue
    merged = {**clusters[left], **clusters[right]}
    if _mean_cost(merged, costs) >= max_cost_px:
      continue
    clusters[left] = merged
    del clusters[right]
    for node in merged.items():
      cluster_of[node] = left
  people = [members for members in clusters.values() if len(members) >= 2]
  people.sort(key=lambda members: (-len(members), _mean_cost(members, costs)))
  return [dict(sorted(members.items())) for members in people]


def _mean_cost(members: dict[int, int], costs) -> float:
  """Mean cost over the comparable cross-view pairs of a cluster (pairs sharing too few
  confident joints carry no evidence either way)."""
  nodes = sorted(members.items())
  values = [costs[nodes[i], nodes[k]] for i in range(len(nodes))
            for k in range(i + 1, len(nodes)) if (nodes[i], nodes[k]) in costs]
  return float(np.mean(values)) if values else np.inf
