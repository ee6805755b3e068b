"""Cross-view association of 2D person detections: which detection in each view is which person.

Cost of a pair of detections (person a in view u, person b in view v): the mean symmetric
epipolar distance of their joints confident in both (score >= `min_score`), in undistorted
image pixels (Hartley & Zisserman 9.2; the joints are undistorted with each view's camera):

    cost(a, b) = mean_j 0.5 (d(x_b,j, F x_a,j) + d(x_a,j, F^T x_b,j))

with F the fundamental matrix of the pair (u -> v, `epipolar.fundamental_matrix`). Pairs with
fewer than `min_joints` shared confident joints cost infinity.

Left/right swaps: BlazePose sometimes labels a person's sides the wrong way round in one view (a
person seen from above or behind, taken as facing the camera). Such a detection still lies on the
epipolar lines of the other views' detections, but with its left joints on the right joints'
lines: on the 25 Panoptic demo frames, the dark-haired person of instant 00005514 is detected in
00_06 and 00_12 with pelvis, spine, thorax and nose within 1 px of each other's epipolar lines
and hips 39-42 px, shoulders 65-73 px off (mean cost 30.1 px: rejected); with the second view's
left and right exchanged the mean is 22.0 px. Given the joint set's `mirror` (left/right partner
of each joint), a pair costs the smaller of its two orderings, and each person records which of
its detections are mirrored (`Person.mirrored`) so that callers exchange their left and right
joints before fusing or triangulating them.

Clustering (greedy, average linkage): every cross-view pair with cost < `max_cost_px` is an edge;
edges are taken cheapest first, and an edge merges the two clusters of its ends when they hold
no view in common (each person is seen at most once per view, so each detection is used at most
once) and the mean cost over every cross-view pair of detections of the merged cluster stays
below `max_cost_px` (a chain of cheap edges cannot join two people). With a mirror, a merge
takes the relative orientation of the two clusters (one of them as labelled or mirrored) that
gives the smaller mean over the merged pairs, then mirrors single detections while that lowers
the mean (an earlier edge whose two orderings cost about the same does not decide it: on instant
00009348 the cheapest edge of the person in khaki shorts, 00_12-00_23, costs 18.0 px as
labelled and 15.1 px mirrored, yet the three views agree as labelled, 18.9 px against 27.5 px).
The cluster's reference orientation is the one most of its detections have (ties: the detection
with the highest mean joint score keeps its labels). Clusters seen by >= 2 views are the people;
a detection that matches no other view is left out.

Threshold: `max_cost_px` defaults to 30 px, for 1920 x 1080 views (about 1.5 % of the image
width; scale it with the image). On the 25 Panoptic demo frames the joints that BlazePose
estimates for one person reproject a median 10 px (90th percentile 41 px) from their DLT point
before fusion (benchmarks/video_real_frames.py), and a mean over 4+ joints stays well under 30 px;
on projected real Panoptic poses of 3 people (tests/models/test_models_association.py) the
closest pair of different people costs 50 px.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import epipolar
from mf_tf.geometry.rig import Rig

DEFAULT_MAX_COST_PX = 30.0
DEFAULT_MIN_SCORE = 0.5  # BlazePose visibility: below it a joint is a guess.
DEFAULT_MIN_JOINTS = 4  # Shared confident joints needed to compare two detections.


@dataclasses.dataclass(frozen=True)
class Person:
  """One person of `associate`.

  Attributes:
    members: {view: detection index}, >= 2 views, in view order.
    mirrored: {view: True where that detection's left and right joints must be exchanged (its
      joints[mirror]) to agree with the person's other detections}; all False without a mirror.
    cost: Mean cost over the comparable cross-view pairs of its detections, pixels.
  """

  members: dict[int, int]
  mirrored: dict[int, bool]
  cost: float


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
  distance = epipolar.symmetric_epipolar_distance(F, joints_source[:, None],
                                                 joints_target[None])
  shared = ((np.asarray(scores_source)[:, None] >= min_score)
            & (np.asarray(scores_target)[None] >= min_score) & np.isfinite(distance))
  count = shared.sum(-1)
  total = np.where(shared, distance, 0.0).sum(-1)
  return np.where(count >= min_joints, total / np.maximum(count, 1), np.inf)


def associate(joints2d: Sequence[np.ndarray], scores: Sequence[np.ndarray], rig: Rig, *,
              max_cost_px: float = DEFAULT_MAX_COST_PX, min_score: float = DEFAULT_MIN_SCORE,
              min_joints: int = DEFAULT_MIN_JOINTS,
              mirror: Sequence[int] | None = None) -> list[Person]:
  """Groups per-view detections into people seen by >= 2 views (see the module docstring).

  Args:
    joints2d: Per view, [N_v, J, 2] RAW image pixels of its N_v detections (N_v may be 0).
    scores: Per view, [N_v, J] joint confidences.
    rig: The calibrated rig, views in the same order.
    max_cost_px: Largest mean symmetric epipolar distance of one person, undistorted pixels.
    min_score: Joint confidence threshold.
    min_joints: Shared confident joints needed to compare two detections.
    mirror: [J] left/right partner of each joint (`JointSet.mirror`) to also compare each pair
      with one detection's sides exchanged; None compares the labels as given.

  Returns:
    One `Person` per person, every detection in at most one person; people with more views
    first, then by mean cost.
  """
  num_views = rig.num_views
  if len(joints2d) != num_views or len(scores) != num_views:
    raise ValueError(f"got detections for {len(joints2d)} views and scores for {len(scores)}, "
                     f"expected one entry per camera of rig {rig.name!r} ({num_views})")
  undistorted, scores = _undistorted_detections(joints2d, scores, rig)
  if mirror is not None:
    mirror = _checked_mirror(mirror, undistorted)
  costs, edges = _cross_view_costs(undistorted, scores, rig, max_cost_px=max_cost_px,
                                   min_score=min_score, min_joints=min_joints, mirror=mirror)
  clusters, flipped = _cluster(edges, costs, max_cost_px, with_mirror=mirror is not None)
  people = [_person(members, flipped, scores, costs)
            for members in clusters.values() if len(members) >= 2]
  people.sort(key=lambda person: (-len(person.members), person.cost))
  return people


def _undistorted_detections(joints2d, scores, rig: Rig) -> tuple[list, list]:
  """Each view's detections undistorted with its camera (`associate`'s inputs checked).

  Returns:
    undistorted: Per view, [N_v, J, 2] float64 undistorted pixels ([0, 1, 2] without detections).
    scores: Per view, [N_v, J] float64 confidences.
  """
  undistorted = []
  for view, (camera, points) in enumerate(zip(rig.cameras, joints2d)):
    points = np.asarray(points, np.float64)
    if points.size and (points.ndim != 3 or points.shape[-1] != 2):
      raise ValueError(f"view {view}: joints2d has shape {points.shape}, expected [N, J, 2]")
    points = points.reshape(-1, points.shape[-2] if points.ndim == 3 else 1, 2)
    flat = camera_lib.undistort_points(camera, points.reshape(-1, 2)) if points.size else points
    undistorted.append(np.asarray(flat).reshape(points.shape))
  scores = [np.asarray(values, np.float64).reshape(points.shape[:2])
            for values, points in zip(scores, undistorted)]
  return undistorted, scores


def _checked_mirror(mirror: Sequence[int], undistorted) -> np.ndarray:
  """[J] int64 left/right partners, checked to permute the detections' J joints."""
  mirror = np.asarray(mirror, np.int64)
  num_joints = {points.shape[1] for points in undistorted if len(points)} or {len(mirror)}
  if num_joints != {len(mirror)} or sorted(mirror.tolist()) != list(range(len(mirror))):
    raise ValueError(f"mirror {mirror.tolist()} is not a permutation of the detections' "
                     f"{sorted(num_joints)} joints (expected JointSet.mirror)")
  return mirror


def _cross_view_costs(undistorted, scores, rig: Rig, *, max_cost_px: float, min_score: float,
                      min_joints: int, mirror: np.ndarray | None) -> tuple[dict, list]:
  """Costs of every comparable cross-view pair of detections (`pair_costs`, both orderings).

  Returns:
    costs: {((view_u, a), (view_v, b)): (cost as labelled, cost with one side's labels
      mirrored)}, both key orders; mirrored costs are inf without a mirror.
    edges: [(cost, (view_u, a), (view_v, b))], u < v, the pairs whose cheaper ordering costs
      less than `max_cost_px`.
  """
  costs = {}
  edges = []
  for u in range(rig.num_views):
    for v in range(u + 1, rig.num_views):
      if not len(undistorted[u]) or not len(undistorted[v]):
        continue
      F = epipolar.fundamental_matrix(rig.cameras[u], rig.cameras[v])
      same = pair_costs(F, undistorted[u], scores[u], undistorted[v], scores[v],
                        min_score=min_score, min_joints=min_joints)
      swapped = np.full_like(same, np.inf) if mirror is None else pair_costs(
          F, undistorted[u], scores[u], undistorted[v][:, mirror], scores[v][:, mirror],
          min_score=min_score, min_joints=min_joints)
      for a, b in zip(*np.nonzero(np.isfinite(same) | np.isfinite(swapped))):
        pair = (float(same[a, b]), float(swapped[a, b]))
        costs[(u, int(a)), (v, int(b))] = costs[(v, int(b)), (u, int(a))] = pair
        if min(pair) < max_cost_px:
          edges.append((min(pair), (u, int(a)), (v, int(b))))
  return costs, edges


def _cluster(edges, costs, max_cost_px: float, *, with_mirror: bool) -> tuple[dict, dict]:
  """Greedy average-linkage clustering of the edges, cheapest first (the module docstring).

  Args:
    edges: `_cross_view_costs`'s edges.
    costs: `_cross_view_costs`'s costs.
    max_cost_px: Largest mean cost of a merged cluster.
    with_mirror: Whether the costs hold mirrored orderings (a cluster may join mirrored).

  Returns:
    clusters: {cluster id: {view: detection}}, singletons included.
    flipped: {(view, detection): labels mirrored relative to its cluster's reference}.
  """
  cluster_of = {}  # (view, detection) -> cluster id
  clusters: dict[int, dict[int, int]] = {}
  flipped = {}
  for _, first, second in sorted(edges):
    for node in (first, second):
      if node not in cluster_of:
        cluster_of[node] = len(cluster_of)  # A fresh id: ids only grow.
        clusters[cluster_of[node]] = {node[0]: node[1]}
        flipped[node] = False
    left, right = cluster_of[first], cluster_of[second]
    if left == right or set(clusters[left]) & set(clusters[right]):
      continue
    merged = {**clusters[left], **clusters[right]}
    # The right cluster joins as labelled or mirrored, whichever costs less over all the merged
    # pairs, then single detections change orientation while that lowers the mean: an earlier
    # edge whose two orderings cost about the same must not decide it.
    turns = (False, True) if with_mirror else (False,)
    candidates = [{node: flipped[node] ^ (turn and cluster_of[node] == right)
                   for node in merged.items()} for turn in turns]
    orientation = min(candidates, key=lambda candidate: _mean_cost(candidate, costs))
    if with_mirror:
      orientation = _refine_orientation(orientation, costs)
    if _mean_cost(orientation, costs) >= max_cost_px:
      continue
    clusters[left] = merged
    del clusters[right]
    flipped.update(orientation)
    for node in merged.items():
      cluster_of[node] = left
  return clusters, flipped


def _person(members: dict[int, int], flipped: dict, scores, costs) -> Person:
  """The Person of one cluster, in the orientation most of its detections have (ties: the
  detection with the highest mean joint score keeps its labels).

  Args:
    members: {view: detection} of the cluster.
    flipped: `_cluster`'s orientations.
    scores: Per view, [N_v, J] joint confidences.
    costs: `_cross_view_costs`'s costs.
  """
  orientation = {node: flipped[node] for node in members.items()}
  mirrored_count = sum(orientation.values())
  if 2 * mirrored_count > len(members) or (
      2 * mirrored_count == len(members)
      and orientation[max(members.items(), key=lambda n: scores[n[0]][n[1]].mean())]):
    orientation = {node: not value for node, value in orientation.items()}
  return Person(members=dict(sorted(members.items())),
                mirrored={view: orientation[view, index]
                          for view, index in sorted(members.items())},
                cost=_mean_cost(orientation, costs))


def _mean_cost(orientation: dict[tuple[int, int], bool], costs) -> float:
  """Mean cost over the comparable cross-view pairs of a cluster, each pair in the orientation
  of its two detections (pairs sharing too few confident joints in both orientations carry no
  evidence either way; in only the chosen one, they make the cluster infinitely costly).

  Args:
    orientation: {(view, detection): labels mirrored relative to the cluster's reference}.
    costs: {((view, detection), (view, detection)): (cost as labelled, cost mirrored)}.
  """
  nodes = sorted(orientation)
  values = [costs[nodes[i], nodes[k]][orientation[nodes[i]] ^ orientation[nodes[k]]]
            for i in range(len(nodes)) for k in range(i + 1, len(nodes))
            if (nodes[i], nodes[k]) in costs]
  return float(np.mean(values)) if values else np.inf


def _refine_orientation(orientation: dict[tuple[int, int], bool], costs) -> dict:
  """Mirrors single detections of a cluster while that lowers its mean cost (a local minimum;
  the reference is whichever detection stays put)."""
  orientation = dict(orientation)
  best = _mean_cost(orientation, costs)
  improved = True
  while improved:
    improved = False
    for node in sorted(orientation):
      trial = {**orientation, node: not orientation[node]}
      cost = _mean_cost(trial, costs)
      if cost < best - 1e-9:
        orientation, best, improved = trial, cost, True
  return orientation
