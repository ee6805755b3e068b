"""The synthetic multi-camera world: the embedded default data source.

One frame is one person standing in a rig's capture volume:

  skeleton.sample_poses (calibrated kinematic skeleton, random angles, yaw and position)
    -> per view: distorted projection to heatmap px and visibility from the capsule body
    -> detector.sample_detections (compact state) -> detector.render_heatmaps (TF)
    -> optionally render.render_images (z-buffered capsules over a textured background).

Everything is a function of (rig, num_frames, seed, parameters): equal arguments give equal arrays.

Head size (used by the JDR metric, threshold = head_size / 2): per frame and view, the projected
length in heatmap px of a segment of `HEAD_SIZE_MM` (the chin-to-crown height of the calibrated
head, twice the h36m nose-to-head bone, ~230 mm) held at the head joint perpendicular to the
viewing ray: HEAD_SIZE_MM * sqrt(fx_h * fy_h) / depth(head), where fx_h, fy_h are the camera's
focal lengths in heatmap px (K scaled by heatmap_size / image side). At Panoptic VGA distances
(3-4 m) and 64 px heatmaps that is 6-9 px (median ~7), a JDR threshold of ~3.5 px.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mf_tf.data import body as body_lib
from mf_tf.data import detector as detector_lib
from mf_tf.data import joints as joints_lib
from mf_tf.data import render as render_lib
from mf_tf.data import skeleton as skeleton_lib
from mf_tf.data.detector import DetectorParams
from mf_tf.geometry import volume

# The modes turn their config's detector section into DetectorParams through this module.
detector_params_from_config = detector_lib.detector_params_from_config

HEAD_SIZE_MM = float(2.0 * skeleton_lib.BONE_LENGTHS_MM[joints_lib.H36M17.index("head")])
_RENDER_CHUNK = 256  # Frames per TF call when rendering heatmaps for a whole batch.

# Joint sets the world can emit: the simulated skeleton is h36m17; others are exact subsets.
SUPPORTED_JOINT_SETS = ("h36m17", "totalcapture16")


def rig_volume(rig):
  """Capture volume of a rig for pose sampling.

  Returns:
    center [3] mm, half_extent [3] mm, up [3] unit vector, floor (mm along up: the rig's
    stored floor, else the volume's lowest face).
  """
  center, half = volume.capture_volume(rig)
  up = volume.up_vector(rig)
  floor = getattr(rig, "floor", None)
  if floor is None:
    floor = float(center @ up - half @ np.abs(up))
  return center, half, up, float(floor)


def head_sizes(rig, head_points, heatmap_size: int) -> np.ndarray:
  """Head size per frame and view in heatmap px (see the module docstring).

  Args:
    rig: Rig with V cameras.
    head_points: [N, 3] head joint positions, world mm.
    heatmap_size: Heatmap side in px.

  Returns:
    [N, V] float32; 0 where the head is behind the camera.
  """
  sizes = []
  for camera in rig.cameras:
    depth = camera.world_to_camera(head_points)[..., 2]
    focal = np.sqrt(camera.K[0, 0] * heatmap_size / camera.width
                    * camera.K[1, 1] * heatmap_size / camera.height)
    sizes.append(np.where(depth > 1e-6, HEAD_SIZE_MM * focal / np.maximum(depth, 1e-6), 0.0))
  return np.stack(sizes, axis=1).astype(np.float32)


def project_to_heatmap(rig, joints3d, heatmap_size: int) -> np.ndarray:
  """[N, J, 3] world mm -> [N, V, J, 2] heatmap px (distorted projection, whole image)."""
  out = []
  for camera in rig.cameras:
    uv, _ = camera.project(joints3d)
    out.append(uv * np.array([heatmap_size / camera.width, heatmap_size / camera.height]))
  return np.stack(out, axis=1)


# Compiled heatmap renderers per static (heatmap_size, sigma, noise_level): a trace cache.
_RENDER_FUNCTIONS = {}


def _heatmap_renderer(heatmap_size: int, sigma: float, noise_level: float):
  key = (int(heatmap_size), float(sigma), float(noise_level))
  if key not in _RENDER_FUNCTIONS:
    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, None, 2], tf.float32),
        tf.TensorSpec([None, None, None, None], tf.float32),
        tf.TensorSpec([None], tf.int64)])
    def render(peaks, amplitudes, noise_seed):
      return detector_lib.render_heatmaps(peaks, amplitudes, key[0], key[1], key[2], noise_seed)
    _RENDER_FUNCTIONS[key] = render
  return _RENDER_FUNCTIONS[key]


def render_detector_heatmaps(peaks, amplitudes, noise_seed, heatmap_size: int,
                             params: DetectorParams) -> np.ndarray:
  """Renders a batch of frames' detector heatmaps in chunks.

  Args:
    peaks: [N, V, J, P, 2]; amplitudes: [N, V, J, P]; noise_seed: [N].
    heatmap_size: H = W.
    params: DetectorParams already scaled to `heatmap_size`.

  Returns:
    [N, V, H, W, J] float32 numpy.
  """
  render = _heatmap_renderer(heatmap_size, params.sigma, params.noise_level)
  num_frames, num_views, num_joints = peaks.shape[:3]
  out = np.empty((num_frames, num_views, heatmap_size, heatmap_size, num_joints), np.float32)
  for start in range(0, num_frames, _RENDER_CHUNK):
    stop = min(start + _RENDER_CHUNK, num_frames)
    out[start:stop] = render(tf.constant(peaks[start:stop]), tf.constant(amplitudes[start:stop]),
                             tf.constant(noise_seed[start:stop])).numpy()
  return out


def simulate_frames(rig, num_frames: int, seed: int, joint_set="h36m17", heatmap_size: int = 64,
                    detector_params: DetectorParams | None = None, render_images: bool = False,
                    image_size: int = 256, return_heatmaps: bool = True,
                    render_options: dict | None = None) -> dict:
  """Simulates frames of one person seen by a rig.

  Args:
    rig: mf_tf.geometry.rig.Rig (V cameras).
    num_frames: N.
    seed: Seed of every random draw (poses, detector, noise, textures).
    joint_set: "h36m17" (simulated) or "totalcapture16" (its subset); a JointSet is accepted.
    heatmap_size: Heatmap side H = W in px; each heatmap covers its camera's whole image.
    detector_params: DetectorParams in 64 px units (scaled to `heatmap_size` here); None:
      defaults.
    render_images: Also render images of the capsule body.
    image_size: Rendered image side S in px.
    return_heatmaps: Render the detector heatmaps (else only the compact state is returned).
    render_options: Extra keyword arguments of `render.render_frames` (tile_mm, noise_std),
      e.g. `dict(config.render)`.

  Returns:
    dict of numpy arrays:
      "joints3d" [N, J, 3] float32 world mm;
      "joints2d" [N, V, J, 2] float32 true projections (with distortion) in heatmap px;
      "visibility" [N, V, J] float32 {0, 1} (in front, inside the image, not self-occluded);
      "peaks" [N, V, J, P, 2] float32, "amplitudes" [N, V, J, P] float32, "noise_seed" [N]
        int64: the compact detector state (render with `detector.render_heatmaps` using
        `detector_params.scaled(heatmap_size)`);
      "head_size" [N, V] float32 head size in heatmap px (module docstring);
      "heatmaps" [N, V, H, W, J] float32 if return_heatmaps;
      "images" [N, V, S, S, 3] uint8 if render_images.
  """
  target = joints_lib.get_joint_set(joint_set)
  if target.name not in SUPPORTED_JOINT_SETS:
    raise ValueError(f"the synthetic world emits joint sets {SUPPORTED_JOINT_SETS}, "
                     f"got {target.name!r}")
  if int(num_frames) < 0 or int(heatmap_size) < 3:
    raise ValueError(f"num_frames={num_frames}, heatmap_size={heatmap_size}: expected "
                     "num_frames >= 0 and heatmap_size >= 3")
  params = (detector_params or DetectorParams()).scaled(heatmap_size)
  rng = np.random.default_rng(seed)
  center, half, up, floor = rig_volume(rig)
  joints3d = skeleton_lib.sample_poses(rng, int(num_frames), center, half, up, floor)
  visibility = np.stack([body_lib.visibility(camera, joints3d) for camera in rig.cameras],
                        axis=1)
  joints2d = project_to_heatmap(rig, joints3d, heatmap_size)
  head = head_sizes(rig, joints3d[:, joints_lib.H36M17.index("head")], heatmap_size)
  if target.name != "h36m17":
    source_indices, target_indices = joints_lib.index_map("h36m17", target)
    order = source_indices[np.argsort(target_indices)]
    joints3d_out, joints2d, visibility = (
        joints3d[:, order], joints2d[:, :, order], visibility[:, :, order])
  else:
    joints3d_out = joints3d
  detections = detector_lib.sample_detections(rng, joints2d, visibility, target, params)
  out = {
      "joints3d": joints3d_out.astype(np.float32),
      "joints2d": joints2d.astype(np.float32),
      "visibility": visibility.astype(np.float32),
      "head_size": head,
      **detections,
  }
  if return_heatmaps:
    out["heatmaps"] = render_detector_heatmaps(
        detections["peaks"], detections["amplitudes"], detections["noise_seed"], heatmap_size,
        params)
  if render_images:
    out["images"] = render_lib.render_frames(
        rig, joints3d, image_size, seed=int(rng.integers(0, 2**31 - 1)),
        up=up, floor=floor, **(render_options or {}))
  return out
