"""Things to look at: detections and reprojected skeletons over video frames, 3D skeleton movies.

Conventions:
  * Images are [H, W, 3] uint8 RGB (OpenCV's drawing functions take the colour tuple in the
    array's own channel order, so nothing here converts until the video encoder, which wants BGR).
  * Pixel coordinates are (u, v) = (column, row) with pixel centres at integers, as in
    `mf_tf.geometry.camera`; NaN marks a missing joint and nothing is drawn for it.
  * 3D positions are world millimetres, [T, J, 3] per person, NaN where missing.
  * One colour per person label: `PERSON_COLORS[label % 10]` (matplotlib's tab10 table), the same
    in the overlays and in the 3D animation.
"""

from __future__ import annotations

import importlib
import os

import cv2
import numpy as np

from mf_tf import files
from mf_tf.reconstruct.motion_files import rotation_to_axis

# matplotlib's "tab10" qualitative table, RGB 0-255: ten colours told apart at a glance.
PERSON_COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
_FAR_PX = 1e6  # Coordinates beyond this are dropped: OpenCV takes int32 points.


def person_color(label: int) -> tuple[int, int, int]:
  """The RGB colour (0-255) of person `label`; labels 10 apart share a colour."""
  return PERSON_COLORS[int(label) % len(PERSON_COLORS)]


def _points_or_none(value, num_joints: int | None, what: str) -> np.ndarray | None:
  """[J, 2] float64 pixel array (None stays None); checks the shape against num_joints."""
  if value is None:
    return None
  points = np.asarray(value, dtype=np.float64)
  if points.ndim != 2 or points.shape[1] != 2 or (num_joints is not None
                                                  and points.shape[0] != num_joints):
    expected = f"[{num_joints}, 2]" if num_joints is not None else "[J, 2]"
    raise ValueError(f"{what} must be {expected} pixels (u, v), got shape {points.shape}")
  return points


def draw_people(image, people, limbs, *, radius: int | None = None,
                thickness: int | None = None) -> np.ndarray:
  """Draws each person's fused 2D detections (dots) and reprojected 3D skeleton (lines).

  Returns a drawn copy; `image` is left as it was. A person's label is written above the
  top-most of its drawn points. Joints with NaN coordinates, and limbs with a NaN end, are not
  drawn.

  Args:
    image: [H, W, 3] uint8 RGB frame.
    people: Sequence of dicts, one per person:
      label: int person label (chooses the colour, `person_color`).
      joints2d: [J, 2] pixels, the 2D detections after fusion, or None; drawn as filled dots with
        a white rim (so they read apart from the skeleton of the same colour).
      reprojected: [J, 2] pixels, the 3D skeleton projected into this view, NaN where missing, or
        None; drawn as one line per limb.
    limbs: Sequence of (parent, child) joint index pairs, e.g. `JointSet.limbs`.
    radius: Dot radius in pixels; None scales with the image (3 px at 480 rows, 6 at 1080).
    thickness: Line width in pixels; None scales like `radius` (2 px at 480 rows, 3 at 1080).

  Returns:
    [H, W, 3] uint8 RGB, the frame with the people drawn on it.

  Raises:
    ValueError: if the image is not [H, W, 3] uint8, a person lacks a label, its arrays are not
      [J, 2], or a limb names a joint outside 0..J-1.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image must be [H, W, 3] uint8 RGB, got shape {image.shape} dtype "
                     f"{image.dtype}")
  canvas = np.ascontiguousarray(image).copy()
  height = canvas.shape[0]
  radius = max(2, round(height / 180)) if radius is None else int(radius)
  thickness = max(1, round(height / 360)) if thickness is None else int(thickness)
  limbs = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
  font_scale = max(0.5, height / 1080.0)
  for index, person in enumerate(people):
    if "label" not in person:
      raise ValueError(f"people[{index}] has keys {sorted(person)}, expected 'label', "
                       f"'joints2d' and 'reprojected'")
    color = person_color(person["label"])
    dots = _points_or_none(person.get("joints2d"), None, f"people[{index}]['joints2d']")
    lines = _points_or_none(person.get("reprojected"), None if dots is None else len(dots),
                            f"people[{index}]['reprojected']")
    num_joints = len(dots) if dots is not None else len(lines) if lines is not None else 0
    if len(limbs) and num_joints and (limbs.min() < 0 or limbs.max() >= num_joints):
      raise ValueError(f"limbs name joints {limbs.min()}..{limbs.max()}, expected indices in "
                       f"0..{num_joints - 1} for people[{index}]")
    drawn = []
    if lines is not None:
      valid = np.all(np.isfinite(lines) & (np.abs(lines) < _FAR_PX), axis=1)
      for parent, child in limbs:
        if valid[parent] and valid[child]:
          cv2.line(canvas, tuple(np.rint(lines[parent]).astype(int).tolist()),
                   tuple(np.rint(lines[child]).astype(int).tolist()), color, thickness)
      drawn.append(lines[valid])
    if dots is not None:
      valid = np.all(np.isfinite(dots) & (np.abs(dots) < _FAR_PX), axis=1)
      for point in np.rint(dots[valid]).astype(int).tolist():
        cv2.circle(canvas, tuple(point), radius + 1, (255, 255, 255), 1)
        cv2.circle(canvas, tuple(point), radius, color, -1)
      drawn.append(dots[valid])
    drawn = np.concatenate(drawn) if drawn else np.zeros((0, 2))
    if len(drawn):
      top = drawn[np.argmin(drawn[:, 1])]
      text = str(person["label"])
      (text_w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 2)
      origin = (int(round(top[0] - text_w / 2)), int(round(top[1] - 3 * radius - 4)))
      # A dark outline under the coloured text keeps it readable on any background.
      cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 4,
                  cv2.LINE_AA)
      cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, color, 2,
                  cv2.LINE_AA)
  return canvas


class VideoWriter:
  """Writes RGB frames to an mp4 (fourcc "mp4v") that appears only when complete.

  The frames go to a temporary file in the destination folder (`files.PendingFile`, the
  mechanism of `files.atomic_path`), renamed to `path` by `close()` (or on leaving the `with`
  block normally); an exception inside the block, or `abort()`, removes the temporary file and
  leaves an existing `path` as it was.

      with VideoWriter("overlay.mp4", 30, 1920, 1088) as video:
        for frame in frames:
          video.write(draw_people(frame, people, limbs))

  Args:
    path: Destination .mp4 file; its folder is created if missing.
    fps: Frames per second (> 0).
    width: Frame width in pixels.
    height: Frame height in pixels.

  Raises:
    ValueError: on fps <= 0 or a non-positive size.
    OSError: naming `path` when OpenCV cannot open an mp4 writer there.
  """

  def __init__(self, path, fps: float, width: int, height: int):
    if not np.isfinite(fps) or fps <= 0:
      raise ValueError(f"fps must be a finite number > 0 frames per second, got {fps!r}")
    if int(width) != width or int(height) != height or width < 1 or height < 1:
      raise ValueError(f"width and height must be positive integers, got {width!r} x {height!r}")
    self.path = os.fspath(path)
    self.fps = float(fps)
    self.width = int(width)
    self.height = int(height)
    self.frames_written = 0
    # The ".mp4" ending is what makes OpenCV pick the MP4 container.
    self._pending = files.PendingFile(self.path, suffix=".tmp.mp4")
    self._writer = cv2.VideoWriter(self._pending.temporary, cv2.VideoWriter_fourcc(*"mp4v"),
                                   self.fps, (self.width, self.height))
    if not self._writer.isOpened():
      self._writer.release()
      self._pending.discard()
      raise OSError(f"cannot open an mp4 video writer (fourcc mp4v, {self.width}x{self.height} "
                    f"at {self.fps:g} fps) for {self.path}")

  def __enter__(self) -> "VideoWriter":
    return self

  def __exit__(self, exc_type, exc, traceback) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()

  def write(self, image_rgb) -> None:
    """Appends one frame.

    Args:
      image_rgb: [height, width, 3] uint8 RGB.

    Raises:
      ValueError: if the frame has another size, channel count or dtype.
      RuntimeError: if the writer was already closed.
    """
    if self._writer is None:
      raise RuntimeError(f"video writer for {self.path} is already closed")
    image = np.asarray(image_rgb)
    if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
      raise ValueError(f"frame {self.frames_written} for {self.path} has shape {image.shape} "
                       f"dtype {image.dtype}, expected ({self.height}, {self.width}, 3) uint8 RGB")
    self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    self.frames_written += 1

  def close(self) -> str:
    """Finishes the file and renames it to `path`; returns `path`. Idempotent."""
    if self._writer is None:
      return self.path
    self._writer.release()
    self._writer = None
    if not os.path.getsize(self._pending.temporary):
      self._pending.discard()
      raise OSError(f"the mp4 writer for {self.path} produced an empty file "
                    f"({self.frames_written} frames written)")
    return self._pending.commit()

  def abort(self) -> None:
    """Stops writing and removes the temporary file; `path` is left as it was."""
    if self._writer is not None:
      self._writer.release()
      self._writer = None
    self._pending.discard()


class SkeletonRenderer:
  """Renders people's 3D skeletons with matplotlib's 3D axes, one reused figure for all frames.

  The axes are fixed over all frames (a cube around every finite point, so the aspect is
  equal), the floor is a grid at the lowest of `floor_joints` (the ankles, say) over all frames,
  and the world is turned so that `up` is vertical. The axes are drawn once; each frame restores
  that picture and draws only the people's lines over it (a few milliseconds at 640x480).
  People are drawn in label order, not sorted by depth.

  Args:
    tracks: {label: [T, J, 3] world millimetres, NaN where missing}; every track has the same T.
    limbs: Sequence of (parent, child) joint index pairs.
    up: [3] the world's up direction, drawn vertical; None draws world z vertical.
    size: (width, height) of the rendered frames in pixels.
    floor_joints: Joint indices whose lowest point over all frames sets the floor, e.g. the
      ankles (3, 6) of h36m17; None uses every joint.

  Raises:
    ValueError: on no tracks, tracks of different lengths or shapes, or no finite point at all.
  """

  def __init__(self, tracks, limbs, *, up=None, size=(640, 480), floor_joints=None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    importlib.import_module("mpl_toolkits.mplot3d")  # Registers the "3d" projection.

    if not tracks:
      raise ValueError("tracks is empty; expected {label: [T, J, 3] millimetres}")
    self.rotation = np.eye(3) if up is None else rotation_to_axis(up, (0.0, 0.0, 1.0))
    self.labels = list(tracks)
    arrays = [np.asarray(tracks[label], dtype=np.float64) for label in self.labels]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 3 or arrays[0].shape[2] != 3:
      raise ValueError(f"tracks must all be [T, J, 3] with the same T and J, got shapes "
                       f"{ {label: a.shape for label, a in zip(self.labels, arrays)} }")
    self.num_frames, num_joints = arrays[0].shape[:2]
    self.limbs = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
    if len(self.limbs) and (self.limbs.min() < 0 or self.limbs.max() >= num_joints):
      raise ValueError(f"limbs name joints {self.limbs.min()}..{self.limbs.max()}, expected "
                       f"indices in 0..{num_joints - 1}")
    self._tracks = [a @ self.rotation.T for a in arrays]  # Plot frame: z is up.
    every = np.concatenate([a.reshape(-1, 3) for a in self._tracks])
    every = every[np.all(np.isfinite(every), axis=1)]
    if not len(every):
      raise ValueError("tracks have no finite point in any frame; nothing to draw")
    joints = list(range(num_joints)) if floor_joints is None else list(floor_joints)
    floor_points = np.concatenate([a[:, joints, 2].reshape(-1) for a in self._tracks])
    floor_points = floor_points[np.isfinite(floor_points)]
    self.floor_mm = float(floor_points.min()) if len(floor_points) else float(every[:, 2].min())
    low, high = every.min(axis=0), every.max(axis=0)
    half = 0.55 * max(float(np.max(high - low)), high[2] - self.floor_mm, 1000.0)
    centre = (low + high) / 2
    self.limits = ((centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half),
                   (self.floor_mm, self.floor_mm + 2 * half))

    self.width, self.height = (int(s) for s in size)
    dpi = 100
    self.figure = Figure(figsize=(self.width / dpi, self.height / dpi), dpi=dpi,
                         facecolor="white")
    self.canvas = FigureCanvasAgg(self.figure)
    self.axes = self.figure.add_subplot(projection="3d")
    self.figure.subplots_adjust(left=0, right=1, bottom=0, top=1)
    axes = self.axes
    axes.set_xlim(*self.limits[0])
    axes.set_ylim(*self.limits[1])
    axes.set_zlim(*self.limits[2])
    axes.set_box_aspect((1, 1, 1))
    axes.set_xlabel("mm")
    axes.tick_params(labelsize=7)
    grid = np.linspace(self.limits[0][0], self.limits[0][1], 9)
    grid_y = np.linspace(self.limits[1][0], self.limits[1][1], 9)
    for x in grid:
      axes.plot([x, x], self.limits[1], [self.floor_mm] * 2, color="0.8", linewidth=0.8)
    for y in grid_y:
      axes.plot(self.limits[0], [y, y], [self.floor_mm] * 2, color="0.8", linewidth=0.8)
    self._bones, self._joints, self._texts = [], [], []
    for label in self.labels:
      color = np.asarray(person_color(label)) / 255.0
      self._bones.append(axes.plot([], [], [], color=color, linewidth=2.5,
                                   solid_capstyle="round")[0])
      self._joints.append(axes.plot([], [], [], linestyle="", marker="o", markersize=3,
                                    color=color)[0])
      self._texts.append(axes.text(0, 0, 0, str(label), color=color, fontsize=10,
                                   ha="center", va="bottom"))
    self._title = self.figure.text(0.02, 0.97, "", fontsize=9, va="top")
    self._moving = self._bones + self._joints + self._texts
    for artist in self._moving + [self._title]:
      artist.set_animated(True)  # Left out of full draws: only `render` draws them.
    # The view never changes, so the axes, ticks and floor are drawn once and restored per frame
    # (blitting); the full 3D axes draw is most of a frame's cost. The draw also fixes the
    # projection (axes.M) the moving artists use.
    self.canvas.draw()
    self._background = self.canvas.copy_from_bbox(self.figure.bbox)

  def render(self, frame: int, *, title: str | None = None) -> np.ndarray:
    """[height, width, 3] uint8 RGB picture of frame `frame` (0-based) of every track."""
    if not 0 <= frame < self.num_frames:
      raise ValueError(f"frame {frame} outside 0..{self.num_frames - 1}")
    for track, bones, joints, text in zip(self._tracks, self._bones, self._joints, self._texts):
      pose = track[frame]
      # One polyline per person: limb segments separated by NaN rows, which break the line.
      segments = np.full((len(self.limbs), 3, 3), np.nan)
      segments[:, 0], segments[:, 1] = pose[self.limbs[:, 0]], pose[self.limbs[:, 1]]
      segments = segments.reshape(-1, 3)
      bones.set_data_3d(segments[:, 0], segments[:, 1], segments[:, 2])
      valid = pose[np.all(np.isfinite(pose), axis=1)]
      joints.set_data_3d(valid[:, 0], valid[:, 1], valid[:, 2])
      text.set_visible(len(valid) > 0)
      if len(valid):
        top = valid[np.argmax(valid[:, 2])]
        text.set_position_3d((top[0], top[1], top[2] + 100.0))
    self._title.set_text(f"frame {frame}" if title is None else title)
    self.canvas.restore_region(self._background)
    for artist in self._moving:
      self.axes.draw_artist(artist)
    self.figure.draw_artist(self._title)
    rgb = cv2.cvtColor(np.asarray(self.canvas.buffer_rgba()), cv2.COLOR_RGBA2RGB)
    if rgb.shape[:2] != (self.height, self.width):  # Should inches * dpi ever round off.
      rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
    return rgb

  def project(self, points_mm) -> np.ndarray:
    """[N, 2] pixel (u, v) where world points [N, 3] mm appear in the last rendered frame."""
    from mpl_toolkits.mplot3d import proj3d

    points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3) @ self.rotation.T
    x, y, _ = proj3d.proj_transform(points[:, 0], points[:, 1], points[:, 2],
                                    self.axes.get_proj())
    display = self.axes.transData.transform(np.stack([x, y], axis=1))
    # Display coordinates are canvas pixels from the bottom-left corner (pixel centres at +0.5);
    # image rows count from the top, and `render` resizes the canvas to (width, height).
    canvas_width, canvas_height = self.canvas.get_width_height()
    u = display[:, 0] * (self.width / canvas_width) - 0.5
    v = (canvas_height - display[:, 1]) * (self.height / canvas_height) - 0.5
    return np.stack([u, v], axis=1)

  def close(self) -> None:
    """Releases the figure's memory."""
    self.figure.clear()


def write_skeleton_animation(path, tracks, limbs, fps, up=None, size=(640, 480), *,
                             floor_joints=None) -> str:
  """Writes an mp4 of people's 3D skeletons over time, for a person to look at.

  Args:
    path: Destination .mp4 file (atomic, see `VideoWriter`).
    tracks: {label: [T, J, 3] world millimetres, NaN where missing}, every track the same T.
    limbs: Sequence of (parent, child) joint index pairs.
    fps: Frames per second of the movie (> 0), normally the recording's.
    up: [3] the world's up direction, drawn vertical; None draws world z vertical.
    size: (width, height) in pixels.
    floor_joints: Joint indices whose lowest point sets the floor (the ankles); None: all joints.

  Returns:
    `path`.

  Raises:
    ValueError: on empty or inconsistent tracks, or fps <= 0.
  """
  renderer = SkeletonRenderer(tracks, limbs, up=up, size=size, floor_joints=floor_joints)
  try:
    with VideoWriter(path, fps, renderer.width, renderer.height) as video:
      for frame in range(renderer.num_frames):
        video.write(renderer.render(frame, title=f"frame {frame}  {frame / fps:.2f} s"))
  finally:
    renderer.close()
  return path
