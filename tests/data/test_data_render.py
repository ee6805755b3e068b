"""Tests of the ray-cast capsule renderer."""

import numpy as np
import pytest

from mf_tf.data import render, skeleton, world
from mf_tf.geometry import rigs


@pytest.fixture(scope="module")
def scene():
  rig = rigs.ring_rig(3, image_size=(480, 360), seed=2, volume_radius_mm=1000.0)
  frames = world.simulate_frames(rig, 6, seed=1, heatmap_size=32, return_heatmaps=False)
  images, labels = render.render_frames(rig, frames["joints3d"], 96, seed=0, return_labels=True)
  return rig, frames, images, labels


def test_visible_joints_land_on_body_pixels(scene):
  _, frames, images, labels = scene
  assert images.shape == (6, 3, 96, 96, 3) and images.dtype == np.uint8
  pixels = np.round(frames["joints2d"] * 96 / 32).astype(int)  # Heatmap px -> image px.
  visible = frames["visibility"] > 0
  frame, view, _ = np.nonzero(visible)
  rows, cols = pixels[visible][:, 1], pixels[visible][:, 0]
  on_body = labels[frame, view, rows, cols] >= 0
  assert visible.sum() > 100 and on_body.mean() >= 0.95


def test_body_colours_and_background_differ(scene):
  _, _, images, labels = scene
  body = images[labels >= 0].astype(float)
  assert 0.02 < (labels >= 0).mean() < 0.5  # The person covers part of the image.
  colours = render.capsule_colours()
  # Left and right limbs are told apart by colour.
  names = render.body_lib.H36M_BODY.names
  assert np.abs(colours[names.index("lthigh")] - colours[names.index("rthigh")]).sum() > 0.5
  assert body.std() > 10 and images[labels < 0].astype(float).std() > 10


def test_pixel_rays_reproject_to_their_pixels_with_distortion():
  camera = rigs.get_rig("panoptic_vga20").cameras[0]
  assert np.any(camera.dist != 0)
  rays = render.pixel_rays(camera, 16)
  points = camera.center + 3000.0 * rays
  uv, depth = camera.project(points)
  grid = np.arange(16)
  expected = np.stack(np.meshgrid(grid * camera.width / 16, grid * camera.height / 16), -1)
  assert np.all(depth > 0)
  np.testing.assert_allclose(uv, expected, atol=1e-3)


def test_z_buffer_nearest_capsule_wins():
  # Two parallel rods, the near one thicker: the middle pixel shows the near rod.
  rig = rigs.ring_rig(1, image_size=(200, 200), seed=0, jitter_mm=0.0, jitter_deg=0.0)
  camera = rig.cameras[0]
  pose = skeleton.sample_body_poses(np.random.default_rng(0), 1)[0] + [0.0, 0.0, 1000.0]
  rays = render.pixel_rays(camera, 64)
  image, labels = render.render_view(camera, pose, rays, np.zeros((64, 64, 3)))
  starts, ends = render.body_lib.H36M_BODY.segments(pose)
  for r, c in zip(*np.nonzero(labels >= 0)):
    ray = rays[r, c]
    hits = [render._ray_capsule(camera.center, ray[None], s, e, radius)[0]
            for s, e, radius in zip(starts, ends, render.body_lib.H36M_BODY.radii)]
    assert labels[r, c] == int(np.argmin(hits))


def test_render_is_deterministic(scene):
  rig, frames, images, _ = scene
  again = render.render_frames(rig, frames["joints3d"], 96, seed=0)
  other = render.render_frames(rig, frames["joints3d"], 96, seed=1)
  np.testing.assert_array_equal(images, again)
  assert np.abs(images.astype(int) - other).max() > 50
