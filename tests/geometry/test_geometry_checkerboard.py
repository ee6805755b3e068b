"""Checkerboard intrinsics: a rendered board with known K, and the Pose2Sim demo's real images."""

import os
import pathlib

import cv2
import numpy as np
import pytest

from mf_tf.geometry import calibration_formats
from mf_tf.geometry import checkerboard
from mf_tf.geometry.camera import CalibrationError

K = np.array([[800.0, 0, 330], [0, 800, 235], [0, 0, 1]])
SIZE = (640, 480)
BOARD = (6, 4)  # Inner corners: 7 x 5 squares.
SQUARE_MM = 40
POSE2SIM_INTRINSICS = pathlib.Path(__file__).parents[3] / "shared" / "data" / "pose2sim" / (
    "Demo_SinglePerson/calibration/intrinsics")


def _render(rotvec, t) -> np.ndarray:
  """A 7 x 5 board of SQUARE_MM squares seen by K from pose (rotvec, t mm): [480, 640] uint8."""
  pixels_per_mm = 4
  cols, rows = BOARD[0] + 1, BOARD[1] + 1
  texture = np.kron((np.add.outer(np.arange(rows + 2), np.arange(cols + 2)) % 2 == 0),
                    np.ones((SQUARE_MM * pixels_per_mm,) * 2, np.uint8))
  texture = np.where(texture > 0, 30, 225).astype(np.uint8)
  texture[:int(SQUARE_MM * pixels_per_mm)] = 225  # A white margin around the squares.
  texture[-int(SQUARE_MM * pixels_per_mm):] = 225
  texture[:, :int(SQUARE_MM * pixels_per_mm)] = 225
  texture[:, -int(SQUARE_MM * pixels_per_mm):] = 225
  R, _ = cv2.Rodrigues(np.asarray(rotvec, np.float64))
  # Texture pixel (u, v) -> board mm (u / ppm - square, v / ppm - square, 0) -> image.
  to_board = np.array([[1 / pixels_per_mm, 0, -SQUARE_MM], [0, 1 / pixels_per_mm, -SQUARE_MM],
                       [0, 0, 1]])
  homography = K @ np.c_[R[:, :2], t] @ to_board
  return cv2.warpPerspective(texture, homography, SIZE, flags=cv2.INTER_AREA, borderValue=128)


@pytest.fixture(scope="module")
def board_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp("boards")
  (folder / "int_cam01_img").mkdir()
  poses = [((0.3, 0.1, 0.05), (-100, -60, 600)), ((-0.3, 0.2, -0.1), (-120, -50, 650)),
           ((0.1, -0.35, 0.2), (-90, -80, 620)), ((0.25, 0.3, 0.0), (-130, -40, 700)),
           ((-0.2, -0.25, 0.3), (-60, -90, 640))]
  for k, (rotvec, t) in enumerate(poses):
    cv2.imwrite(str(folder / "int_cam01_img" / f"board_{k}.png"), _render(rotvec, t))
  return folder


def test_rendered_board_gives_the_known_intrinsics(board_folder):
  results = checkerboard.calibrate_folder(str(board_folder), BOARD, SQUARE_MM, ["cam01"])
  result = results["cam01"]
  assert len(result.images_used) == 5
  assert result.rms_px < 0.5
  np.testing.assert_allclose(np.diag(result.camera.K)[:2], [800, 800], rtol=0.01)
  np.testing.assert_allclose(result.camera.K[:2, 2], [330, 235], atol=5)
  assert (result.camera.width, result.camera.height) == SIZE


def test_folder_without_boards_is_named(tmp_path):
  (tmp_path / "cam01").mkdir()
  for k in range(3):
    cv2.imwrite(str(tmp_path / "cam01" / f"{k}.png"), np.full((120, 160), 128, np.uint8))
  with pytest.raises(CalibrationError, match=r"camera cam01: a 6x4 checkerboard .* found in 0 of 3"):
    checkerboard.calibrate_folder(str(tmp_path), BOARD, SQUARE_MM, ["cam01"])
  with pytest.raises(CalibrationError, match="camera cam02: 0 subfolders"):
    checkerboard.calibrate_folder(str(tmp_path), BOARD, SQUARE_MM, ["cam02"])
  with pytest.raises(ValueError, match="expected COLSxROWS"):
    checkerboard.parse_board("4by7")


@pytest.mark.large
@pytest.mark.skipif(not POSE2SIM_INTRINSICS.is_dir(), reason="Pose2Sim demo data not present")
def test_pose2sim_boards_against_qualisys(repo_root):
  reference = calibration_formats.read_calibration(os.path.join(
      repo_root, "tests", "fixtures", "pose2sim_multiperson", "calibration", "Calib.qca.txt"))
  results = checkerboard.calibrate_folder(str(POSE2SIM_INTRINSICS), (4, 7), 60.0,
                                          reference.camera_names)
  for camera in reference.cameras:
    estimated = results[camera.name].camera
    # Focal within 1.5% (measured -0.6 .. +1.0%), principal point within 50 px (measured 15-42
    # px: 6 boards per camera constrain it loosely).
    np.testing.assert_allclose(np.diag(estimated.K)[:2], np.diag(camera.K)[:2], rtol=0.015)
    assert np.abs(estimated.K[:2, 2] - camera.K[:2, 2]).max() < 50
