"""Rendered images of the capsule body: ray casting with a z-buffer, numpy, vectorized over pixels.

An image of side S covers its camera's whole image, scaled anisotropically like the heatmaps:
image pixel (x, y) (x = column, y = row, centres at integers) looks along the ray of camera pixel
(u, v) = (x * width / S, y * height / S), undistorted, so a joint at heatmap / image px p
projects to image pixel p * S / heatmap_size.

- Body: every capsule of `body.H36M_BODY`, intersected analytically with each pixel's ray
  (cylinder plus end spheres), nearest hit wins. Colour per capsule (warm hues on the body's
  right, cool on its left, so left and right are distinguishable, as a person's clothing and face
  make them), shaded with a Lambert term towards the camera plus ambient light.
- Background: a checkered floor (500 mm tiles on the plane dot(up, X) = floor) and a striped wall
  beyond the horizon, with colours drawn per frame and per-pixel noise.

Capsules are culled to their projected bounding box, so the cost per frame is dominated by the
background, not by the body.
"""

from __future__ import annotations

import numpy as np

from mf_tf.data import body as body_lib
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import volume

# RGB in [0, 1] per capsule of H36M_BODY (same order).
_CAPSULE_COLOURS = {
    "pelvis": (0.45, 0.45, 0.50), "chest": (0.55, 0.55, 0.60),
    "rflank": (0.62, 0.50, 0.45), "lflank": (0.45, 0.50, 0.62),
    "rgirdle": (0.55, 0.40, 0.35), "lgirdle": (0.35, 0.40, 0.55),
    "rclavicle": (0.70, 0.55, 0.45), "lclavicle": (0.45, 0.55, 0.70),
    "neck": (0.85, 0.70, 0.60), "head": (0.92, 0.78, 0.66),
    "rthigh": (0.85, 0.25, 0.20), "rshank": (0.95, 0.55, 0.15),
    "lthigh": (0.20, 0.35, 0.85), "lshank": (0.15, 0.70, 0.90),
    "rupperarm": (0.90, 0.80, 0.15), "rforearm": (0.95, 0.40, 0.55),
    "lupperarm": (0.20, 0.75, 0.30), "lforearm": (0.55, 0.35, 0.85),
}
TILE_MM = 500.0
NOISE_STD = 0.03
_AMBIENT = 0.35


def capsule_colours(body: body_lib.BodyModel = body_lib.H36M_BODY) -> np.ndarray:
  """[C, 3] RGB in [0, 1] per capsule."""
  return np.asarray([_CAPSULE_COLOURS.get(name, (0.6, 0.6, 0.6)) for name in body.names])


def pixel_rays(camera, image_size: int) -> np.ndarray:
  """[S, S, 3] unit world directions of the rays through the pixel centres of an S x S image."""
  grid = np.arange(int(image_size), dtype=np.float64)
  u = grid * camera.width / image_size
  v = grid * camera.height / image_size
  uv = np.stack(np.meshgrid(u, v, indexing="xy"), axis=-1)  # [S, S, 2], [row, col]
  xy = (uv - camera.K[:2, 2]) @ np.linalg.inv(camera.K[:2, :2]).T
  xy = camera_lib.undistort_normalized(xy, camera.dist)
  directions = np.concatenate([xy, np.ones(xy.shape[:-1] + (1,))], axis=-1) @ camera.R
  return directions / np.linalg.norm(directions, axis=-1, keepdims=True)


def _ray_capsule(origin, directions, start, end, radius):
  """Distance along unit rays [M, 3] from `origin` to a capsule, inf where missed ([M])."""
  ba = end - start
  oa = origin - start
  baba = ba @ ba
  bard = directions @ ba
  baoa = ba @ oa
  rdoa = directions @ oa
  oaoa = oa @ oa
  a = baba - bard * bard
  b = baba * rdoa - baoa * bard
  c = baba * oaoa - baoa * baoa - radius * radius * baba
  h = b * b - a * c
  with np.errstate(invalid="ignore", divide="ignore"):
    t_side = (-b - np.sqrt(np.maximum(h, 0.0))) / np.where(np.abs(a) > 1e-12, a, 1e-12)
    y = baoa + t_side * bard
    side_hit = (h >= 0) & (y > 0) & (y < baba) & (np.abs(a) > 1e-12)
    # End spheres: the one on the side the cylinder hit (or the ray) fell off.
    cap_center = np.where((y <= 0)[:, None], start, end)
    oc = origin - cap_center
    b2 = np.sum(directions * oc, axis=-1)
    c2 = np.sum(oc * oc, axis=-1) - radius * radius
    h2 = b2 * b2 - c2
    t_cap = -b2 - np.sqrt(np.maximum(h2, 0.0))
  t = np.where(side_hit, t_side, np.where(h2 >= 0, t_cap, np.inf))
  return np.where(t > 0, t, np.inf)


def _capsule_normals(points, start, end):
  """Outward unit normals [M, 3] of a capsule at surface points [M, 3]."""
  ba = end - start
  h = np.clip(((points - start) @ ba) / max(ba @ ba, 1e-12), 0.0, 1.0)
  normal = points - start - h[:, None] * ba
  return normal / np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-9)


def _pixel_box(camera, start, end, radius, image_size):
  """(row0, row1, col0, col1) image-pixel bounds of a capsule's projection, padded."""
  points = np.stack([start, end])
  uv, depth = camera.project(points)
  if np.any(depth <= radius) or not np.all(np.isfinite(uv)):
    return 0, image_size, 0, image_size
  focal = max(camera.K[0, 0], camera.K[1, 1])
  pad = 1.3 * radius * focal / np.min(depth - radius) + 2.0
  scale = np.array([image_size / camera.width, image_size / camera.height])
  low = np.floor((uv.min(axis=0) - pad) * scale).astype(int)
  high = np.ceil((uv.max(axis=0) + pad) * scale).astype(int) + 1
  col0, row0 = np.clip(low, 0, image_size)
  col1, row1 = np.clip(high, 0, image_size)
  return row0, row1, col0, col1


def background(rays, camera_center, up, floor, rng: np.random.Generator,
               tile_mm: float = TILE_MM, noise_std: float = NOISE_STD) -> np.ndarray:
  """[S, S, 3] float in [0, 1]: checkered floor and striped wall with per-frame colours and noise.

  Args:
    rays: [S, S, 3] unit world ray directions of the view.
    camera_center: [3] world mm.
    up: [3] unit world up.
    floor: Floor height along `up`, mm.
    rng: Generator for colours and noise.
    tile_mm: Checker tile side, mm.
    noise_std: Per-pixel noise std (intensities in [0, 1]).
  """
  up = np.asarray(up, np.float64)
  helper = np.eye(3)[int(np.argmin(np.abs(up)))]
  first = np.cross(helper, up)
  first /= np.linalg.norm(first)
  second = np.cross(up, first)
  rise = rays @ up
  with np.errstate(divide="ignore", invalid="ignore"):
    t_floor = (floor - camera_center @ up) / rise
  on_floor = np.isfinite(t_floor) & (t_floor > 0)
  hit = camera_center + np.where(on_floor, t_floor, 0.0)[..., None] * rays
  checker = (np.floor(hit @ first / tile_mm) + np.floor(hit @ second / tile_mm)) % 2
  tiles = rng.uniform(0.15, 0.85, size=(2, 3))
  floor_rgb = np.where(checker[..., None] > 0, tiles[0], tiles[1])
  azimuth = np.arctan2(rays @ second, rays @ first)
  stripes = 0.85 + 0.15 * (np.floor(azimuth * 12.0 / np.pi) % 2)
  wall_rgb = rng.uniform(0.2, 0.9, size=3) * (stripes * (0.8 + 0.2 * rise))[..., None]
  image = np.where(on_floor[..., None], floor_rgb, wall_rgb)
  return image + rng.normal(0.0, noise_std, size=image.shape)


def render_view(camera, joints3d, rays, backdrop, body: body_lib.BodyModel = body_lib.H36M_BODY,
                colours=None):
  """Ray-casts one posed body into one view.

  Args:
    camera: Camera.
    joints3d: [J, 3] world mm (body.joint_set order).
    rays: [S, S, 3] unit ray directions (`pixel_rays`).
    backdrop: [S, S, 3] float background (`background`).
    body: Capsule model.
    colours: [C, 3] RGB per capsule (default `capsule_colours(body)`).

  Returns:
    image: [S, S, 3] float in [0, 1].
    labels: [S, S] int32 capsule index per pixel, -1 for background.
  """
  size = rays.shape[0]
  colours = capsule_colours(body) if colours is None else np.asarray(colours)
  origin = camera.center
  starts, ends = body.segments(joints3d)
  depth = np.full((size, size), np.inf)
  labels = np.full((size, size), -1, np.int32)
  shade = np.zeros((size, size))
  for index in range(body.num_capsules):
    start, end, radius = starts[index], ends[index], body.radii[index]
    row0, row1, col0, col1 = _pixel_box(camera, start, end, radius, size)
    if row1 <= row0 or col1 <= col0:
      continue
    window = rays[row0:row1, col0:col1].reshape(-1, 3)
    t = _ray_capsule(origin, window, start, end, radius)
    current = depth[row0:row1, col0:col1].reshape(-1)
    closer = t < current
    if not np.any(closer):
      continue
    points = origin + t[closer, None] * window[closer]
    lambert = np.maximum(0.0, -np.sum(_capsule_normals(points, start, end) * window[closer],
                                      axis=-1))
    current[closer] = t[closer]
    label_window = labels[row0:row1, col0:col1].reshape(-1)
    shade_window = shade[row0:row1, col0:col1].reshape(-1)
    label_window[closer] = index
    shade_window[closer] = _AMBIENT + (1.0 - _AMBIENT) * lambert
    depth[row0:row1, col0:col1] = current.reshape(row1 - row0, col1 - col0)
    labels[row0:row1, col0:col1] = label_window.reshape(row1 - row0, col1 - col0)
    shade[row0:row1, col0:col1] = shade_window.reshape(row1 - row0, col1 - col0)
  is_body = labels >= 0
  body_rgb = colours[np.maximum(labels, 0)] * shade[..., None]
  image = np.where(is_body[..., None], body_rgb, backdrop)
  return np.clip(image, 0.0, 1.0), labels


def render_frames(rig, joints3d, image_size: int, seed: int, up=None, floor=None,
                  return_labels: bool = False, tile_mm: float = TILE_MM,
                  noise_std: float = NOISE_STD):
  """Renders every frame in every view of a rig.

  Args:
    rig: Rig (V cameras).
    joints3d: [N, 17, 3] h36m17 joints, world mm.
    image_size: S.
    seed: Seed of the background colours, noise and body brightness.
    up: [3] world up (default `volume.up_vector(rig)`).
    floor: Floor height along up, mm (default: the rig's, else 80 mm below the lowest ankle).
    return_labels: Also return the per-pixel capsule labels.
    tile_mm: Floor checker tile side, mm.
    noise_std: Background noise std.

  Returns:
    images: [N, V, S, S, 3] uint8; with return_labels also labels [N, V, S, S] int32 (-1 for
    background).
  """
  joints3d = np.asarray(joints3d, np.float64)
  if joints3d.ndim != 3 or joints3d.shape[1:] != (body_lib.H36M_BODY.end_weights.shape[2], 3):
    raise ValueError(f"joints3d has shape {joints3d.shape}, expected [N, 17, 3] (h36m17)")
  size = int(image_size)
  up = volume.up_vector(rig) if up is None else np.asarray(up, np.float64)
  up = up / np.linalg.norm(up)
  if floor is None:
    floor = getattr(rig, "floor", None)
  if floor is None:
    floor = float(np.min(joints3d @ up)) - 80.0 if len(joints3d) else 0.0
  rng = np.random.default_rng(seed)
  rays = [pixel_rays(camera, size) for camera in rig.cameras]
  colours = capsule_colours()
  images = np.zeros((len(joints3d), rig.num_views, size, size, 3), np.uint8)
  labels = np.zeros((len(joints3d), rig.num_views, size, size), np.int32) if return_labels else None
  for frame, pose in enumerate(joints3d):
    brightness = rng.uniform(0.8, 1.15)
    for view, camera in enumerate(rig.cameras):
      backdrop = background(rays[view], camera.center, up, floor, rng, tile_mm, noise_std)
      image, label = render_view(camera, pose, rays[view], backdrop, colours=colours * brightness)
      images[frame, view] = np.round(image * 255.0).astype(np.uint8)
      if return_labels:
        labels[frame, view] = label
  return (images, labels) if return_labels else images
