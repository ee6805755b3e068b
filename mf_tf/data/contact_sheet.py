"""A PNG contact sheet of one multi-view frame (matplotlib, Agg backend).

Per view, two panels side by side:

  left   the rendered image (or a grey canvas when the dataset has no images) with the limb
         skeleton, the projected joints (filled green dots: visible; red crosses: occluded or
         outside), and the chosen joint: a star in the source view, and in every other view the
         epipolar line of the source view's observation of that joint (yellow, dashed), which
         must pass through that view's own star;
  right  the initial (detector) heatmaps, maximum over joints, with the chosen joint's true
         position (cyan ring) and the same epipolar line.

Epipolar lines come from `mf_tf.geometry.epipolar` (x_target^T F x_source = 0 on undistorted
pixels): the source observation is undistorted first, and the line is drawn in the target's
undistorted pixel frame (a sub-pixel difference at these scales for the built-in rigs).
"""

from __future__ import annotations

import dataclasses
import io
import math

import matplotlib

matplotlib.use("Agg")  # No display; must precede pyplot.
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import patheffects  # noqa: E402
import numpy as np  # noqa: E402

from mf_tf import files  # noqa: E402
from mf_tf.data import joints as joints_lib  # noqa: E402
from mf_tf.geometry import camera as camera_lib  # noqa: E402
from mf_tf.geometry import epipolar  # noqa: E402

PANEL_INCHES = 2.6
TITLE_INCHES = 0.8
DPI = 100
VIEWS_PER_ROW = 3
_OUTLINE = [patheffects.withStroke(linewidth=2.6, foreground="black", alpha=0.7)]


def _per_row(shown: int) -> int:
  return 2 if shown == 4 else min(VIEWS_PER_ROW, shown)


def layout(num_views: int, max_views: int = 9) -> tuple[int, int, int, int]:
  """(shown views, grid rows, width px, height px) of a sheet; the size is exact."""
  shown = max(1, min(int(num_views), int(max_views)))
  per_row = _per_row(shown)
  rows = math.ceil(shown / per_row)
  width = int(round(2 * per_row * PANEL_INCHES * DPI))
  height = int(round((rows * PANEL_INCHES + TITLE_INCHES) * DPI))
  return shown, rows, width, height


def _clip_line(line, width, height):
  """Endpoints of a*x + b*y + c = 0 inside [-0.5, width - 0.5] x [-0.5, height - 0.5], or None."""
  a, b, c = line
  x0, x1, y0, y1 = -0.5, width - 0.5, -0.5, height - 0.5
  points = []
  if abs(b) > 1e-12:
    for x in (x0, x1):
      y = -(a * x + c) / b
      if y0 <= y <= y1:
        points.append((x, y))
  if abs(a) > 1e-12:
    for y in (y0, y1):
      x = -(b * y + c) / a
      if x0 <= x <= x1:
        points.append((x, y))
  if len(points) < 2:
    return None
  points = np.asarray(points)
  far = np.argmax(np.linalg.norm(points - points[0], axis=1))
  return points[[0, far]]


@dataclasses.dataclass(frozen=True)
class _Arrays:
  """One frame's arrays as drawn.

  Attributes:
    joints2d: [V, J, 2] float64 heatmap px.
    visibility: [V, J] bool.
    heatmaps: [V, H, W, J] float32 initial heatmaps.
    images: [V, S, S, 3] uint8, or None (a grey canvas of side H is drawn).
    head_size: [V] heatmap px, or None.
    size: H = W.
    side: S, the image panels' side in px (H without images).
  """

  joints2d: np.ndarray
  visibility: np.ndarray
  heatmaps: np.ndarray
  images: np.ndarray | None
  head_size: np.ndarray | None
  size: int
  side: int


def _arrays(frame: dict, heatmap_size: int) -> _Arrays:
  images = frame.get("images")
  images = None if images is None else np.asarray(images)
  head_size = frame.get("head_size")
  size = int(heatmap_size)
  return _Arrays(joints2d=np.asarray(frame["joints2d"], np.float64),
                 visibility=np.asarray(frame["visibility"]) > 0,
                 heatmaps=np.asarray(frame["heatmaps"], np.float32), images=images,
                 head_size=None if head_size is None else np.asarray(head_size), size=size,
                 side=size if images is None else int(images.shape[1]))


def _epipolar_lines(rig, source_view: int, observation, size: int, views) -> dict:
  """{view: [3] line (a, b, c)} in each of `views` but the source, in the view's undistorted
  image pixels, of the source view's `observation` [2] (heatmap px, undistorted first)."""
  source_camera = rig.cameras[source_view]
  to_image = np.array([source_camera.width / size, source_camera.height / size])
  observed = camera_lib.undistort_points(source_camera, observation * to_image)
  lines = {}
  for view in views:
    if view != source_view:
      F = epipolar.fundamental_matrix(source_camera, rig.cameras[view])
      lines[view] = epipolar.epipolar_lines(F, observed)
  return lines


def _figure(title: str, rows: int, per_row: int, width_px: int, height_px: int):
  """(figure, grid) of `rows` x `per_row` (image, heatmap) panel pairs under `title`."""
  fig = plt.figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
  top = 1.0 - TITLE_INCHES * DPI / height_px
  grid = fig.add_gridspec(rows, 2 * per_row, left=0.01, right=0.99, bottom=0.01, top=top,
                          wspace=0.04, hspace=0.16)
  fig.suptitle(title, fontsize=11,
               x=0.01, ha="left", y=1.0 - 0.1 * TITLE_INCHES * DPI / height_px, va="top")
  return fig, grid


def _draw_image(ax, arrays: _Arrays, view: int, joint_set, chosen: int, joint: str) -> list:
  """The image panel's content; returns the legend handles (visible, occluded, chosen joint)."""
  side = arrays.side
  extent = (-0.5, side - 0.5, side - 0.5, -0.5)
  if arrays.images is not None:
    ax.imshow(arrays.images[view], extent=extent, interpolation="bilinear")
  else:
    ax.imshow(np.full((2, 2, 3), 0.35), extent=extent)
  points = arrays.joints2d[view] * (side / arrays.size)
  for parent, child in joint_set.limbs:  # White bones with a dark outline: any background.
    ax.plot(points[[parent, child], 0], points[[parent, child], 1], "-",
            color="white", lw=1.2, path_effects=_OUTLINE)
  seen = arrays.visibility[view]
  h_vis = ax.scatter(points[seen, 0], points[seen, 1], s=14, c="#2ecc40",
                     edgecolors="black", linewidths=0.4, zorder=3, label="visible")
  h_occ = ax.scatter(points[~seen, 0], points[~seen, 1], s=26, c="#ff4136",
                     marker="x", linewidths=1.4, zorder=3, label="occluded / outside",
                     path_effects=_OUTLINE)
  h_star = ax.scatter(points[chosen, 0], points[chosen, 1], s=110, marker="*",
                      c="yellow", edgecolors="black", linewidths=0.6, zorder=4,
                      label=f"{joint}")
  return [h_vis, h_occ, h_star]


def _draw_heatmaps(ax, arrays: _Arrays, view: int, chosen: int) -> None:
  """The heatmap panel's content: maximum over joints and the chosen joint's true position."""
  size, heatmaps = arrays.size, arrays.heatmaps[view]
  ax.imshow(heatmaps.max(axis=-1), extent=(-0.5, size - 0.5, size - 0.5, -0.5),
            cmap="magma", vmin=0.0, vmax=max(1.0, float(heatmaps.max())),
            interpolation="nearest")
  ax.scatter(arrays.joints2d[view, chosen, 0], arrays.joints2d[view, chosen, 1], s=60,
             facecolors="none", edgecolors="cyan", linewidths=1.2, zorder=4)


def _draw_line(image_ax, heat_ax, line, camera, arrays: _Arrays):
  """The epipolar line in both panels; returns its image-panel handle, or None when the line
  misses the image."""
  ends = _clip_line(line, camera.width, camera.height)
  if ends is None:
    return None
  for ax, factor in ((image_ax, arrays.side), (heat_ax, arrays.size)):
    ax.plot(ends[:, 0] * factor / camera.width, ends[:, 1] * factor / camera.height, "--",
            color="yellow", lw=1.3, zorder=2, path_effects=_OUTLINE)
  return image_ax.lines[-1]


def _label_panels(image_ax, heat_ax, arrays: _Arrays, view: int, camera, role: str) -> None:
  """Pixel-exact limits, no ticks, and the two panel titles."""
  for ax, limit in ((image_ax, arrays.side), (heat_ax, arrays.size)):
    ax.set_xlim(-0.5, limit - 0.5)
    ax.set_ylim(limit - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
  seen = arrays.visibility[view]
  head = "" if arrays.head_size is None else f", head {float(arrays.head_size[view]):.1f}px"
  image_ax.set_title(f"view {view} {camera.name} ({role})", fontsize=8, pad=2)
  heat_ax.set_title(f"heatmaps max over J, {int(seen.sum())}/{seen.size} visible{head}",
                    fontsize=7, pad=2)


def _write_png(fig, path: str) -> None:
  """Renders `fig` in memory, then writes it whole (a failed save keeps the old file)."""
  buffer = io.BytesIO()
  try:
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
  finally:
    plt.close(fig)
  files.write_atomic(path, buffer.getvalue())


def make_contact_sheet(path: str, rig, joint_set, frame: dict, heatmap_size: int,
                       joint: str = "lwrist", source_view: int = 0, max_views: int = 9,
                       title: str = "") -> tuple[int, int]:
  """Draws one frame's contact sheet and writes it as PNG.

  Args:
    path: Output .png path.
    rig: The frame's Rig (V cameras).
    joint_set: JointSet or name (J joints).
    frame: One frame's arrays: "joints2d" [V, J, 2] heatmap px, "visibility" [V, J],
      "heatmaps" [V, H, W, J] initial heatmaps, optional "images" [V, S, S, 3] uint8 and
      "head_size" [V] heatmap px.
    heatmap_size: H = W.
    joint: Name of the joint whose epipolar lines are drawn.
    source_view: View whose observation of `joint` defines the lines.
    max_views: Views drawn (the first ones of the rig).
    title: Figure title.

  Returns:
    (width, height) of the PNG in pixels (equal to `layout(...)[2:]`).
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  chosen = joint_set.index(joint)
  num_views = rig.num_views
  if not 0 <= source_view < num_views:
    raise ValueError(f"source_view={source_view}, expected 0..{num_views - 1}")
  arrays = _arrays(frame, heatmap_size)
  shown, rows, width_px, height_px = layout(num_views, max_views)
  views = list(range(shown))
  if source_view not in views:
    views[-1] = source_view
  per_row = _per_row(shown)
  lines = _epipolar_lines(rig, source_view, arrays.joints2d[source_view, chosen], arrays.size,
                          views)
  title = title or (f"{rig.name}: {num_views} views, {joint_set.name}; epipolar lines of "
                    f"'{joint}' from view {source_view} ({rig.cameras[source_view].name})")
  if shown < num_views:
    title += f"  [showing {shown} of {num_views} views]"
  fig, grid = _figure(title, rows, per_row, width_px, height_px)
  legend_handles = None
  for slot, view in enumerate(views):
    row, col = divmod(slot, per_row)
    camera = rig.cameras[view]
    image_ax = fig.add_subplot(grid[row, 2 * col])
    heat_ax = fig.add_subplot(grid[row, 2 * col + 1])
    handles = _draw_image(image_ax, arrays, view, joint_set, chosen, joint)
    _draw_heatmaps(heat_ax, arrays, view, chosen)
    h_line = None
    if view in lines:
      h_line = _draw_line(image_ax, heat_ax, lines[view], camera, arrays)
    _label_panels(image_ax, heat_ax, arrays, view, camera,
                  "source" if view == source_view else "target")
    if legend_handles is None and h_line is not None:
      h_line.set_label(f"epipolar line of {joint}")
      legend_handles = handles + [h_line]
  # Legend on its own line under the title, so that it never covers a panel title.
  fig.legend(handles=legend_handles or handles, loc="upper left", ncol=4,
             fontsize=9, frameon=False, borderaxespad=0.0,
             bbox_to_anchor=(0.01, 1.0 - 0.4 * TITLE_INCHES * DPI / height_px))
  _write_png(fig, path)
  return width_px, height_px
