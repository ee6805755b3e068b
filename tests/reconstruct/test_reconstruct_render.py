"""Overlays, the atomic mp4 writer and the 3D skeleton animation, checked on pixels."""

import os

import cv2
import numpy as np
import pytest

from mf_tf.data.joints import get_joint_set
from mf_tf.reconstruct import render

H36M = get_joint_set("h36m17")

# A standing h36m17 pose in world millimetres, z up, feet near z = 80 mm.
STANDING_MM = np.array([
    [0, 0, 900], [-100, 0, 900], [-100, 0, 500], [-100, 0, 80], [100, 0, 900], [100, 0, 500],
    [100, 0, 80], [0, 0, 1100], [0, 0, 1350], [0, 0, 1500], [0, 0, 1650], [180, 0, 1350],
    [350, 0, 1150], [450, 0, 950], [-180, 0, 1350], [-350, 0, 1150], [-450, 0, 950]], float)


def _walk(num_frames, step_mm=(20.0, 0.0, 0.0), offset_mm=(0.0, 0.0, 0.0)):
  steps = np.arange(num_frames)[:, None, None] * np.asarray(step_mm)
  return STANDING_MM[None] + np.asarray(offset_mm) + steps


def _no_temporaries(folder):
  return [name for name in os.listdir(folder) if ".tmp" in name]


# --- draw_people -----------------------------------------------------------------------------

def test_draw_people_colours_joints_and_limbs_only():
  image = np.full((120, 160, 3), 40, np.uint8)
  reprojected = np.array([[40.0, 60.0], [120.0, 60.0], [np.nan, np.nan]])
  joints2d = np.array([[40.0, 90.0], [np.nan, np.nan], [100.0, 100.0]])
  people = [{"label": 13, "joints2d": joints2d, "reprojected": reprojected}]
  limbs = [(0, 1), (1, 2), (2, 0)]
  drawn = render.draw_people(image, people, limbs, radius=3, thickness=2)
  color = render.person_color(13)
  assert color == render.PERSON_COLORS[3]
  np.testing.assert_array_equal(drawn[90, 40], color)  # A dot at a detection.
  np.testing.assert_array_equal(drawn[100, 100], color)
  np.testing.assert_array_equal(drawn[60, 80], color)  # The midpoint of limb (0, 1).
  np.testing.assert_array_equal(drawn[5, 150], image[5, 150])  # Far from everything.
  # Limbs (1, 2) and (2, 0) end at the NaN joint 2 and detection 1 is NaN: nothing is drawn
  # for them. Read as 0 (a common slip), they would put a dot at the top-left corner and lines
  # from it to (40, 60) and (120, 60).
  untouched = np.all(drawn == image, axis=-1)
  assert untouched[:25, :25].all()
  assert untouched[25:35, 60:70].all()  # Where the line (0, 0) -> (120, 60) would pass.
  assert not np.array_equal(drawn, image)
  assert np.array_equal(image, np.full((120, 160, 3), 40, np.uint8))  # Input left as it was.


def test_draw_people_writes_the_label_above_the_top_joint():
  image = np.zeros((200, 200, 3), np.uint8)
  people = [{"label": 2, "joints2d": None,
             "reprojected": np.array([[100.0, 120.0], [100.0, 180.0]])}]
  drawn = render.draw_people(image, people, [(0, 1)], radius=3, thickness=2)
  color = np.asarray(render.person_color(2))
  changed = np.any(drawn != 0, axis=-1)
  label_rows = np.nonzero(changed[:118].any(axis=1))[0]
  assert len(label_rows) and label_rows.max() < 118  # Text above the top joint at row 120.
  label = drawn[:118][changed[:118]]
  assert np.any(np.all(label == color, axis=-1))


def test_draw_people_rejects_bad_inputs():
  image = np.zeros((20, 20, 3), np.uint8)
  with pytest.raises(ValueError, match=r"image must be \[H, W, 3\] uint8.*\(20, 20\)"):
    render.draw_people(np.zeros((20, 20), np.uint8), [], [])
  with pytest.raises(ValueError, match=r"joints2d'\] must be \[J, 2\].*\(3,\)"):
    render.draw_people(image, [{"label": 0, "joints2d": np.zeros(3)}], [])
  with pytest.raises(ValueError, match=r"reprojected'\] must be \[2, 2\].*\(3, 2\)"):
    render.draw_people(image, [{"label": 0, "joints2d": np.zeros((2, 2)),
                                "reprojected": np.zeros((3, 2))}], [])
  with pytest.raises(ValueError, match=r"limbs name joints 0..5, expected .* 0..1"):
    render.draw_people(image, [{"label": 0, "joints2d": np.zeros((2, 2))}], [(0, 5)])


# --- VideoWriter -----------------------------------------------------------------------------

def _smooth_frame(index, height=96, width=128):
  v, u = np.mgrid[0:height, 0:width]
  red = 128 + 100 * np.sin(u / 17.0 + index / 3.0)
  green = 128 + 100 * np.cos(v / 13.0)
  blue = np.full_like(red, 60.0 + 10 * index)
  return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def test_video_writer_round_trip(tmp_path):
  path = tmp_path / "clip.mp4"
  frames = [_smooth_frame(i) for i in range(12)]
  with render.VideoWriter(path, 25, 128, 96) as video:
    for frame in frames:
      video.write(frame)
  assert video.frames_written == 12
  assert _no_temporaries(tmp_path) == []
  capture = cv2.VideoCapture(str(path))
  assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
  assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 128
  assert capture.get(cv2.CAP_PROP_FRAME_HEIGHT) == 96
  read = []
  while True:
    ok, bgr = capture.read()
    if not ok:
      break
    read.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
  capture.release()
  assert len(read) == 12
  for written, back in zip(frames, read):
    # Channel order kept (a BGR/RGB swap would move the sine from red to blue) and lossy
    # compression stays within a few grey levels on a smooth image.
    assert np.mean(np.abs(written.astype(float) - back)) < 10


def test_video_writer_exception_leaves_nothing(tmp_path):
  path = tmp_path / "broken.mp4"
  with pytest.raises(RuntimeError, match="boom"):
    with render.VideoWriter(path, 25, 64, 48) as video:
      video.write(np.zeros((48, 64, 3), np.uint8))
      raise RuntimeError("boom")
  assert not path.exists()
  assert os.listdir(tmp_path) == []



def test_video_writer_keeps_the_old_video_until_the_new_one_is_complete(tmp_path):
  path = tmp_path / "clip.mp4"
  with render.VideoWriter(path, 25, 64, 48) as video:
    video.write(np.zeros((48, 64, 3), np.uint8))
  old = path.read_bytes()
  with pytest.raises(RuntimeError, match="boom"):
    with render.VideoWriter(path, 25, 64, 48) as video:
      video.write(np.full((48, 64, 3), 255, np.uint8))
      assert path.read_bytes() == old  # The new frames go to a temporary beside it.
      raise RuntimeError("boom")
  assert path.read_bytes() == old
  aborted = render.VideoWriter(path, 25, 64, 48)
  aborted.write(np.full((48, 64, 3), 255, np.uint8))
  aborted.abort()
  assert path.read_bytes() == old and os.listdir(tmp_path) == ["clip.mp4"]

def test_video_writer_rejects_other_sizes_and_bad_paths(tmp_path):
  with render.VideoWriter(tmp_path / "a.mp4", 25, 64, 48) as video:
    video.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(64, 48, 3\).*expected \(48, 64, 3\)"):
      video.write(np.zeros((64, 48, 3), np.uint8))
  assert (tmp_path / "a.mp4").exists()
  blocker = tmp_path / "file"
  blocker.write_text("x")  # A file where a folder should be: nothing can be opened below it.
  with pytest.raises(OSError):
    render.VideoWriter(blocker / "b.mp4", 25, 64, 48)
  with pytest.raises(ValueError, match="fps must be .*got 0"):
    render.VideoWriter(tmp_path / "c.mp4", 0, 64, 48)


# --- skeleton animation ----------------------------------------------------------------------

@pytest.mark.parametrize("size", [(640, 480), (321, 241)])
def test_skeleton_renderer_draws_the_pose_where_it_projects(size):
  tracks = {1: _walk(3), 4: _walk(3, offset_mm=(0.0, 1500.0, 0.0))}
  renderer = render.SkeletonRenderer(tracks, H36M.limbs, up=(0, 0, 1), floor_joints=(3, 6),
                                     size=size)
  image = renderer.render(0)
  width, height = size
  assert image.shape == (height, width, 3) and image.dtype == np.uint8
  for label, offset in ((1, 0.0), (4, 1500.0)):
    color = np.asarray(render.person_color(label), float)
    # Middle of the spine limb (pelvis -> spine), and of the left thigh.
    for parent, child in ((0, 7), (4, 5)):
      middle = (STANDING_MM[parent] + STANDING_MM[child]) / 2 + [0.0, offset, 0.0]
      u, v = np.rint(renderer.project(middle[None])[0]).astype(int)
      window = image[v - 1:v + 2, u - 1:u + 2].reshape(-1, 3).astype(float)
      assert np.min(np.abs(window - color).sum(axis=1)) < 30, (label, parent, child, u, v)
  # The floor: the feet stand on the lowest ankle height, so their projection is inside.
  feet = renderer.project(STANDING_MM[[3, 6]])
  assert np.all((feet >= 0) & (feet < [width, height]))
  # Nowhere near a person: no person's colour.
  corner = image[-height // 12:, -width // 10:].reshape(-1, 3).astype(float)
  for label in tracks:
    assert np.min(np.abs(corner - render.person_color(label)).sum(axis=1)) > 30
  renderer.close()


def test_skeleton_renderer_up_axis_is_vertical():
  # The same pose in a Y-up world, (x, z, -y) of the Z-up one. The smallest turn taking +Y to +Z
  # is the quarter turn about x, (x, y, z) -> (x, -z, y), which gives the Z-up pose back: the
  # picture is the same pixel for pixel, head above the feet.
  y_up = STANDING_MM[:, [0, 2, 1]] * [1, 1, -1]
  z_up_image = render.SkeletonRenderer({0: STANDING_MM[None]}, H36M.limbs).render(0)
  renderer = render.SkeletonRenderer({0: y_up[None]}, H36M.limbs, up=(0, 1, 0))
  np.testing.assert_array_equal(renderer.render(0), z_up_image)
  head, ankle = renderer.project(y_up[[10, 3]])
  assert head[1] < ankle[1] - 100  # Image rows grow downwards.
  renderer.close()


def test_skeleton_animation_file(tmp_path):
  path = tmp_path / "people.mp4"
  tracks = {0: _walk(8, step_mm=(60.0, 0.0, 0.0)), 1: _walk(8, offset_mm=(0.0, 1500.0, 0.0))}
  tracks[1][3:5, 12] = np.nan  # A missing elbow must not break the drawing.
  render.write_skeleton_animation(path, tracks, H36M.limbs, 10, up=(0, 0, 1), size=(320, 240))
  assert _no_temporaries(tmp_path) == []
  capture = cv2.VideoCapture(str(path))
  frames = []
  while True:
    ok, bgr = capture.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
  capture.release()
  assert len(frames) == 8
  assert frames[0].shape == (240, 320, 3)
  blue = np.asarray(render.person_color(0), float)
  is_blue = np.abs(frames[0].astype(float) - blue).sum(axis=-1) < 60
  assert is_blue.sum() > 50  # Person 0 is drawn (not a blank frame).
  moved = np.mean(np.abs(frames[0].astype(float) - frames[-1]))
  assert moved > 0.5  # Person 0 walks 420 mm: the frames differ.


def test_skeleton_renderer_rejects_bad_tracks():
  with pytest.raises(ValueError, match="tracks is empty"):
    render.SkeletonRenderer({}, H36M.limbs)
  with pytest.raises(ValueError, match="same T and J"):
    render.SkeletonRenderer({0: _walk(3), 1: _walk(4)}, H36M.limbs)
  with pytest.raises(ValueError, match="no finite point"):
    render.SkeletonRenderer({0: np.full((2, 17, 3), np.nan)}, H36M.limbs)
