"""Small exported rigs shared by the serving tests."""

import pytest
from config_settings import batching_settings
from serving_test_helpers import (IMAGE_SIZE, NUM_JOINTS, TOP_K, distorted_rig,
                                  set_batch_norm_statistics, smooth_images,
                                  trained_like_fusion)

from mf_tf.geometry.rig import Rig
from mf_tf.models.backbone import build_backbone
from mf_tf.serving import export


@pytest.fixture(scope="session")
def small_backbone():
  backbone = build_backbone("mobilenetv2_035", IMAGE_SIZE, NUM_JOINTS)
  set_batch_norm_statistics(backbone, smooth_images(16, seed=100))
  return backbone


@pytest.fixture(scope="session")
def exported(tmp_path_factory, small_backbone):
  """Two rigs exported into one export folder: "toy3" (dense fusion) and "toy3_sparse" (top-k)."""
  export_dir = str(tmp_path_factory.mktemp("export"))
  rig = distorted_rig()
  fusion = trained_like_fusion()
  dense = fusion.materialize()
  sparse = fusion.materialize(top_k=TOP_K)
  dense_path = export.export_rig(small_backbone, dense, rig, export_dir,
                                 batching=batching_settings())
  sparse_rig = Rig("toy3_sparse", rig.cameras, up=rig.up, floor=rig.floor)
  sparse_path = export.export_rig(small_backbone, sparse, sparse_rig, export_dir,
                                  batching=batching_settings())
  return {"dir": export_dir, "rig": rig, "fusion": fusion, "dense": dense, "sparse": sparse,
          "dense_path": dense_path, "sparse_path": sparse_path, "backbone": small_backbone}
