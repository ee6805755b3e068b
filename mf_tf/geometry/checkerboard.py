"""Camera intrinsics from checkerboard images (Zhang's method, through OpenCV).

Zhang, "A flexible new technique for camera calibration" (PAMI 2000); Hartley & Zisserman 8.8
(the image of the absolute conic). `cv2.findChessboardCorners` + `cv2.cornerSubPix` find the
board's inner corners in every image; `cv2.calibrateCamera` fits K and the distortion
[k1, k2, p1, p2, k3] to all of them. Used by `--mode=calibrate` when the cameras' intrinsics are
not known from a calibration file (`config.calibrate.checkerboard`, one folder of images per
camera).

Conventions: pixels with the origin at the first pixel's centre (OpenCV's, as `Camera`), board
squares in millimetres (the intrinsics do not depend on them; the boards' poses, unused, would).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import cv2
import numpy as np

from mf_tf.geometry.camera import CalibrationError, Camera

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Sub-pixel corner refinement: a half-window of 11 px fits boards whose squares are >= ~25 px
# (smaller windows leave 0.1-0.2 px of the detector's bias); 30 steps or 1e-3 px.
SUBPIX_WINDOW = (11, 11)
SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
# Fewer boards than this leave the principal point and k3 barely constrained.
MIN_BOARDS = 3


@dataclasses.dataclass(frozen=True)
class CheckerboardResult:
  """Intrinsics of one camera fitted to its checkerboard images.

  Attributes:
    camera: The camera with the fitted K, dist, width and height; R = I, t = 0 (no extrinsics).
    rms_px: Root mean square reprojection error of all corners (px).
    images_used: The image files in which the whole board was found.
    images_rejected: The image files in which it was not.
  """

  camera: Camera
  rms_px: float
  images_used: tuple[str, ...]
  images_rejected: tuple[str, ...]


def parse_board(text: str) -> tuple[int, int]:
  """"4x7" -> (4, 7): the board's inner corners per row and per column."""
  parts = str(text).lower().replace(" ", "").split("x")
  if len(parts) != 2 or not all(part.isdigit() and int(part) >= 2 for part in parts):
    raise ValueError(f"checkerboard size {text!r}: expected COLSxROWS, the inner corners of the "
                     "board (e.g. 4x7 for a board of 5 x 8 squares)")
  return int(parts[0]), int(parts[1])


def board_points(board: tuple[int, int], square_mm: float) -> np.ndarray:
  """[cols * rows, 3] float32 corner positions on the board plane (z = 0), mm, row by row."""
  cols, rows = board
  grid = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2)
  return np.concatenate([grid * float(square_mm), np.zeros((len(grid), 1))], 1).astype(np.float32)


def find_corners(image: np.ndarray, board: tuple[int, int]) -> np.ndarray | None:
  """Inner corners of a checkerboard, refined to sub-pixel.

  Args:
    image: [H, W] or [H, W, 3] uint8 image (RGB or BGR: only the grey levels are used).
    board: (cols, rows) inner corners.

  Returns:
    [cols * rows, 2] float32 pixel positions in OpenCV's order, or None when the whole board is
    not found.
  """
  grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  flags = cv2.CALIB_CB_ADAPTIVE_THRESH + cv2.CALIB_CB_NORMALIZE_IMAGE + cv2.CALIB_CB_FAST_CHECK
  found, corners = cv2.findChessboardCorners(grey, tuple(board), flags=flags)
  if not found:
    return None
  corners = cv2.cornerSubPix(grey, corners, SUBPIX_WINDOW, (-1, -1), SUBPIX_CRITERIA)
  return corners.reshape(-1, 2)


def calibrate_intrinsics(image_paths: Sequence[str], board: tuple[int, int], square_mm: float,
                         name: str = "camera") -> CheckerboardResult:
  """K and distortion of one camera from images of a planar checkerboard (Zhang 2000).

  Args:
    image_paths: Image files of the board seen by this camera, all of the same size.
    board: (cols, rows) inner corners.
    square_mm: The side of one square (mm).
    name: The camera's name (for the result and the messages).

  Returns:
    CheckerboardResult.

  Raises:
    CalibrationError: images of different sizes, or the board found in fewer than MIN_BOARDS
      images (naming the camera, how many images were read and the board size looked for).
  """
  object_points = board_points(board, square_mm)
  used, rejected, corners, size = [], [], [], None
  for path in image_paths:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
      raise CalibrationError(f"camera {name}: checkerboard image {path!r} cannot be read")
    if size is not None and image.shape[::-1] != size:
      raise CalibrationError(f"camera {name}: checkerboard image {path!r} is "
                             f"{image.shape[1]}x{image.shape[0]}, the others {size[0]}x{size[1]}")
    size = image.shape[::-1]
    found = find_corners(image, board)
    (used if found is not None else rejected).append(str(path))
    if found is not None:
      corners.append(found)
  if len(corners) < MIN_BOARDS:
    raise CalibrationError(
        f"camera {name}: a {board[0]}x{board[1]} checkerboard (inner corners) found in "
        f"{len(corners)} of {len(image_paths)} images, expected at least {MIN_BOARDS}; check "
        "config.calibrate.board (inner corners, COLSxROWS) and the images")
  rms, K, dist, _, _ = cv2.calibrateCamera([object_points] * len(corners), corners, size, None,
                                           None)
  camera = Camera(name=name, K=K, R=np.eye(3), t=np.zeros(3), dist=np.ravel(dist)[:5],
                  width=int(size[0]), height=int(size[1]))
  return CheckerboardResult(camera, float(rms), tuple(used), tuple(rejected))


def calibrate_folder(folder: str, board: tuple[int, int], square_mm: float,
                     camera_names: Sequence[str] | None = None) -> dict[str, CheckerboardResult]:
  """Intrinsics of every camera from a folder with one subfolder of board images per camera.

  A subfolder belongs to a camera when its name is the camera's or contains it (Pose2Sim's
  `int_cam01_img` for camera `cam01`).

  Args:
    folder: The folder of per-camera subfolders.
    board: (cols, rows) inner corners.
    square_mm: The side of one square (mm).
    camera_names: The cameras to calibrate; None: every subfolder holding images, by its name.

  Returns:
    {camera: CheckerboardResult} in the order of `camera_names`.

  Raises:
    FileNotFoundError: no such folder. CalibrationError: a camera without a subfolder of
      images, or one whose images hold too few boards (see `calibrate_intrinsics`).
  """
  folder = os.path.expanduser(folder)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"checkerboard folder {folder!r} not found; expected one subfolder "
                            "of board images per camera")
  images = {}
  for entry in sorted(os.listdir(folder)):
    path = os.path.join(folder, entry)
    if os.path.isdir(path):
      files = sorted(os.path.join(path, f) for f in os.listdir(path)
                     if f.lower().endswith(IMAGE_EXTENSIONS))
      if files:
        images[entry] = files
  if camera_names is None:
    camera_names = list(images)
  chosen = {}
  for camera in camera_names:
    matches = [entry for entry in images if entry == camera] or [
        entry for entry in images if camera in entry]
    if len(matches) != 1:
      raise CalibrationError(
          f"camera {camera}: {len(matches)} subfolders of checkerboard images in {folder!r} "
          f"match its name ({matches or 'none'}; subfolders with images: {list(images)}); "
          "expected one per camera, named as the camera or containing its name")
    chosen[camera] = images[matches[0]]
  return {camera: calibrate_intrinsics(files, board, square_mm, camera)
          for camera, files in chosen.items()}
