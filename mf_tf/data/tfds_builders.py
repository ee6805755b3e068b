r"""TensorFlow Datasets builders: the synthetic world per rig (here), and Human3.6M, Panoptic and
Total Capture read from a manual download (`mf_tf.data.tfds_pose_builders`); loading for training.

Builders (name -> class in `BUILDERS`; configs by name, or any config object of the class:
`SyntheticWorldConfig` here, `Human36mConfig`, `PanopticConfig` and `TotalCaptureConfig` in
`mf_tf.data.tfds_pose_builders`):

    mf_tf_synthetic_world   SyntheticWorld   generated: one config per built-in rig
                                             (`mf_tf.geometry.rigs.list_rigs()`), default "h36m";
                                             splits train (64 frames) and test (16 frames)
    mf_tf_h36m              Human36m         manual: "crossview" (train S1, S5-S8; test S9, S11)
    mf_tf_panoptic          Panoptic         manual: "hd5" (VoxelPose's 5 HD cameras and
                                             sequences), "vga20" (the panoptic_vga20 cameras)
    mf_tf_totalcapture      TotalCapture     manual: "cams1357" (cameras 1, 3, 5, 7; the
                                             TotalCapture-Toolbox split), "cams_all" (8 cameras)

Each example is one frame, stored as the project's TFRecord examples store it
(`mf_tf.data.tfrecord`; V views, J joints of the builder's joint set, P detector peaks):

    frame_index   []              int64, position within the split (storage order: ascending)
    joints3d      [J, 3]          float32 world millimetres (NaN where a real joint is unknown)
    joints2d      [V, J, 2]       float32 distorted projections, heatmap pixels (x = column)
    visibility    [V, J]          float32 1 seen / 0 occluded, outside or unknown
    head_size     [V]             float32 heatmap pixels (`mf_tf.data.world.head_sizes`)
  synthetic world only:
    peaks         [V, J, P, 2]    float32 compact simulated-detector state (heatmap px),
    amplitudes    [V, J, P]       float32 rendered into initial heatmaps by
    noise_seed    []              int64   `to_training_dataset` (`detector.render_heatmaps`)
    heatmaps      [V, H, W, J]    float32 dense initial heatmaps (config store_heatmaps=True)
    images        [V, S, S, 3]    uint8 rendered body, PNG per view (config render_images=True)
  real datasets only (`tfrecord.frames_from_poses` of the 3D ground truth):
    rig           []              string, key of the example's rig in the metadata "rigs"
    image_paths   [V]             string (Panoptic: relative to manual_dir; Human3.6M: as in the
                                  annotations, relative to its image root)
    plus provenance: Panoptic sequence, frame_id, body_id; Human3.6M subject, action,
    subaction, image_id; Total Capture sequence, frame_id.

Dataset metadata (`info.metadata`, written beside the shards as metadata.json): "format",
"joint_set", "num_joints", "num_views", "heatmap_size", "rigs" ({key: canonical rig dict},
`mf_tf.geometry.calibration.rig_to_dict`) and, for the synthetic world, "detector" (the scaled
`DetectorParams` the compact state renders with) and "seed".

Building and loading never touch the network: no builder has URLs, and `offline_download_config`
turns off the prepared-dataset download (`try_download_gcs=False`). For example

    import tensorflow_datasets as tfds
    from mf_tf.data import tfds_builders  # Defines (and so registers) every builder.

    config = tfds_builders.offline_download_config(manual_dir="/data/panoptic")
    panoptic = tfds.load("mf_tf_panoptic/hd5", split="train", data_dir="/data/tfds",
                         download_and_prepare_kwargs={"download_config": config})

    dataset, info = tfds_builders.load_training_dataset(
        "mf_tf_synthetic_world/h36m", "train", data_dir="/data/tfds", batch_size=32)

`to_training_dataset` turns a split into exactly the elements of
`mf_tf.data.pipeline.make_dataset` (the training modes' input, `mf_tf.data.element`), with the
same options.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mf_tf.data import detector as detector_lib
from mf_tf.data import element
from mf_tf.data import joints as joints_lib
from mf_tf.data import tfrecord
from mf_tf.data import world
from mf_tf.data.detector import DetectorParams
from mf_tf.data.tfds_features import FORMAT_NAME, frame_features, tensor
from mf_tf.data.tfds_pose_builders import Human36m, Panoptic, TotalCapture
from mf_tf.geometry import calibration
from mf_tf.geometry import rigs as rigs_lib
from mf_tf.geometry.rig import Rig, RigMismatchError, check_same_rig

# Frames simulated per `world.simulate_frames` call: bounds memory (as in --mode=simulate) and
# fixes the seeds, so a split's frames do not depend on how many are asked for after them.
SIMULATE_CHUNK = 50


def offline_download_config(manual_dir: str | os.PathLike | None = None
                            ) -> tfds.download.DownloadConfig:
  """A DownloadConfig that prepares from local data only.

  Args:
    manual_dir: Folder of a manually downloaded dataset (None: TFDS's default,
      <data_dir>/downloads/manual).

  Returns:
    DownloadConfig with `manual_dir` set, the prepared-dataset download from GCS off and no
    statistics pass.
  """
  return tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else os.fspath(manual_dir),
      try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP)


# ------------------------------------------------------------------------------------------------
# The synthetic world.


def chunk_seed(seed: int, split: str, chunk: int) -> int:
  """Seed of `world.simulate_frames` for frames [chunk, chunk + 1) x SIMULATE_CHUNK of a split.

  Derived from (seed, CRC-32 of the split name, chunk), so splits never share frames.
  """
  key = zlib.crc32(str(split).encode("utf-8"))
  state = np.random.SeedSequence([int(seed), key, int(chunk)]).generate_state(1)[0]
  return int(state & 0x7FFFFFFF)


def simulate_split(rig: Rig, split: str, num_frames: int, seed: int, *, joint_set="h36m17",
                   heatmap_size: int = 64, detector_params: DetectorParams | None = None,
                   store_heatmaps: bool = False, render_images: bool = False,
                   image_size: int = 256):
  """Yields a synthetic split's frames chunk by chunk.

  Chunk k holds frames [k * SIMULATE_CHUNK, ...) and is `world.simulate_frames(rig, count,
  chunk_seed(seed, split, k), ...)`.

  Args:
    rig: Rig to simulate (V views).
    split: Split name (part of the seed).
    num_frames: Frames in the split.
    seed: Dataset seed.
    joint_set: Joint set name of the frames.
    heatmap_size: Heatmap side H = W in px.
    detector_params: Detector error model in 64 px units (None: defaults).
    store_heatmaps: Also render the dense initial heatmaps.
    render_images: Also render images of the body.
    image_size: Image side S in px.

  Yields:
    (first frame index, dict of numpy arrays as `world.simulate_frames` returns them).
  """
  for chunk, first in enumerate(range(0, int(num_frames), SIMULATE_CHUNK)):
    count = min(SIMULATE_CHUNK, int(num_frames) - first)
    yield first, world.simulate_frames(
        rig, count, chunk_seed(seed, split, chunk), joint_set=joint_set,
        heatmap_size=heatmap_size, detector_params=detector_params,
        render_images=render_images, image_size=image_size, return_heatmaps=store_heatmaps)


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticWorldConfig(tfds.core.BuilderConfig):
  """A synthetic dataset: one rig, frames per split, the simulation settings.

  Attributes:
    rig: Built-in rig name (`mf_tf.geometry.rigs`) or canonical rig JSON path.
    splits: (split name, number of frames) pairs.
    seed: Seed of every draw (`chunk_seed`).
    joint_set: "h36m17" or "totalcapture16" (`world.SUPPORTED_JOINT_SETS`).
    heatmap_size: Heatmap side in px.
    detector_params: Simulated detector, 64 px units.
    store_heatmaps: Store dense initial heatmaps (V x H x W x J floats per frame, ZLIB) beside
      the compact detector state.
    render_images: Store rendered images (PNG per view).
    image_size: Rendered image side in px.
  """

  rig: str = "h36m"
  splits: tuple[tuple[str, int], ...] = (("train", 64), ("test", 16))
  seed: int = 0
  joint_set: str = "h36m17"
  heatmap_size: int = 64
  detector_params: DetectorParams = DetectorParams()
  store_heatmaps: bool = False
  render_images: bool = False
  image_size: int = 256


def _synthetic_configs() -> list[SyntheticWorldConfig]:
  return [SyntheticWorldConfig(name=name, rig=name,
                               description=f"Synthetic world seen by the built-in rig {name!r}")
          for name in rigs_lib.list_rigs()]


class SyntheticWorld(tfds.core.GeneratorBasedBuilder):
  """The synthetic multi-camera world (`mf_tf.data.world`) as a TFDS dataset, one config per rig.

  Generated locally: nothing is downloaded. See the module docstring for the features.
  """

  name = "mf_tf_synthetic_world"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Frames of mf_tf.data.world.simulate_frames."}
  BUILDER_CONFIGS = _synthetic_configs()
  DEFAULT_BUILDER_CONFIG_NAME = "h36m"

  def _rig(self) -> Rig:
    return rigs_lib.get_rig(self.builder_config.rig)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    rig = self._rig()
    joint_set = joints_lib.get_joint_set(config.joint_set)
    views, joints, size = rig.num_views, joint_set.num_joints, int(config.heatmap_size)
    peaks = detector_lib.NUM_PEAKS
    features = frame_features(views, joints)
    features.update({
        "peaks": tensor((views, joints, peaks, 2)),
        "amplitudes": tensor((views, joints, peaks)),
        "noise_seed": tfds.features.Scalar(np.int64),
    })
    if config.store_heatmaps:
      features["heatmaps"] = tensor((views, size, size, joints),
                                    encoding=tfds.features.Encoding.ZLIB)
    if config.render_images:
      side = int(config.image_size)
      features["images"] = tfds.features.Sequence(
          tfds.features.Image(shape=(side, side, 3)), length=views)
    metadata = tfds.core.MetadataDict(
        format=FORMAT_NAME, joint_set=joint_set.name, num_joints=joints, num_views=views,
        heatmap_size=size, rigs={rig.name: calibration.rig_to_dict(rig)},
        detector=dataclasses.asdict(config.detector_params.scaled(size)),
        seed=int(config.seed))
    return self.dataset_info_from_configs(
        description="One person in a rig's capture volume: 3D pose, per-view projections, "
                    "visibility and a simulated detector's compact state.",
        features=tfds.features.FeaturesDict(features), metadata=metadata,
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, int(count))
            for split, count in self.builder_config.splits}

  def _generate_examples(self, split: str, num_frames: int):
    config = self.builder_config
    keys = list(self.info.features.keys())
    for first, frames in simulate_split(
        self._rig(), split, num_frames, config.seed, joint_set=config.joint_set,
        heatmap_size=config.heatmap_size, detector_params=config.detector_params,
        store_heatmaps=config.store_heatmaps, render_images=config.render_images,
        image_size=config.image_size):
      for offset in range(len(frames["joints3d"])):
        index = first + offset
        example = {key: frames[key][offset] for key in keys if key != "frame_index"}
        example["frame_index"] = index
        yield index, example


# Builder name -> class: every builder of mf_tf.
BUILDERS = {cls.name: cls for cls in (SyntheticWorld, Human36m, Panoptic, TotalCapture)}


# ------------------------------------------------------------------------------------------------
# Loading for training.


def make_builder(name: str, data_dir: str | os.PathLike,
                 config: str | tfds.core.BuilderConfig | None = None
                 ) -> tfds.core.DatasetBuilder:
  """An mf_tf builder by name, without TFDS's registry or catalog look-ups.

  Args:
    name: "builder" or "builder/config" (e.g. "mf_tf_synthetic_world/h36m"); see `BUILDERS`.
    data_dir: Root folder of prepared TFDS datasets.
    config: Config name or object; overrides a config in `name`. None: the name's, else the
      builder's default.

  Raises:
    ValueError: unknown builder or config name (the message lists the valid ones).
  """
  builder_name, _, config_name = str(name).partition("/")
  if builder_name not in BUILDERS:
    raise ValueError(f"unknown TFDS builder {builder_name!r}: expected one of {sorted(BUILDERS)}")
  cls = BUILDERS[builder_name]
  config = config if config is not None else (config_name or None)
  if isinstance(config, str) and config not in cls.builder_configs:
    # A config object's dataset, prepared earlier, reopens by its name from the files.
    prepared = os.path.join(os.fspath(data_dir), builder_name, config, str(cls.VERSION))
    if os.path.isfile(os.path.join(prepared, "dataset_info.json")):
      return tfds.builder_from_directory(prepared)
    raise ValueError(f"unknown config {config!r} of TFDS builder {builder_name!r}: expected one "
                     f"of {sorted(cls.builder_configs)}, a {cls.__name__}Config object or the "
                     f"name of one prepared in {prepared}")
  return cls(data_dir=os.fspath(data_dir), config=config)


def prepare(builder: tfds.core.DatasetBuilder,
            manual_dir: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
  """Builds the dataset offline if it is not prepared yet (`offline_download_config`)."""
  builder.download_and_prepare(download_config=offline_download_config(manual_dir))
  return builder


def dataset_metadata(info: tfds.core.DatasetInfo) -> dict:
  """The metadata of a dataset of an mf_tf builder (see the module docstring).

  Read from the dataset's metadata.json when `info` comes without it (a builder reopened from
  its files, e.g. `tfds.load` of a config object's dataset by name).

  Raises:
    ValueError: the dataset was not written by an mf_tf builder.
  """
  metadata = dict(info.metadata or {})
  if not metadata and info.data_dir and os.path.isfile(os.path.join(info.data_dir,
                                                                    "metadata.json")):
    stored = tfds.core.MetadataDict()
    stored.load_metadata(info.data_dir)
    metadata = dict(stored)
  if metadata.get("format") != FORMAT_NAME:
    raise ValueError(f"dataset {info.full_name} has metadata format {metadata.get('format')!r}, "
                     f"expected {FORMAT_NAME!r} (a builder of mf_tf.data.tfds_builders)")
  return metadata


def dataset_rigs(info: tfds.core.DatasetInfo) -> dict[str, Rig]:
  """The rigs of a prepared dataset: {key: Rig}, keys as in the examples' "rig" feature."""
  return {key: calibration.rig_from_dict(value, f"{info.full_name} metadata rig {key!r}",
                                         check_volume=False)
          for key, value in dataset_metadata(info)["rigs"].items()}


def dataset_rig(info: tfds.core.DatasetInfo, views: Sequence[int] | None = None) -> Rig:
  """The one rig of a prepared dataset, restricted to `views` (as `to_training_dataset` orders
  them); ValueError when the dataset holds several (pick one from `dataset_rigs`)."""
  rigs = dataset_rigs(info)
  if len(rigs) != 1:
    raise ValueError(f"dataset {info.full_name} holds {len(rigs)} rigs {sorted(rigs)}, expected "
                     "one; choose with dataset_rigs(info)[key]")
  rig = next(iter(rigs.values()))
  return rig if views is None else rig.subset(list(views))


def _check_expectations(info, metadata, rig, joint_set, heatmap_size) -> None:
  problems = tfrecord.expectation_problems(metadata, joint_set, heatmap_size)
  if rig is not None:
    for key, stored in dataset_rigs(info).items():
      try:
        check_same_rig(stored, rig, check_geometry=True)
      except RigMismatchError as error:
        problems.append(f"rig {key!r}: {error}")
  if problems:
    raise tfrecord.DatasetMismatchError(
        f"dataset {info.full_name} does not match what was expected: " + "; ".join(problems))


def to_training_dataset(dataset: tf.data.Dataset, info: tfds.core.DatasetInfo,
                        batch_size: int, shuffle: bool = False, with_images: bool = False,
                        render_heatmaps: bool = True, views: Sequence[int] | None = None,
                        repeat: bool = False, seed: int = 0, *, rig: Rig | None = None,
                        joint_set=None, heatmap_size: int | None = None,
                        target_sigma: float = 2.0, shuffle_buffer: int = 1024,
                        drop_remainder: bool = False) -> tf.data.Dataset:
  """The training input of a TFDS split: the elements of `mf_tf.data.pipeline.make_dataset`.

  Elements are dicts batched along a leading B axis (`mf_tf.data.element`): frame_index,
  joints3d, joints2d, visibility, head_size, heatmaps (stored dense ones, else rendered from the
  compact detector state; only with render_heatmaps=True), target_heatmaps and target_weights,
  images (only with with_images=True); every other stored feature passes through (per-view ones
  gathered to `views`), so equal frames give equal elements from either source.

  Args:
    dataset: A split of an mf_tf builder (`BUILDERS`), as `builder.as_dataset(split=...)` or
      `tfds.load(...)` returns it (unbatched dicts, not as_supervised).
    info: The builder's DatasetInfo.
    batch_size: Frames per batch.
    shuffle, with_images, render_heatmaps, views, repeat, seed, rig, joint_set, heatmap_size,
      target_sigma, shuffle_buffer, drop_remainder: As for `mf_tf.data.pipeline.make_dataset`,
      except that `shuffle` shuffles frames only (a split has no shards to shuffle) and every
      rig of the dataset must match `rig`, geometry included.

  Raises:
    ValueError: `info` is not of an mf_tf builder, a bad `views`, or images or heatmaps
      the dataset cannot provide; tfrecord.DatasetMismatchError: the dataset does not match
      `rig`, `joint_set` or `heatmap_size` (one message listing every mismatch).
  """
  metadata = dataset_metadata(info)
  _check_expectations(info, metadata, rig, joint_set, heatmap_size)
  recipe = element.make_recipe(
      list(info.features.keys()), tfrecord.PER_VIEW_KEYS, int(metadata["num_views"]),
      int(metadata["heatmap_size"]), metadata.get("detector"), with_images=with_images,
      render_heatmaps=render_heatmaps, views=views, target_sigma=target_sigma,
      where=f"dataset {info.full_name}")
  if shuffle:
    dataset = dataset.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)

  def to_frame(example):
    return {key: example[key] for key in recipe.keys}

  return element.batch_elements(dataset, to_frame, recipe, batch_size, repeat=repeat,
                                drop_remainder=drop_remainder)


def load_training_dataset(name: str, split: str, data_dir: str | os.PathLike, batch_size: int, *,
                          config: str | tfds.core.BuilderConfig | None = None,
                          manual_dir: str | os.PathLike | None = None, **options
                          ) -> tuple[tf.data.Dataset, tfds.core.DatasetInfo]:
  """Prepares a dataset offline if needed and returns one split as training input.

  Args:
    name: "builder" or "builder/config" (`make_builder`).
    split: Split name or TFDS slice ("train", "test[:50%]").
    data_dir: Root folder of prepared TFDS datasets.
    batch_size: Frames per batch.
    config: Config name or object (`make_builder`).
    manual_dir: Folder of a manually downloaded dataset (real-data builders).
    **options: Keyword arguments of `to_training_dataset` (shuffle, views, rig, ...).

  Returns:
    (the batched dataset of `to_training_dataset`, the builder's DatasetInfo; its rig:
    `dataset_rig(info, views)`).
  """
  builder = prepare(make_builder(name, data_dir, config), manual_dir)
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  return to_training_dataset(dataset, builder.info, batch_size, **options), builder.info
