"""What several modes read from the config: rigs, recipe, fusion settings, target sigma, strategy.

The only place besides each mode's own file where the config is read; everything returned is a
plain value or a library object.
"""

from __future__ import annotations

import tensorflow as tf

from mf_tf import files
from mf_tf.fusion.settings import FusionSettings
from mf_tf.geometry import rigs
from mf_tf.geometry.rig import Rig
from mf_tf.train import common as train_common
from mf_tf.train import recipes
from mf_tf.train.metatrain import MamlSettings

RIG_ROLES = ("pretrain", "target")


def rig(config, role: str = "target") -> Rig:
  """The rig of `config.rig.<role>` (a built-in name or a canonical rig file)."""
  if role not in RIG_ROLES:
    raise ValueError(f"rig role {role!r}, expected one of {RIG_ROLES}")
  return rigs.get_rig(str(config.rig[role]))


def rig_output_dir(workdir: str, mode: str, rig: Rig) -> str:
  """<workdir>/<mode>/<rig name>: its real path, proved inside `workdir` before anything is written.

  Raises:
    UnsafePathError: the rig's name is not a safe name or the path leaves `workdir`.
  """
  return files.inside(workdir, mode, files.check_name(rig.name, "rig name"))


def recipe(config) -> recipes.Recipe:
  """The `recipes.Recipe` named by `config.recipe`."""
  try:
    return recipes.get_recipe(str(config.recipe))
  except ValueError as error:
    raise ValueError(f"config.recipe: {error}") from None


def fusion_settings(config) -> FusionSettings:
  """`FusionSettings` of `config.fusion` with the recipe's training loss (validated)."""
  section = config.fusion
  return FusionSettings(temperature=float(section.temperature),
                        loss_temperature=float(section.loss_temperature),
                        loss=recipe(config).loss, line_width_px=float(section.line_width_px),
                        line_value=float(section.line_value))


def target_sigma(config, heatmap_size: int | None = None) -> float:
  """Gaussian target std in heatmap px of `config.model.target_sigma` (given at 64 px)."""
  size = int(config.heatmap_size if heatmap_size is None else heatmap_size)
  return train_common.target_sigma(config.model.target_sigma, size)


def strategy(config) -> tf.distribute.Strategy:
  """The tf.distribute strategy of `config.distribute`."""
  return train_common.get_strategy(str(config.distribute))


def maml_settings(section, config, target_sigma: float) -> MamlSettings:
  """`MamlSettings` of a config section holding the MAML fields of config.metatrain.

  The one reader of those fields, for config.metatrain, config.demo.maml and
  config.benchmark.maml alike; the loss and its temperature are the shared fusion settings'.

  Args:
    section: num_steps, tasks_per_step, support_size, query_size, inner_lr, inner_steps,
      outer_lr, first_order, inner_omega.
    config: The experiment config (fusion settings, seed).
    target_sigma: Gaussian target std in the heatmap pixels of the run.
  """
  fusion = fusion_settings(config)
  return MamlSettings(
      num_steps=int(section.num_steps), tasks_per_step=int(section.tasks_per_step),
      support_size=int(section.support_size), query_size=int(section.query_size),
      inner_lr=float(section.inner_lr), inner_steps=int(section.inner_steps),
      outer_lr=float(section.outer_lr), first_order=bool(section.first_order),
      temperature=fusion.loss_temperature, target_sigma=float(target_sigma),
      seed=int(config.seed), inner_omega=bool(section.inner_omega), loss=fusion.loss)
