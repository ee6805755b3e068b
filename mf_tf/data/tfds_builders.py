r"""TensorFlow Datasets builders: the synthetic world per rig, and Human3.6M, Panoptic and Total
Capture read from a manual download.

Builders (name -> class in `BUILDERS`; configs by name, or any config object of the class):

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
    from mf_tf.data import tfds_builders  # Defines (and so registers) the builders.

    config = tfds_builders.offline_download_config(manual_dir="/data/panoptic")
    panoptic = tfds.load("mf_tf_panoptic/hd5", split="train", data_dir="/data/tfds",
                         download_and_prepare_kwargs={"download_config": config})

    dataset, info = tfds_builders.load_training_dataset(
        "mf_tf_synthetic_world/h36m", "train", data_dir="/data/tfds", batch_size=32)

`to_training_dataset` turns a split into exactly the elements of
`mf_tf.data.pipeline.make_dataset` (the training modes' input), with the same options.
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
from mf_tf.data import h36m as h36m_lib
from mf_tf.data import joints as joints_lib
from mf_tf.data import panoptic as panoptic_lib
from mf_tf.data import pipeline
from mf_tf.data import tfrecord
from mf_tf.data import totalcapture as totalcapture_lib
from mf_tf.data import world
from mf_tf.data.codec import HeatmapCodec
from mf_tf.data.detector import DetectorParams
from mf_tf.geometry import calibration
from mf_tf.geometry import rigs as rigs_lib
from mf_tf.geometry.rig import Rig, RigMismatchError, check_same_rig

FORMAT_NAME = "mf_tf.tfds"
# Frames simulated per `world.simulate_frames` call: bounds memory (as in --mode=simulate) and
# fixes the seeds, so a split's frames do not depend on how many are asked for after them.
SIMULATE_CHUNK = 50
_DETECTOR_KEYS = ("peaks", "amplitudes", "noise_seed")


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


def _manual_dir(dl_manager, builder_name: str, instructions: str) -> str:
  """The manual folder, or FileNotFoundError naming it and the expected layout."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError as error:  # TFDS asserts that the folder exists and is not empty.
    # Its message: "Manual directory <path> does not exist or is empty. Create it and ...".
    reason = str(error).split(". Create it")[0]
    raise FileNotFoundError(f"{builder_name}: {reason}; pass manual_dir= (offline_download_config)"
                            f" with this layout:{instructions}") from None


def _require_paths(builder_name: str, manual_dir: str, relative: Sequence[str],
                   instructions: str) -> None:
  missing = [path for path in relative if not os.path.exists(os.path.join(manual_dir, path))]
  if missing:
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    raise FileNotFoundError(
        f"{builder_name}: manual_dir {manual_dir} lacks {shown}; expected:{instructions}")


def _tensor(shape, dtype=np.float32, **kwargs) -> tfds.features.Tensor:
  return tfds.features.Tensor(shape=tuple(int(s) for s in shape), dtype=dtype, **kwargs)


def _frame_features(num_views: int, num_joints: int) -> dict:
  """Features every builder stores (the TFRecord examples' common arrays)."""
  return {
      "frame_index": tfds.features.Scalar(np.int64),
      "joints3d": _tensor((num_joints, 3)),
      "joints2d": _tensor((num_views, num_joints, 2)),
      "visibility": _tensor((num_views, num_joints)),
      "head_size": _tensor((num_views,)),
  }


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
    features = _frame_features(views, joints)
    features.update({
        "peaks": _tensor((views, joints, peaks, 2)),
        "amplitudes": _tensor((views, joints, peaks)),
        "noise_seed": tfds.features.Scalar(np.int64),
    })
    if config.store_heatmaps:
      features["heatmaps"] = _tensor((views, size, size, joints),
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


# ------------------------------------------------------------------------------------------------
# Real datasets from a manual download.


class _PoseBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared frame writing of the real-data builders: poses -> `tfrecord.frames_from_poses`.

  A subclass sets JOINT_SET, `_num_views()`, `_extra_features()` and `_read(manual_dir)`, which
  returns {split: [source, ...]}, a source being a dict with "rig_key", "rig" and the reader's
  arrays ("joints3d" [N, J, 3], optional "confidence" [N, J] and "image_paths" [N, V], and the
  provenance arrays named by `_extra_features`).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Frames of mf_tf.data.tfrecord.frames_from_poses."}
  JOINT_SET = ""
  HAS_IMAGE_PATHS = True
  HOMEPAGE = ""

  def _num_views(self) -> int:
    raise NotImplementedError

  def _extra_features(self) -> dict:
    raise NotImplementedError

  def _read(self, manual_dir: str) -> dict:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    joint_set = joints_lib.get_joint_set(self.JOINT_SET)
    views = self._num_views()
    features = _frame_features(views, joint_set.num_joints)
    features["rig"] = tfds.features.Text()
    if self.HAS_IMAGE_PATHS:
      features["image_paths"] = _tensor((views,), np.object_)
    features.update(self._extra_features())
    metadata = tfds.core.MetadataDict(
        format=FORMAT_NAME, joint_set=joint_set.name, num_joints=joint_set.num_joints,
        num_views=views, heatmap_size=int(self.builder_config.heatmap_size), rigs={})
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features), metadata=metadata,
        disable_shuffling=True, homepage=self.HOMEPAGE)

  def _split_generators(self, dl_manager):
    manual_dir = _manual_dir(dl_manager, self.name, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    sources = self._read(manual_dir)
    rigs = {}
    for split_sources in sources.values():
      for source in split_sources:
        rigs[source["rig_key"]] = calibration.rig_to_dict(source["rig"])
    self.info.metadata["rigs"] = rigs
    return {split: self._generate_examples(split_sources)
            for split, split_sources in sources.items()}

  def _generate_examples(self, sources):
    size = int(self.builder_config.heatmap_size)
    extra = list(self._extra_features())
    index = 0
    for source in sources:
      frames = tfrecord.frames_from_poses(
          source["rig"], source["joints3d"], self.JOINT_SET, size,
          confidence=source.get("confidence"), image_paths=source.get("image_paths"))
      if "image_paths" in frames:  # TFDS encodes string tensors from object arrays.
        frames["image_paths"] = frames["image_paths"].astype(object)
      for row in range(len(frames["joints3d"])):
        example = {key: value[row] for key, value in frames.items()}
        example.update({key: source[key][row] for key in extra})
        example["frame_index"] = index
        example["rig"] = source["rig_key"]
        yield index, example
        index += 1


@dataclasses.dataclass(eq=False, kw_only=True)
class Human36mConfig(tfds.core.BuilderConfig):
  """Human3.6M subjects per split.

  Attributes:
    splits: (split name, subject numbers) pairs.
    annotations: (split name, folder relative to manual_dir) pairs: the converted annotation
      folder (written by `mf_tf.data.convert.convert`, --mode=convert) holding the split's
      subjects; "" is manual_dir itself.
    actions: Action numbers to keep (2..16); empty keeps all.
    heatmap_size: Heatmap side in px of joints2d and head_size.
  """

  splits: tuple[tuple[str, tuple[int, ...]], ...] = (("train", (1, 5, 6, 7, 8)),
                                                     ("test", (9, 11)))
  annotations: tuple[tuple[str, str], ...] = (("train", "h36m_train"),
                                              ("test", "h36m_validation"))
  actions: tuple[int, ...] = ()
  heatmap_size: int = 64


class Human36m(_PoseBuilder):
  """Human3.6M 4-view frames (h36m17) from CrossView's annotations, converted once."""

  name = "mf_tf_h36m"
  JOINT_SET = "h36m17"
  HOMEPAGE = "http://vision.imar.ro/human3.6m/"
  BUILDER_CONFIGS = [Human36mConfig(
      name="crossview", description="CrossView (Qiu et al. 2019) protocol: train on S1, S5, "
                                    "S6, S7, S8, test on S9, S11")]
  DEFAULT_BUILDER_CONFIG_NAME = "crossview"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  manual_dir holds the CrossView / H36M-Toolbox annotations converted to mf_tf's safe layout, one
  folder per annotation file (the config's `annotations`; "crossview": h36m_train/ and
  h36m_validation/), each written by
    python -m mf_tf.main --mode=convert --config.convert.input=h36m_train.pkl \\
        --config.convert.output=<manual_dir>/h36m_train --config.convert.trust_pickle=True
  (`mf_tf.data.convert.convert`) and holding manifest.json, annotations.npz and cameras.json.
  """

  def _num_views(self) -> int:
    return len(h36m_lib.CAMERA_IDS)

  def _extra_features(self) -> dict:
    return {key: tfds.features.Scalar(np.int64)
            for key in ("subject", "action", "subaction", "image_id")}

  def _read(self, manual_dir: str) -> dict:
    config = self.builder_config
    folders = dict(config.annotations)
    missing_splits = [split for split, _ in config.splits if split not in folders]
    if missing_splits:
      raise ValueError(f"{self.name} config {config.name!r}: splits {missing_splits} have no "
                       f"annotation folder; annotations name {sorted(folders)}")
    _require_paths(self.name, manual_dir,
                   [os.path.join(folders[split], file) for split, _ in config.splits
                    for file in ("manifest.json", "annotations.npz", "cameras.json")],
                   self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    sources = {}
    for split, subjects in config.splits:
      folder = os.path.join(manual_dir, folders[split])
      sources[split] = []
      for subject in subjects:
        data = h36m_lib.read_h36m_multiview(folder, int(subject),
                                            actions=list(config.actions) or None)
        count = len(data["joints3d"])
        sources[split].append({
            "rig_key": data["rig"].name, "rig": data["rig"], "joints3d": data["joints3d"],
            "image_paths": data["image_paths"], "subject": np.full(count, int(subject)),
            "action": data["action"], "subaction": data["subaction"],
            "image_id": data["image_id"]})
    return sources


# VoxelPose's Panoptic protocol (Tu et al. 2020): HD cameras 3, 6, 12, 13, 23 of panel 0.
PANOPTIC_TRAIN_SEQUENCES = (
    "160422_ultimatum1", "160224_haggling1", "160226_haggling1", "161202_haggling1",
    "160906_ian1", "160906_ian2", "160906_ian3", "160906_band1", "160906_band2", "160906_band3")
PANOPTIC_TEST_SEQUENCES = ("160906_pizza1", "160422_haggling1", "160906_ian5", "160906_band4")
PANOPTIC_HD5 = ("00_03", "00_06", "00_12", "00_13", "00_23")
# The cameras of the built-in rig panoptic_vga20 (the paper's 20 pretraining cameras).
PANOPTIC_VGA20 = ("01_09", "02_10", "03_22", "04_07", "05_21", "06_20", "07_09", "08_06",
                  "09_01", "10_21", "11_22", "12_18", "13_05", "14_11", "15_09", "16_14",
                  "17_14", "18_16", "19_12", "20_14")


@dataclasses.dataclass(eq=False, kw_only=True)
class PanopticConfig(tfds.core.BuilderConfig):
  """CMU Panoptic sequences per split and the cameras seen.

  Attributes:
    splits: (split name, sequence folder names) pairs.
    camera_type: "hd", "vga" or "kinect-color".
    camera_names: Camera names in view order ("PP_NN").
    calibrations: (sequence, calibration JSON relative to manual_dir) pairs for sequences that
      share another's calibration; default <seq>/calibration_<seq>.json.
    frame_step: Keep every frame_step-th pose frame of a sequence.
    heatmap_size: Heatmap side in px of joints2d and head_size.
  """

  splits: tuple[tuple[str, tuple[str, ...]], ...] = (("train", PANOPTIC_TRAIN_SEQUENCES),
                                                     ("test", PANOPTIC_TEST_SEQUENCES))
  camera_type: str = "hd"
  camera_names: tuple[str, ...] = PANOPTIC_HD5
  calibrations: tuple[tuple[str, str], ...] = ()
  frame_step: int = 1
  heatmap_size: int = 64


class Panoptic(_PoseBuilder):
  """CMU Panoptic 3D bodies (coco19), one example per (frame, body), from the Panoptic toolbox
  layout."""

  name = "mf_tf_panoptic"
  JOINT_SET = "coco19"
  HOMEPAGE = "http://domedb.perception.cs.cmu.edu/"
  BUILDER_CONFIGS = [
      PanopticConfig(name="hd5", description="VoxelPose's 5 HD cameras and sequences"),
      PanopticConfig(name="vga20", camera_type="vga", camera_names=PANOPTIC_VGA20,
                     description="The 20 VGA cameras of the built-in rig panoptic_vga20, "
                                 "VoxelPose's sequences"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "hd5"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  manual_dir holds Panoptic toolbox sequence folders (the config's sequences):
    <manual_dir>/<seq>/calibration_<seq>.json
    <manual_dir>/<seq>/hdPose3d_stage1_coco19/body3DScene_<frame:08d>.json
  (sequences sharing another's calibration name it in the config's `calibrations`).
  """

  def _num_views(self) -> int:
    return len(self.builder_config.camera_names)

  def _extra_features(self) -> dict:
    return {"sequence": tfds.features.Text(), "frame_id": tfds.features.Scalar(np.int64),
            "body_id": tfds.features.Scalar(np.int64)}

  def _read(self, manual_dir: str) -> dict:
    config = self.builder_config
    if int(config.frame_step) < 1:
      raise ValueError(f"{self.name} config {config.name!r}: frame_step={config.frame_step}, "
                       "expected >= 1")
    calibrations = dict(config.calibrations)
    sequences = sorted({seq for _, split_sequences in config.splits for seq in split_sequences})
    calibration_files = {seq: calibrations.get(seq, os.path.join(seq, f"calibration_{seq}.json"))
                         for seq in sequences}
    _require_paths(self.name, manual_dir,
                   [path for seq in sequences
                    for path in (calibration_files[seq],
                                 os.path.join(seq, panoptic_lib.POSE_DIR))],
                   self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    sources = {}
    for split, split_sequences in config.splits:
      sources[split] = []
      for seq in split_sequences:
        data = panoptic_lib.read_panoptic_sequence(
            os.path.join(manual_dir, seq), config.camera_type, list(config.camera_names),
            calibration_path=os.path.join(manual_dir, calibration_files[seq]))
        frames = np.unique(data["frame_ids"])[::int(config.frame_step)]
        keep = np.isin(data["frame_ids"], frames)
        rig = data["rig"]
        key = f"panoptic_{seq}"
        sources[split].append({
            "rig_key": key, "rig": Rig(key, rig.cameras, up=rig.up, floor=rig.floor),
            "joints3d": data["joints3d"][keep], "confidence": data["confidence"][keep],
            "image_paths": np.vectorize(lambda path: os.path.relpath(path, manual_dir),
                                        otypes=[str])(data["image_paths"][keep]),
            "sequence": np.full(int(keep.sum()), seq), "frame_id": data["frame_ids"][keep],
            "body_id": data["body_ids"][keep]})
    return sources


# TotalCapture-Toolbox's split (the one CrossView evaluates): train on subjects 1-3, test on 1-5.
TOTALCAPTURE_TRAIN_SEQUENCES = tuple(
    f"s{subject}/{action}" for subject in (1, 2, 3)
    for action in ("rom1", "rom2", "rom3", "walking1", "walking3", "acting1", "acting2",
                   "freestyle1", "freestyle2"))
TOTALCAPTURE_TEST_SEQUENCES = tuple(
    f"s{subject}/{action}" for subject in (1, 2, 3, 4, 5)
    for action in ("walking2", "acting3", "freestyle3"))


@dataclasses.dataclass(eq=False, kw_only=True)
class TotalCaptureConfig(tfds.core.BuilderConfig):
  """Total Capture sequences per split and the cameras seen.

  Attributes:
    splits: (split name, sequence folders "s<subject>/<action>" relative to manual_dir) pairs.
    camera_names: Cameras in view order, as `calibration.read_totalcapture` names them.
    calibration: The calibration file, relative to manual_dir.
    positions_file: Vicon joint positions file name inside a sequence folder.
    frame_step: Keep every frame_step-th frame.
    heatmap_size: Heatmap side in px of joints2d and head_size.
  """

  splits: tuple[tuple[str, tuple[str, ...]], ...] = (("train", TOTALCAPTURE_TRAIN_SEQUENCES),
                                                     ("test", TOTALCAPTURE_TEST_SEQUENCES))
  camera_names: tuple[str, ...] = ("cam1", "cam3", "cam5", "cam7")
  calibration: str = "calibration.cal"
  positions_file: str = "gt_skel_gbl_pos.txt"
  frame_step: int = 1
  heatmap_size: int = 64


class TotalCapture(_PoseBuilder):
  """Total Capture Vicon ground truth (totalcapture16) seen by a camera subset."""

  name = "mf_tf_totalcapture"
  JOINT_SET = "totalcapture16"
  HAS_IMAGE_PATHS = False
  HOMEPAGE = "https://cvssp.org/data/totalcapture/"
  BUILDER_CONFIGS = [
      TotalCaptureConfig(name="cams1357", description="Cameras 1, 3, 5, 7; "
                                                      "TotalCapture-Toolbox split"),
      TotalCaptureConfig(name="cams_all", camera_names=tuple(f"cam{i}" for i in range(1, 9)),
                         description="All 8 cameras; TotalCapture-Toolbox split"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "cams1357"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  manual_dir holds the Total Capture download in TotalCapture-Toolbox's layout:
    <manual_dir>/calibration.cal
    <manual_dir>/s<subject>/<action>/gt_skel_gbl_pos.txt   (e.g. s1/acting1/)
  """

  def _num_views(self) -> int:
    return len(self.builder_config.camera_names)

  def _extra_features(self) -> dict:
    return {"sequence": tfds.features.Text(), "frame_id": tfds.features.Scalar(np.int64)}

  def _read(self, manual_dir: str) -> dict:
    config = self.builder_config
    if int(config.frame_step) < 1:
      raise ValueError(f"{self.name} config {config.name!r}: frame_step={config.frame_step}, "
                       "expected >= 1")
    sequences = sorted({seq for _, split_sequences in config.splits for seq in split_sequences})
    _require_paths(self.name, manual_dir,
                   [config.calibration] + [os.path.join(seq, config.positions_file)
                                           for seq in sequences],
                   self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    sources = {}
    for split, split_sequences in config.splits:
      sources[split] = []
      for seq in split_sequences:
        data = totalcapture_lib.read_totalcapture_sequence(
            os.path.join(manual_dir, config.calibration),
            os.path.join(manual_dir, seq, config.positions_file), list(config.camera_names))
        keep = slice(None, None, int(config.frame_step))
        frame_ids = data["frame_ids"][keep]
        sources[split].append({
            "rig_key": data["rig"].name, "rig": data["rig"], "joints3d": data["joints3d"][keep],
            "sequence": np.full(len(frame_ids), seq), "frame_id": frame_ids})
    return sources


# Builder name -> class: every builder this module defines.
BUILDERS = {cls.name: cls for cls in (SyntheticWorld, Human36m, Panoptic, TotalCapture)}


# ------------------------------------------------------------------------------------------------
# Loading for training.


def make_builder(name: str, data_dir: str | os.PathLike,
                 config: str | tfds.core.BuilderConfig | None = None
                 ) -> tfds.core.DatasetBuilder:
  """A builder of this module by name, without TFDS's registry or catalog look-ups.

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
  """The metadata of a dataset of this module's builders (see the module docstring).

  Read from the dataset's metadata.json when `info` comes without it (a builder reopened from
  its files, e.g. `tfds.load` of a config object's dataset by name).

  Raises:
    ValueError: the dataset was not written by a builder of this module.
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

  Elements are dicts batched along a leading B axis: frame_index [B] int64, joints3d [B, J, 3],
  joints2d [B, V, J, 2], visibility [B, V, J], head_size [B, V], heatmaps [B, V, H, W, J]
  (stored dense ones, else rendered from the compact detector state; only with
  render_heatmaps=True), target_heatmaps [B, V, H, W, J] and target_weights [B, V, J]
  (`HeatmapCodec(heatmap_size, target_sigma).encode`), images [B, V, S, S, 3] uint8 (only with
  with_images=True), floats as float32; every other stored feature passes through (per-view
  ones gathered to `views`), so equal frames give equal elements from either source.

  Args:
    dataset: A split of a builder of this module, as `builder.as_dataset(split=...)` or
      `tfds.load(...)` returns it (unbatched dicts, not as_supervised).
    info: The builder's DatasetInfo.
    batch_size: Frames per batch.
    shuffle: Shuffle frames (buffer `shuffle_buffer`), seeded by `seed`.
    with_images: Keep the stored images (error if the dataset has none).
    render_heatmaps: Return initial "heatmaps" (error if the dataset holds neither dense
      heatmaps nor the compact detector state).
    views: Indices of the views to keep, in order; None keeps all.
    repeat: Repeat indefinitely (each epoch reshuffled when shuffle=True).
    seed: Shuffle seed.
    rig: Expected rig; every rig of the dataset must match it (cameras, in order, geometry).
    joint_set: Expected joint set (name or JointSet).
    heatmap_size: Expected heatmap side.
    target_sigma: Gaussian sigma of the target heatmaps, heatmap pixels.
    shuffle_buffer: Frames in the shuffle buffer.
    drop_remainder: Drop the last partial batch.

  Raises:
    ValueError: `info` is not of this module's builders, a bad `views`, or images or heatmaps
      the dataset cannot provide; tfrecord.DatasetMismatchError: the dataset does not match
      `rig`, `joint_set` or `heatmap_size` (one message listing every mismatch).
  """
  metadata = dataset_metadata(info)
  _check_expectations(info, metadata, rig, joint_set, heatmap_size)
  num_views, size = int(metadata["num_views"]), int(metadata["heatmap_size"])
  stored = list(info.features.keys())
  views = pipeline.check_request(stored, num_views, views, with_images, render_heatmaps,
                                 f"dataset {info.full_name}")
  keys = [key for key in stored
          if (with_images or key != "images") and (render_heatmaps or key != "heatmaps")
          and (render_heatmaps or key not in _DETECTOR_KEYS)]
  render_state = render_heatmaps and "heatmaps" not in stored
  detector_params = metadata.get("detector") or {}
  codec = HeatmapCodec(size, target_sigma)
  view_index = None if views is None else tf.constant(views, tf.int32)

  def to_element(example):
    frame = {key: example[key] for key in keys}
    if view_index is not None:
      for key in keys:
        if key in tfrecord.PER_VIEW_KEYS:
          frame[key] = tf.gather(frame[key], view_index, axis=0)
    if render_state:
      frame["heatmaps"] = detector_lib.render_heatmaps(
          frame["peaks"], frame["amplitudes"], size, detector_params["sigma"],
          detector_params["noise_level"], frame["noise_seed"])
    for key, value in list(frame.items()):
      if value.dtype.is_floating or key == "visibility":
        frame[key] = tf.cast(value, tf.float32)
    frame["target_heatmaps"], frame["target_weights"] = codec.encode(frame["joints2d"],
                                                                     frame["visibility"])
    return frame

  if shuffle:
    dataset = dataset.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.map(to_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  return dataset.prefetch(tf.data.AUTOTUNE)


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
