"""The pretraining stage: meta-training of what a recipe's starts read, on the pretraining rig.

A recipe (`mf_tf.train.recipes`) names its starts; the starts "metafuse*" read meta-parameters
learned here, with the recipe's loss, from the theta the recipe's meta-training starts from:
"shared" (the paper: one theta for every pair, `metatrain.default_meta_params`) or "calibrated"
(every pair's calibrated theta plus a shared residual, `metatrain.calibrated_meta_init`).
--mode=metatrain, the demo, the benchmark and the studies all pretrain through `meta_training`;
its output is what `mf_tf.fusion.starts.make_fusion_layer` takes as `init`.
"""

from __future__ import annotations

import dataclasses

from mf_tf.meta import maml
from mf_tf.meta import tasks as tasks_lib
from mf_tf.train import metatrain
from mf_tf.train import recipes as recipes_lib


def meta_start(recipe: recipes_lib.Recipe, rig, heatmap_size: int, line_width_px: float,
               line_value: float) -> tuple[maml.MetaParams, object]:
  """(init, theta_by_pair) that the recipe's meta-training starts from.

  theta_by_pair is None for the shared theta ("shared", also when no start reads meta-training),
  else [P, HW, 6] calibrated theta of the pretraining rig's pairs, from its line base.
  """
  if recipe.meta_theta_init == "calibrated":
    return metatrain.calibrated_meta_init(rig, heatmap_size, line_width_px, line_value)
  return metatrain.default_meta_params(heatmap_size), None


def meta_training(recipe: recipes_lib.Recipe, pool: tasks_lib.FramePool, pairs,
                  settings: metatrain.MamlSettings, *, rig, line_width_px: float,
                  line_value: float, **loop_options) -> maml.MetaParams:
  """Meta-trains the init of the recipe's MetaFuse starts (the recipe's loss and theta start).

  Args:
    recipe: Gives the loss and `meta_theta_init` ("shared" when no start reads one).
    pool: Frames of the pretraining rig.
    pairs: [P, 2] its ordered pairs that are tasks.
    settings: MAML settings; their loss is replaced by the recipe's.
    rig: The pretraining rig (the calibrated start's pair geometry).
    line_width_px, line_value: The calibrated line base.
    **loop_options: `metatrain.metatrain_fusion` options (workdir, progress, strategy, ...).
  """
  init, theta_by_pair = meta_start(recipe, rig, pool.heatmap_size, line_width_px, line_value)
  settings = dataclasses.replace(settings, loss=recipe.loss)
  return metatrain.metatrain_fusion(pool, pairs, settings, init=init,
                                    theta_by_pair=theta_by_pair, **loop_options)
