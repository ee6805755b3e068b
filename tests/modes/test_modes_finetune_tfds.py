"""--mode=finetune reads its labelled frames from a TFDS dataset prepared offline."""

import numpy as np

from configs import default
from mf_tf import checkpoints
from mf_tf.data import tfds_builders
from mf_tf.modes import finetune


def test_finetune_reads_a_prepared_synthetic_world(tmp_path):
  config = default.get_config("smoke")
  size = int(config.heatmap_size)
  data_dir = tmp_path / "tfds"
  builder = tfds_builders.make_builder(
      "mf_tf_synthetic_world", data_dir,
      tfds_builders.SyntheticWorldConfig(name="h36m_tiny", rig="h36m", heatmap_size=size,
                                         splits=(("train", 12),), seed=5))
  tfds_builders.prepare(builder)
  config.finetune.tfds = "mf_tf_synthetic_world/h36m_tiny"
  config.data.tfds_dir = str(data_dir)
  config.finetune.shots = 8
  rig_dir = finetune.run(config, str(tmp_path / "work"))
  _, rig, meta = checkpoints.load_finetuned(rig_dir)
  assert rig.name == "h36m" and meta["shots"] == 8 and meta["heatmap_size"] == size
  history = meta["history"]
  assert history["epochs"] >= 1 and np.isfinite(history["val_loss"][-1])
  dataset, _ = tfds_builders.load_training_dataset(
      config.finetune.tfds, "train", data_dir, 12, rig=rig, heatmap_size=size)
  joints = next(iter(dataset))["joints2d"].numpy()
  assert joints.shape == (12, rig.num_views, 17, 2)
  assert np.isfinite(joints).any()
