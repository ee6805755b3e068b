"""What every TFDS builder of mf_tf writes: the metadata format name and the per-frame features.

The features are the TFRecord examples' common arrays (`mf_tf.data.tfrecord`); the builders and
their datasets are described in `mf_tf.data.tfds_builders`.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

# The "format" entry of a dataset's metadata: written by these builders, checked when loading.
FORMAT_NAME = "mf_tf.tfds"


def tensor(shape, dtype=np.float32, **kwargs) -> tfds.features.Tensor:
  """A fixed-shape Tensor feature (`shape` of ints, float32 unless `dtype`)."""
  return tfds.features.Tensor(shape=tuple(int(s) for s in shape), dtype=dtype, **kwargs)


def frame_features(num_views: int, num_joints: int) -> dict:
  """Features every builder stores: frame_index [], joints3d [J, 3], joints2d [V, J, 2],
  visibility [V, J] and head_size [V] (V = num_views, J = num_joints)."""
  return {
      "frame_index": tfds.features.Scalar(np.int64),
      "joints3d": tensor((num_joints, 3)),
      "joints2d": tensor((num_views, num_joints, 2)),
      "visibility": tensor((num_views, num_joints)),
      "head_size": tensor((num_views,)),
  }
