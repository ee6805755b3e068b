"""TFDS builders of real multi-view datasets read from a manual download: Human3.6M, CMU
Panoptic and Total Capture (registered by import; listed in `mf_tf.data.tfds_builders.BUILDERS`).

Each reads its configs' splits from manual_dir into sources (3D poses of one rig) and writes their
frames with `tfrecord.frames_from_poses`: the features and metadata are described in
`mf_tf.data.tfds_builders`. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from mf_tf.data import h36m as h36m_lib
from mf_tf.data import joints as joints_lib
from mf_tf.data import panoptic as panoptic_lib
from mf_tf.data import tfds_features
from mf_tf.data import tfrecord
from mf_tf.data import totalcapture as totalcapture_lib
from mf_tf.geometry import calibration
from mf_tf.geometry.rig import Rig


def _checked_frame_step(builder_name: str, config) -> int:
  """A config's frame_step (keep every frame_step-th frame), or ValueError if it is below 1."""
  if int(config.frame_step) < 1:
    raise ValueError(f"{builder_name} config {config.name!r}: frame_step={config.frame_step}, "
                     "expected >= 1")
  return int(config.frame_step)


def _sequences(splits) -> list[str]:
  """The distinct sequences of a config's (split, sequences) pairs, sorted."""
  return sorted({seq for _, split_sequences in splits for seq in split_sequences})


class _PoseBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared reading and frame writing of the real-data builders: poses ->
  `tfrecord.frames_from_poses`.

  The config's `splits` pairs a split name with its items (subjects or sequences); each item is
  read into one source, a dict with "rig_key", "rig" and the reader's arrays ("joints3d"
  [N, J, 3], optional "confidence" [N, J] and "image_paths" [N, V], and the provenance arrays
  named by `_extra_features`). A subclass sets JOINT_SET, `_num_views()`, `_extra_features()`,
  `_required_paths()` (relative to manual_dir, checked before reading) and
  `_read_source(manual_dir, split, item)`, and may check its config in `_check_config()`.
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

  def _check_config(self) -> None:
    """Raises ValueError for a config that cannot be read; every config passes by default."""

  def _required_paths(self) -> list[str]:
    raise NotImplementedError

  def _read_source(self, manual_dir: str, split: str, item) -> dict:
    raise NotImplementedError

  def _manual_dir(self, dl_manager) -> str:
    """The manual folder, or FileNotFoundError naming it and the expected layout."""
    try:
      return os.fspath(dl_manager.manual_dir)
    except AssertionError as error:  # TFDS asserts that the folder exists and is not empty.
      # Its message: "Manual directory <path> does not exist or is empty. Create it and ...".
      reason = str(error).split(". Create it")[0]
      raise FileNotFoundError(f"{self.name}: {reason}; pass manual_dir= (offline_download_config)"
                              f" with this layout:{self.MANUAL_DOWNLOAD_INSTRUCTIONS}") from None

  def _require_paths(self, manual_dir: str, relative: Sequence[str]) -> None:
    missing = [path for path in relative if not os.path.exists(os.path.join(manual_dir, path))]
    if missing:
      shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6
                                        else "")
      raise FileNotFoundError(f"{self.name}: manual_dir {manual_dir} lacks {shown}; "
                              f"expected:{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

  def _read(self, manual_dir: str) -> dict:
    """{split: [source, ...]}, one source per item of the split, in config order."""
    self._check_config()
    self._require_paths(manual_dir, self._required_paths())
    return {split: [self._read_source(manual_dir, split, item) for item in items]
            for split, items in self.builder_config.splits}

  def _info(self) -> tfds.core.DatasetInfo:
    joint_set = joints_lib.get_joint_set(self.JOINT_SET)
    views = self._num_views()
    features = tfds_features.frame_features(views, joint_set.num_joints)
    features["rig"] = tfds.features.Text()
    if self.HAS_IMAGE_PATHS:
      features["image_paths"] = tfds_features.tensor((views,), np.object_)
    features.update(self._extra_features())
    metadata = tfds.core.MetadataDict(
        format=tfds_features.FORMAT_NAME, joint_set=joint_set.name,
        num_joints=joint_set.num_joints, num_views=views,
        heatmap_size=int(self.builder_config.heatmap_size), rigs={})
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features), metadata=metadata,
        disable_shuffling=True, homepage=self.HOMEPAGE)

  def _split_generators(self, dl_manager):
    sources = self._read(self._manual_dir(dl_manager))
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

  def _check_config(self) -> None:
    config = self.builder_config
    folders = dict(config.annotations)
    missing_splits = [split for split, _ in config.splits if split not in folders]
    if missing_splits:
      raise ValueError(f"{self.name} config {config.name!r}: splits {missing_splits} have no "
                       f"annotation folder; annotations name {sorted(folders)}")

  def _required_paths(self) -> list[str]:
    config = self.builder_config
    folders = dict(config.annotations)
    return [os.path.join(folders[split], file) for split, _ in config.splits
            for file in ("manifest.json", "annotations.npz", "cameras.json")]

  def _read_source(self, manual_dir: str, split: str, item) -> dict:
    config = self.builder_config
    subject = int(item)
    folder = os.path.join(manual_dir, dict(config.annotations)[split])
    data = h36m_lib.read_h36m_multiview(folder, subject, actions=list(config.actions) or None)
    count = len(data["joints3d"])
    return {"rig_key": data["rig"].name, "rig": data["rig"], "joints3d": data["joints3d"],
            "image_paths": data["image_paths"], "subject": np.full(count, subject),
            "action": data["action"], "subaction": data["subaction"],
            "image_id": data["image_id"]}


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

  def _check_config(self) -> None:
    _checked_frame_step(self.name, self.builder_config)

  def _calibration_file(self, seq: str) -> str:
    """A sequence's calibration JSON, relative to manual_dir."""
    return dict(self.builder_config.calibrations).get(
        seq, os.path.join(seq, f"calibration_{seq}.json"))

  def _required_paths(self) -> list[str]:
    return [path for seq in _sequences(self.builder_config.splits)
            for path in (self._calibration_file(seq), os.path.join(seq, panoptic_lib.POSE_DIR))]

  def _read_source(self, manual_dir: str, split: str, item) -> dict:
    config, seq = self.builder_config, item
    data = panoptic_lib.read_panoptic_sequence(
        os.path.join(manual_dir, seq), config.camera_type, list(config.camera_names),
        calibration_path=os.path.join(manual_dir, self._calibration_file(seq)))
    frames = np.unique(data["frame_ids"])[::_checked_frame_step(self.name, config)]
    keep = np.isin(data["frame_ids"], frames)
    rig = data["rig"]
    key = f"panoptic_{seq}"
    return {
        "rig_key": key, "rig": Rig(key, rig.cameras, up=rig.up, floor=rig.floor),
        "joints3d": data["joints3d"][keep], "confidence": data["confidence"][keep],
        "image_paths": np.vectorize(lambda path: os.path.relpath(path, manual_dir),
                                    otypes=[str])(data["image_paths"][keep]),
        "sequence": np.full(int(keep.sum()), seq), "frame_id": data["frame_ids"][keep],
        "body_id": data["body_ids"][keep]}


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

  def _check_config(self) -> None:
    _checked_frame_step(self.name, self.builder_config)

  def _required_paths(self) -> list[str]:
    config = self.builder_config
    return [config.calibration] + [os.path.join(seq, config.positions_file)
                                   for seq in _sequences(config.splits)]

  def _read_source(self, manual_dir: str, split: str, item) -> dict:
    config, seq = self.builder_config, item
    data = totalcapture_lib.read_totalcapture_sequence(
        os.path.join(manual_dir, config.calibration),
        os.path.join(manual_dir, seq, config.positions_file), list(config.camera_names))
    keep = slice(None, None, _checked_frame_step(self.name, config))
    frame_ids = data["frame_ids"][keep]
    return {"rig_key": data["rig"].name, "rig": data["rig"], "joints3d": data["joints3d"][keep],
            "sequence": np.full(len(frame_ids), seq), "frame_id": frame_ids}
