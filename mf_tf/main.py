r"""mf_tf command line: one entry point, one mode per stage.

  python -m mf_tf.main --mode=MODE [--config=configs/FILE.py[:variant]] [--workdir=DIR] \
      [--config.some.key=value ...]

No --config means configs/default.py (the embedded synthetic world; nothing is downloaded).
"""

from __future__ import annotations

import dataclasses
import importlib
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

# name -> ("module:function", one-line help). Each function is run(config, workdir, args).
MODES = {
    "simulate": ("mf_tf.data.simulate_mode:run",
                 "write a synthetic multi-view dataset for a rig and a PNG contact sheet of one frame"),
    "warmup": ("mf_tf.train.warmup:run", "train the backbone on rendered images (MSE to Gaussians)"),
    "precompute": ("mf_tf.train.precompute:run", "store the pretraining rig's heatmap pool"),
    "metatrain": ("mf_tf.train.metatrain:run", "MAML over camera-pair tasks: omega_base, theta init"),
    "pretrain": ("mf_tf.train.pretrain:run", "baselines: AffineFuse / NaiveFuse by plain training"),
    "finetune": ("mf_tf.train.finetune:run", "finetune fusion (theta only) on K frames of a new rig"),
    "convert": ("mf_tf.data.convert:run", "convert a trusted annotation pickle to the safe format"),
    "export": ("mf_tf.serving.export:run", "export a TF Serving SavedModel per rig + models.config"),
    "predict": ("mf_tf.serving.client:run", "send --images of each view to --server for --rig"),
    "tflite": ("mf_tf.serving.tflite:run", "convert the backbone to TFLite; size, latency, agreement"),
    "evaluate": ("mf_tf.evaluation.evaluate:run", "JDR and MPJPE (DLT, pictorial) of fusion methods"),
    "benchmark": ("mf_tf.evaluation.benchmark:run", "paper protocol: all methods x K on held-out rigs"),
    "demo": ("mf_tf.evaluation.demo:run", "end to end: meta-train, finetune on a new rig, compare, plot"),
}

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "configs", "default.py")

_MODE = flags.DEFINE_enum(
    "mode", None, list(MODES),
    "What to run:\n" + "\n".join(f"  {name}: {text}" for name, (_, text) in MODES.items()))
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Directory for outputs, checkpoints and logs.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Experiment config file, optionally FILE.py:variant.",
    lock_config=True)
_SERVER = flags.DEFINE_string("server", "127.0.0.1:8500", "predict: TF Serving gRPC HOST:PORT.")
_RIG = flags.DEFINE_string("rig", None, "predict: served rig (model) name.")
_IMAGES = flags.DEFINE_list("images", [], "predict: one image file per view, in rig order.")


@dataclasses.dataclass(frozen=True)
class CliArgs:
  """Flags that are not part of the experiment config."""
  server: str
  rig: str | None
  images: tuple[str, ...]


def _resolve(mode: str):
  target, _ = MODES[mode]
  module_name, function_name = target.split(":")
  return getattr(importlib.import_module(module_name), function_name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
  if _MODE.value is None:
    raise app.UsageError("--mode is required; one of: " + ", ".join(MODES))
  config = _CONFIG.value
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  logging.info("mode=%s workdir=%s", _MODE.value, workdir)
  args = CliArgs(server=_SERVER.value, rig=_RIG.value, images=tuple(_IMAGES.value))
  _resolve(_MODE.value)(config, workdir, args)


if __name__ == "__main__":
  app.run(main)
