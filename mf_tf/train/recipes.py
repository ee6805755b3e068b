"""Adaptation recipes: how fusion starts on a new rig and how K labelled frames finetune it.

A recipe is a value: the candidate starts of MetaFuse^K (the first one is the recipe's init),
the training loss, the model selection, the finetuned theta parameterization and the proximal
weight. Configs name one (`config.recipe`); `mf_tf.train.adaptation.adapt` consumes it, and the
pretraining stages train what its starts read (meta-training with its loss, from the shared or
the calibrated theta). A study is a list of (recipe, K) rows.

Named recipes (`RECIPES`):
  default     the epipolar geometry of the K labelled frames' joints (no meta-training), a smooth
              4 x 4 theta residual, cross-entropy, kept by validation JDR (measured best: the
              demo and the benchmark in README.md and BUILD.md);
  paper       MetaFuse as the paper: the meta-learned shared init, per-pixel theta, MSE, early
              stopping on the validation loss;
  calibrated  both rigs calibrated (a departure from the paper): every pair's calibrated theta
              plus a meta-learned residual, and MetaFuse^0 itself as a second start.

To add a recipe, add an instance to `RECIPES`; a new start is a branch of
`mf_tf.fusion.starts.make_fusion_layer` (with its init file in
`mf_tf.checkpoints.default_init_path`).
"""

from __future__ import annotations

import dataclasses

from mf_tf.fusion import ops
from mf_tf.fusion import starts as starts_lib
from mf_tf.train import selection as selection_lib

# Starts a recipe may name (`mf_tf.fusion.starts`): those built from the rig, the K labels or
# meta-training (AffineFuse and NaiveFuse are the benchmark's baselines, not recipes).
STARTS = tuple(start for start in starts_lib.STARTS if start not in ("affine", "naive"))
# Starts whose init is the meta-training output, by the theta init meta-training starts from.
META_STARTS = {"metafuse": "shared", "metafuse_calibrated": "calibrated",
               "metafuse_self_calibrated": "shared"}
LOSSES = ops.LOSSES
SELECTIONS = selection_lib.SELECTIONS


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How fusion is adapted to a new rig from K labelled frames.

  Attributes:
    name: The recipe's name in configs (`config.recipe`).
    starts: Candidate starts of MetaFuse^K, each finetuned; the best by `selection` is kept
      (ties: the earlier). The first is the recipe's init.
    loss: Training loss of every fusion stage (`ops.fusion_loss`: "ce" or "mse", the paper's);
      meta-training and pretraining for this recipe use it too.
    selection: "val_jdr" (validation JDR, ties: lower loss) or "val_loss" (early stopping on
      the validation loss, the paper's): of the start and every epoch, and across starts.
    theta_grid: Finetuned theta of AffineFusion starts: 0 per pixel (the paper), g >= 2 a
      smooth g x g residual field over the initial theta.
    proximal: Weight of the squared distance of the trained weights from their start.
  """
  name: str
  starts: tuple
  loss: str
  selection: str
  theta_grid: int
  proximal: float = 0.0

  def __post_init__(self):
    if not self.starts or any(start not in STARTS for start in self.starts):
      raise ValueError(f"recipe {self.name!r}: starts={self.starts}, expected names of {STARTS}")
    if self.loss not in LOSSES:
      raise ValueError(f"recipe {self.name!r}: loss={self.loss!r}, expected one of {LOSSES}")
    if self.selection not in SELECTIONS:
      raise ValueError(f"recipe {self.name!r}: selection={self.selection!r}, expected one of "
                       f"{SELECTIONS}")
    if int(self.theta_grid) != self.theta_grid or self.theta_grid < 0 or self.theta_grid == 1:
      raise ValueError(f"recipe {self.name!r}: theta_grid={self.theta_grid}, expected 0 or >= 2")
    if not self.proximal >= 0:
      raise ValueError(f"recipe {self.name!r}: proximal={self.proximal}, expected >= 0")

  @property
  def init(self) -> str:
    """The first start: what the recipe's MetaFuse^K starts from."""
    return self.starts[0]

  @property
  def meta_theta_init(self) -> str | None:
    """Theta init of the meta-training this recipe reads ("shared" or "calibrated"); None when
    no start reads meta-training."""
    inits = [META_STARTS[start] for start in self.starts if start in META_STARTS]
    return inits[0] if inits else None


DEFAULT = Recipe("default", starts=("self_calibrated",), loss="ce", selection="val_jdr",
                 theta_grid=4)
PAPER = Recipe("paper", starts=("metafuse",), loss="mse", selection="val_loss", theta_grid=0)
CALIBRATED = Recipe("calibrated", starts=("metafuse_calibrated", "calibrated"), loss="ce",
                    selection="val_jdr", theta_grid=4)
RECIPES = {recipe.name: recipe for recipe in (DEFAULT, PAPER, CALIBRATED)}

# Config keys that a recipe replaced: an override naming one is refused, naming `config.recipe`.
REPLACED_KEYS = {
    "fusion.loss": "the recipe's loss",
    "finetune.method": "the recipe's starts (config.finetune.fusion picks affine or naive)",
    "finetune.selection": "the recipe's selection",
    "finetune.theta_grid": "the recipe's theta_grid",
    "finetune.proximal": "the recipe's proximal weight",
    "metatrain.theta_init": "the recipe's starts (meta-training trains what they read)",
    "demo.metafuse_init": "the recipe's starts",
    "benchmark.metafuse_init": "the recipe's starts",
}


def get_recipe(name: str) -> Recipe:
  """The named recipe; ValueError naming the known ones."""
  if name not in RECIPES:
    raise ValueError(f"unknown recipe {name!r}; expected one of {sorted(RECIPES)}")
  return RECIPES[name]


def replaced_key_message(key: str) -> str | None:
  """The error text for a config key a recipe replaced (dotted, without "config."), else None."""
  for old, new in REPLACED_KEYS.items():
    if key == old or key.endswith("." + old):
      return (f"config.{old} was replaced by config.recipe ({new}); expected "
              f"--config.recipe=NAME, one of {sorted(RECIPES)} (mf_tf/train/recipes.py)")
  return None
