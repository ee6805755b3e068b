"""Multi-view pose models: a shared backbone over every view, then cross-view heatmap fusion.

    images [B, V, S, S, 3] -> backbone per view (shared weights) -> heatmaps [B, V, H, W, J]
      -> fusion layer (AffineFusion / NaiveFusion / NoFusion) -> fused [B, V, H, W, J]

Both models are functional Keras models of registered layers only (no Lambda), so they save to
`.keras` and load with `safe_mode=True`. The backbone runs on the B*V images at once
(`TimeDistributed` folds the view axis into the batch).
"""

from __future__ import annotations

import keras


def build_multiview_model(backbone: keras.Model, fusion: keras.layers.Layer, num_views: int,
                          name: str = "multiview_pose") -> keras.Model:
  """Shared backbone over V views followed by a fusion layer.

  Args:
    backbone: Maps images [N, S, S, 3] (float32, 0..255) to heatmaps [N, H, W, J]
      (see `mf_tf.models.backbone.build_backbone`).
    fusion: Maps heatmaps [B, V, H, W, J] to fused heatmaps of the same shape.
    num_views: V, the rig's number of cameras (>= 1; fusion layers need >= 2).
    name: Model name.

  Returns:
    A `keras.Model` with input "images" [B, V, S, S, 3] and outputs
    {"heatmaps": [B, V, H, W, J] initial, "fused": [B, V, H, W, J]}.
  """
  if num_views < 1:
    raise ValueError(f"num_views must be at least 1, got {num_views}")
  image_shape = tuple(backbone.input_shape[1:])
  if len(image_shape) != 3 or None in image_shape:
    raise ValueError(f"backbone input must be [N, S, S, 3] with known sizes, got "
                     f"{backbone.input_shape}")
  images = keras.Input((num_views,) + image_shape, name="images")
  heatmaps = keras.layers.TimeDistributed(backbone, name="per_view_backbone")(images)
  heatmaps = keras.layers.Identity(name="heatmaps")(heatmaps)
  fused = fusion(heatmaps)
  fused = keras.layers.Identity(name="fused")(fused)
  return keras.Model(images, {"heatmaps": heatmaps, "fused": fused}, name=name)


def build_fusion_model(fusion: keras.layers.Layer, num_views: int, heatmap_size: int,
                       num_joints: int, name: str = "multiview_fusion") -> keras.Model:
  """Fusion alone, on precomputed heatmaps (meta-training, finetuning, evaluation).

  Args:
    fusion: Maps heatmaps [B, V, H, W, J] to fused heatmaps of the same shape.
    num_views: V.
    heatmap_size: H = W.
    num_joints: J.
    name: Model name.

  Returns:
    A `keras.Model` with input "heatmaps" [B, V, H, W, J] and outputs
    {"heatmaps": the input, "fused": [B, V, H, W, J]}.
  """
  if num_views < 1 or heatmap_size < 1 or num_joints < 1:
    raise ValueError(f"num_views, heatmap_size and num_joints must be positive, got "
                     f"{num_views}, {heatmap_size}, {num_joints}")
  heatmaps = keras.Input((num_views, heatmap_size, heatmap_size, num_joints), name="heatmaps")
  initial = keras.layers.Identity(name="initial")(heatmaps)
  fused = keras.layers.Identity(name="fused")(fusion(heatmaps))
  return keras.Model(heatmaps, {"heatmaps": initial, "fused": fused}, name=name)
