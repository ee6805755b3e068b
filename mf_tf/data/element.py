"""The training element: one stored frame as the training modes read it.

Two sources give the same elements: `mf_tf.data.pipeline.make_dataset` reads TFRecord shards
(`mf_tf.data.tfrecord`) and `mf_tf.data.tfds_builders.to_training_dataset` reads TFDS splits. Each
turns its records into frames (dicts of the stored arrays in their per-frame shapes) its own way;
the rest is here, once: `make_recipe` checks the request and decides what a dataset's elements hold,
`to_element` builds one element from one frame, and `batch_elements` maps, batches and prefetches.

Each element is a dict (batched along a leading B axis):

    frame_index       [B]                int64
    joints3d          [B, J, 3]          float32, world millimetres
    joints2d          [B, V, J, 2]       float32, heatmap pixels (x = column, y = row)
    visibility        [B, V, J]          float32, 1 visible / 0 occluded or outside
    head_size         [B, V]             float32, heatmap pixels
    heatmaps          [B, V, H, W, J]    float32 initial (detector) heatmaps: stored densely or
                                         rendered in the map from the compact detector state
                                         (only with render_heatmaps=True and when the dataset
                                         holds either)
    target_heatmaps   [B, V, H, W, J]    float32 Gaussian ground truth (HeatmapCodec.encode)
    target_weights    [B, V, J]          float32 loss weights (inside the heatmap and visible)
    images            [B, V, S, S, 3]    uint8 (only with with_images=True)

V is the number of selected views (`views=`), in the order given. Any other stored array is passed
through (per-view ones gathered too), cast to float32 when it is floating point.

Rendering from the compact state is deterministic per frame (the frame's noise seed). With a view
subset, the peaks are those of the selected views, but the background noise is drawn for the
subset's shape, so its values differ from a full-rig rendering (same distribution).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Collection, Sequence

import tensorflow as tf

from mf_tf.data import detector as detector_lib
from mf_tf.data.codec import HeatmapCodec

# The compact simulated-detector state that initial heatmaps are rendered from.
DETECTOR_KEYS = ("peaks", "amplitudes", "noise_seed")


@dataclasses.dataclass(frozen=True)
class ElementRecipe:
  """What the elements of one dataset hold, decided once per request (`make_recipe`).

  Attributes:
    keys: Stored arrays read per frame, in storage order ("frame_index" aside).
    per_view_keys: Names of stored arrays with a leading view axis (gathered to `views`).
    codec: Encodes joints2d [V, J, 2] into the targets (heatmap side H, target sigma).
    views: View indices kept, in order; None keeps all.
    detector: (sigma, noise_level), heatmap px, to render "heatmaps" from the compact detector
      state `DETECTOR_KEYS`; None when no heatmaps are requested or the dense ones are stored.
  """

  keys: tuple[str, ...]
  per_view_keys: frozenset[str]
  codec: HeatmapCodec
  views: tuple[int, ...] | None = None
  detector: tuple[float, float] | None = None


def check_request(stored: Collection[str], num_views: int, views: Sequence[int] | None,
                  with_images: bool, render_heatmaps: bool, where: str) -> list[int] | None:
  """Checks what a training input asks of a dataset against what the dataset stores.

  Args:
    stored: Names of the stored per-frame arrays (or features).
    num_views: Views of the dataset's rig.
    views: Requested view indices, or None for all.
    with_images: Images are requested.
    render_heatmaps: Initial heatmaps are requested (dense, or rendered from the compact
      detector state `DETECTOR_KEYS`).
    where: The dataset, for messages.

  Returns:
    The views as a list of ints (None stays None).

  Raises:
    ValueError: Repeated or out-of-range views, or images / heatmaps the dataset cannot provide.
  """
  if views is not None:
    views = [int(v) for v in views]
    if not views or any(not 0 <= v < num_views for v in views) or len(set(views)) != len(views):
      raise ValueError(f"views={views}: expected distinct view indices in [0, {num_views}) for "
                       f"the {num_views}-view {where}")
  if with_images and "images" not in stored:
    raise ValueError(f"with_images=True but {where} stores no images (arrays: {sorted(stored)})")
  if render_heatmaps and "heatmaps" not in stored and not all(
      key in stored for key in DETECTOR_KEYS):
    raise ValueError(f"render_heatmaps=True but {where} holds neither dense heatmaps nor the "
                     f"compact detector state {DETECTOR_KEYS}")
  return views


def make_recipe(stored: Collection[str], per_view_keys: Collection[str], num_views: int,
                heatmap_size: int, detector_params: dict | None, *, with_images: bool,
                render_heatmaps: bool, views: Sequence[int] | None, target_sigma: float,
                where: str) -> ElementRecipe:
  """Checks a request against a dataset and decides what its elements hold.

  Args:
    stored: Names of the stored per-frame arrays (or features), in storage order.
    per_view_keys: Names of the stored arrays with a leading view axis.
    num_views: Views of the dataset's rig.
    heatmap_size: The dataset's heatmap side H = W, px.
    detector_params: The dataset's "detector" metadata (the scaled `DetectorParams` fields,
      heatmap px), or None; read only to render heatmaps from the compact state.
    with_images: Keep the stored images.
    render_heatmaps: Return initial "heatmaps": the stored dense ones, else rendered from the
      compact detector state with `mf_tf.data.detector.render_heatmaps`.
    views: Indices of the views to keep, in order; None keeps all.
    target_sigma: Gaussian sigma of the target heatmaps, heatmap pixels.
    where: The dataset, for messages.

  Returns:
    The dataset's ElementRecipe.

  Raises:
    ValueError: see `check_request`; also heatmaps to render from the compact state when the
      detector metadata lacks "sigma" or "noise_level".
  """
  views = check_request(stored, num_views, views, with_images, render_heatmaps, where)
  detector = None
  if render_heatmaps and "heatmaps" not in stored:
    params = detector_params or {}
    missing = [key for key in ("sigma", "noise_level") if key not in params]
    if missing:
      raise ValueError(f"{where}: the 'detector' metadata lacks {missing}, needed to render "
                       "heatmaps from the compact detector state")
    detector = (params["sigma"], params["noise_level"])
  keys = tuple(key for key in stored
               if (with_images or key != "images")
               and (render_heatmaps or (key != "heatmaps" and key not in DETECTOR_KEYS)))
  return ElementRecipe(keys=keys, per_view_keys=frozenset(per_view_keys),
                       codec=HeatmapCodec(heatmap_size, target_sigma),
                       views=None if views is None else tuple(views), detector=detector)


def to_element(recipe: ElementRecipe, frame: dict) -> dict:
  """One training element (the module docstring's, unbatched) from one stored frame.

  Args:
    recipe: The dataset's ElementRecipe.
    frame: "frame_index" and the arrays `recipe.keys` of one frame, in their stored shapes and
      dtypes (per-view ones [V_stored, ...]).

  Returns:
    The element: per-view arrays gathered to [V, ...], floats (and visibility) as float32,
    "heatmaps" [V, H, W, J] rendered when `recipe.detector` says so, and the targets
    "target_heatmaps" [V, H, W, J] and "target_weights" [V, J] of "joints2d".
  """
  frame = dict(frame)
  if recipe.views is not None:
    view_index = tf.constant(recipe.views, tf.int32)
    for key in recipe.keys:
      if key in recipe.per_view_keys:
        frame[key] = tf.gather(frame[key], view_index, axis=0)
  if recipe.detector is not None:
    sigma, noise_level = recipe.detector
    frame["heatmaps"] = detector_lib.render_heatmaps(
        frame["peaks"], frame["amplitudes"], recipe.codec.heatmap_size, sigma, noise_level,
        frame["noise_seed"])
  for key, value in list(frame.items()):
    if value.dtype.is_floating or key == "visibility":
      frame[key] = tf.cast(value, tf.float32)
  if "joints2d" in frame:
    frame["target_heatmaps"], frame["target_weights"] = recipe.codec.encode(
        frame["joints2d"], frame.get("visibility"))
  return frame


def batch_elements(records: tf.data.Dataset, to_frame: Callable[..., dict],
                   recipe: ElementRecipe, batch_size: int, *, repeat: bool = False,
                   drop_remainder: bool = False) -> tf.data.Dataset:
  """The batched, prefetched elements of a source's records.

  Args:
    records: The source's records, in the order to read them (shuffled already if asked).
    to_frame: record -> frame, the dict `to_element` reads.
    recipe: The dataset's ElementRecipe.
    batch_size: Frames per batch.
    repeat: Repeat indefinitely (a shuffled `records` reshuffles each epoch).
    drop_remainder: Drop the last partial batch.

  Returns:
    tf.data.Dataset of elements batched along a leading B axis.
  """
  if repeat:
    records = records.repeat()
  elements = records.map(lambda record: to_element(recipe, to_frame(record)),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  elements = elements.batch(batch_size, drop_remainder=drop_remainder)
  return elements.prefetch(tf.data.AUTOTUNE)
