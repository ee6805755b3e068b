r"""MetaFuse at paper scale (Sec. 5.1): for an accelerator, not for a 2-core CPU.

  python -m mf_tf.main --mode=warmup     --config=configs/metafuse_paper.py --workdir=/tmp/mf_paper
  python -m mf_tf.main --mode=precompute --config=configs/metafuse_paper.py --workdir=/tmp/mf_paper
  python -m mf_tf.main --mode=metatrain  --config=configs/metafuse_paper.py --workdir=/tmp/mf_paper
  python -m mf_tf.main --mode=finetune   --config=configs/metafuse_paper.py --workdir=/tmp/mf_paper

ResNet50 at 256 -> 64 px, warm-up 30 epochs (Adam 1e-3, /10 at 15 and 25), MAML over the 380
ordered pairs of the 20 Panoptic cameras with Adam 1e-3 (second order), finetuning with Adam 5e-3
on K labelled frames. Everything else comes from configs/default.py.
"""

import importlib.util
import os


def _default_config(arg):
  # Loaded by path: configs/ is a folder of config files, not a package.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py")
  spec = importlib.util.spec_from_file_location("mf_tf_default_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg=None):
  config = _default_config(None)
  config.model.backbone = "resnet50"  # Paper: SimpleBaseline with ResNet50.
  config.warmup.num_frames = 20000  # Rendered frames (x views) for the backbone.
  config.warmup.views = 20  # Every camera of the pretraining rig.
  config.warmup.epochs = 30  # Paper Sec. 5.1.
  config.warmup.batch_size = 32
  config.precompute.num_frames = 5000  # Pool of the 20-camera rig (compact detector state).
  config.metatrain.num_steps = 20000  # Outer steps.
  config.metatrain.tasks_per_step = 8  # Pairs per step (a multiple of the replicas).
  config.metatrain.support_size = 8
  config.metatrain.query_size = 8
  config.metatrain.checkpoint_every = 500
  config.pretrain.epochs = 30
  config.finetune.epochs = 200  # EarlyStopping decides.
  config.finetune.patience = 10
  if arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; expected none")
  return config
