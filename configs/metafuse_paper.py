r"""MetaFuse at paper scale (Sec. 5.1): for an accelerator, not for a 2-core CPU.

  python -m mf_tf.main --mode=warmup     --config=configs/metafuse_paper.py --workdir=/tmp/mf_paper
  python -m mf_tf.main --mode=precompute --config=configs/metafuse_paper.py --workdir=/tmp/mf_paper
  python -m mf_tf.main --mode=metatrain  --config=configs/metafuse_paper.py --workdir=/tmp/mf_paper
  python -m mf_tf.main --mode=finetune   --config=configs/metafuse_paper.py --workdir=/tmp/mf_paper

The paper's pipeline, each stage reading the one before: the warm-up trains the ResNet50 backbone
(256 -> 64 px, 30 epochs, Adam 1e-3, /10 at 15 and 25); precompute runs it over the 20 Panoptic
cameras' rendered frames (warmup/backbone.keras -> precompute/pool.npz); MAML meta-trains over
their 380 ordered pairs on that pool (Adam 1e-3, second order, MSE -> metatrain/meta_params.npz);
finetuning adapts theta from that init on K labelled frames with the paper recipe
(`mf_tf.train.recipes.PAPER`: per-pixel theta, MSE, Adam 5e-3, early stopping on the validation
loss). Everything else comes from configs/default.py. `:smoke` runs the same stages at toy
scale (tests/test_recipe_stages.py).
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
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config variant {arg!r}; expected none or 'smoke'")
  config = _default_config(arg or None)
  config.recipe = "paper"  # Meta-learned shared init, per-pixel theta, MSE (recipes.PAPER).
  config.precompute.source = "backbone"  # Meta-training reads the warm-up backbone's heatmaps.
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
  config.finetune.epochs = 200  # The recipe's selection stops earlier (patience).
  config.finetune.patience = 10
  if arg == "smoke":  # The same stages on toy shapes: 16 px heatmaps, a few frames and steps.
    config.heatmap_size = 16
    config.image_size = 64
    config.model.backbone = "mobilenetv2_035"
    config.warmup.num_frames = 2
    config.warmup.views = 2
    config.warmup.epochs = 1
    config.warmup.batch_size = 4
    config.precompute.num_frames = 4
    config.metatrain.num_steps = 2
    config.metatrain.tasks_per_step = 2
    config.metatrain.support_size = 2
    config.metatrain.query_size = 2
    config.metatrain.holdout_pairs = 0
    config.metatrain.checkpoint_every = 2
    config.finetune.shots = 6
    config.finetune.epochs = 2
    config.finetune.patience = 2
  return config
