r"""The few-shot adaptation study: rows of recipes, each run with every method on the same rigs.

  python -m benchmarks.adaptation_study --workdir=/tmp/mf_study
  python -m benchmarks.adaptation_study --workdir=/tmp/mf_study --config.run=paper,default \
      --config.shots=10

A row is a recipe (`mf_tf.train.recipes.Recipe` fields: loss, selection, theta_grid, proximal;
its starts are the study's `methods`) and the study's other settings of that row (step budgets,
pretraining loss, line peak, 3D read-out). Every row starts from the paper's row and names what it
changes. The pretrained models come from configs/benchmark.py's default settings (cached in the
workdir per pretraining loss and line peak); the results table is in README.md and BUILD.md.
"""

import ml_collections

# The paper's recipe (MSE, early stopping on the validation loss, per-pixel theta) and the
# paper's budgets; `outlier_px` 0 is the plain DLT.
_PAPER_ROW = dict(loss="mse", selection="val_loss", theta_grid=0, proximal=0.0,
                  learning_rate=5e-3, steps=40, naive_learning_rate=1e-4, naive_steps=40,
                  outlier_px=0.0, pretrain_loss="mse", line_value=0.3, full=False)
_JDR = dict(selection="val_jdr")


def _row(**changes):
  return ml_collections.ConfigDict(dict(_PAPER_ROW, **changes))


def get_config(arg=None):
  if arg not in (None, ""):
    raise ValueError(f"unknown study config variant {arg!r}; expected none")
  config = ml_collections.ConfigDict()
  config.rigs = "panoptic_heldout6,h36m,shelf,ring4"  # Held-out rigs (4 of the 6 Panoptic ones).
  config.shots = 50  # K labelled frames.
  config.test_frames = 60  # Test frames per rig.
  config.full_frames = 400  # Training frames of NaiveFuse^full.
  config.seed = 0  # Base seed of every rig's frames and of the pretraining.
  config.methods = "naive,affine,metafuse,calibrated"  # Finetuned starts of every row.
  config.run = ""  # Rows to run, comma-separated; "": all.
  config.rows = ml_collections.ConfigDict({
      "paper": _row(),
      "sel_jdr": _row(**_JDR),
      "ce": _row(**_JDR, loss="ce"),
      "grid4": _row(**_JDR, theta_grid=4),
      "grid8": _row(**_JDR, theta_grid=8),
      "grid4_ce": _row(**_JDR, theta_grid=4, loss="ce"),
      "grid4_lr2": _row(**_JDR, theta_grid=4, learning_rate=2e-2),
      "prox": _row(**_JDR, proximal=1.0),
      "naive_lr": _row(**_JDR, naive_learning_rate=1e-3, full=True),
      "naive_paper_full": _row(full=True),
      "robust3d": _row(**_JDR, outlier_px=2.0),
      "grid4_ce_lv01": _row(**_JDR, theta_grid=4, loss="ce", line_value=0.1),
      "ce_all": _row(**_JDR, theta_grid=4, loss="ce", line_value=0.1, pretrain_loss="ce"),
      "naive_ce_lr3": _row(**_JDR, loss="ce", naive_learning_rate=1e-3, full=True),
      "naive_ce_lr2": _row(**_JDR, loss="ce", naive_learning_rate=1e-2, full=True),
      "default": _row(**_JDR, theta_grid=4, loss="ce", line_value=0.1, pretrain_loss="ce",
                      naive_learning_rate=1e-3),
      "ce_all_pixel": _row(**_JDR, loss="ce", line_value=0.1, pretrain_loss="ce"),
  })
  return config
