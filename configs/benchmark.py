r"""The paper's benchmark protocol (Sec. 5.1-5.2, Figure 7) on the synthetic world.

  python -m mf_tf.main --mode=benchmark --config=configs/benchmark.py --workdir=/tmp/mf_bench
  python -m mf_tf.main --mode=benchmark --config=configs/benchmark.py:smoke --workdir=/tmp/mf_s
  python -m mf_tf.main --mode=benchmark --config=configs/benchmark.py:full --workdir=/tmp/mf_f
  python -m mf_tf.main --mode=benchmark --config=configs/benchmark.py:images --workdir=/tmp/mf_i

Variants:
  (none)  sized for 2 CPU cores: 32x32 heatmaps, short meta-training, 1 Panoptic trial,
          Human3.6M and Shelf, K in {50, 500}, MPJPE by triangulation (no RPSM); its time is
          measured in BUILD.md.
  smoke   a few minutes in CI: 16x16 heatmaps, a handful of steps, K = 50 only.
  full    paper scale (64x64 heatmaps, long meta-training, 5 Panoptic trials): for an accelerator.
  images  the rendered-image backbone path instead of the simulated detector (small, slower).

Everything outside `config.benchmark` comes from configs/default.py (detector, fusion, RPSM, and
`config.recipe`, the recipe of the MetaFuse^K rows and of every method's training).
"""

import importlib.util
import os

import ml_collections


def _default_config(arg):
  # Loaded by path: configs/ is a folder of config files, not a package.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py")
  spec = importlib.util.spec_from_file_location("mf_tf_default_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _fit(steps, learning_rate, batch_size=8):
  return ml_collections.ConfigDict(
      {"steps": steps, "learning_rate": learning_rate, "batch_size": batch_size})


def get_config(arg=None):
  variants = (None, "", "smoke", "full", "images")
  if arg not in variants:
    raise ValueError(f"unknown benchmark config variant {arg!r}; expected one of {variants[1:]}")
  config = _default_config("smoke" if arg == "smoke" else None)
  config.heatmap_size = 32  # CPU-sized: a 4-view rig's fusion matrices are 12 x 1024^2.
  config.image_size = 128
  config.evaluate.coarse_bins = 8  # RPSM: 250 mm cells, refined 3 times to 31 mm ...
  config.evaluate.refine_iterations = 3  # ... (the 2D error dominates at 32 px heatmaps).
  config.eval_rig_files = ""  # Extra held-out rigs: comma-separated canonical rig JSON files.

  config.benchmark = ml_collections.ConfigDict()
  bench = config.benchmark
  bench.source = "detector"  # detector (simulated heatmaps) | images (rendered + backbone).
  bench.progress = True  # Progress bars during training (in this process; workers log).
  bench.workers = 2  # Processes running held-out trials side by side (a train step uses 1 core).
  bench.worker_threads = 0  # TensorFlow threads per worker; 0: its default, every core (faster
  # than 1 thread per worker on 2 cores: measured in BUILD.md).
  bench.target_sigma = 2.0 * config.heatmap_size / 64  # Gaussian targets, 2 px at 64 px.
  bench.pretrain_frames = 400  # Frames on the 20-camera pretraining rig.
  bench.maml = ml_collections.ConfigDict()
  bench.maml.num_steps = 120  # MAML outer steps (paper: hours on a GPU; see :full).
  bench.maml.tasks_per_step = 4  # Ordered pairs per outer step.
  bench.maml.support_size = 4  # Frames per task for the inner step.
  bench.maml.query_size = 4  # Frames per task for the outer loss.
  bench.maml.inner_lr = 0.1  # Inner SGD alpha: best one-step value at 32 px (1.0 diverges).
  bench.maml.inner_steps = 1
  bench.maml.outer_lr = 1e-3  # Paper: Adam 1e-3 in meta-training.
  bench.maml.first_order = False  # Second-order MAML, as in the paper.
  bench.maml.inner_omega = True  # Inner steps adapt omega_base too (paper Eq. 5).
  bench.affine_pretrain = _fit(60, 1e-3)  # AffineFuse: plain Adam on the same pair tasks.
  bench.naive_pretrain = _fit(150, 1e-3)  # NaiveFuse, first V pretraining cameras (the Adam
  # rate: measured in BUILD.md, "Measured settings").
  bench.panoptic_rig = "panoptic_heldout6"  # Held-out Panoptic cameras (never pretrained on).
  bench.panoptic_trials = 1  # Trials of 4 of the 6 cameras, averaged (paper: several; :full 5).
  bench.panoptic_views = 4
  bench.heldout_rigs = "h36m,shelf"  # Other held-out rigs (built-in names or rig files).
  bench.shots = "50,500"  # K: labelled frames of the target rig for finetuning (the checks use
  # these two; :full adds 100 and 200 for Figure 7's curve).
  bench.train_frames = 1000  # Target-rig training frames; NaiveFuse^full trains on all.
  bench.test_frames = 200  # Target-rig test frames (another seed); fewer leave MPJPE to a few
  # gross errors (measured in BUILD.md).
  bench.finetune = _fit(40, 5e-3)  # Theta only (MetaFuse, AffineFuse); paper Adam 5e-3.
  bench.naive_finetune = _fit(40, 1e-3)  # NaiveFuse^K from its pretrained matrices.
  bench.naive_full = _fit(300, 1e-3)  # NaiveFuse^full Adam steps on all training frames.
  bench.naive_full_solver = "epipolar"  # ... starting from the better (validation JDR) of the
  # exact MSE optimum scaled by validation JDR and the epipolar matrices of the geometry that the
  # training labels give ("least_squares": the first only; "fit": from zero, as the paper).
  # benchmarks/naive_full_study.py compares the starts (measured in BUILD.md).
  bench.paper_rows = True  # Also MetaFuse^K with the paper recipe ("metafuse_paper" rows).
  bench.pictorial = False  # RPSM MPJPE too (slow on a CPU; on in :full).
  bench.images = ml_collections.ConfigDict()  # source=images: backbone warm-up.
  bench.images.backbone = "mobilenetv2_035"  # Small SimpleBaseline for CPUs.
  bench.images.weights = ""  # Optional local .weights.h5 to start from.
  bench.images.image_size = 128  # Must be 4 x heatmap_size.
  bench.images.frames = 64  # Pretraining-rig frames (x 20 views) for the warm-up.
  bench.images.epochs = 2
  bench.images.batch_size = 16
  bench.images.learning_rate = 1e-3

  variant = {"smoke": _smoke, "full": _full, "images": _images}.get(arg)
  if variant is not None:
    variant(config, bench)
  return config


def _smoke(config, bench):
  """`:smoke`: a few minutes in CI."""
  config.heatmap_size = 16
  config.image_size = 64
  config.evaluate.coarse_bins = 6
  config.evaluate.refine_iterations = 1
  config.evaluate.limb_frames = 50
  bench.progress = False
  bench.target_sigma = 2.0 * config.heatmap_size / 64
  bench.pretrain_frames = 24
  bench.maml.num_steps = 4
  bench.maml.tasks_per_step = 2
  bench.maml.support_size = 2
  bench.maml.query_size = 2
  bench.affine_pretrain = _fit(4, 1e-3)
  bench.naive_pretrain = _fit(4, 1e-4)
  bench.panoptic_trials = 1
  bench.heldout_rigs = "h36m"
  bench.shots = "50"
  bench.train_frames = 50
  bench.test_frames = 16
  bench.finetune = _fit(15, 5e-3)
  bench.naive_finetune = _fit(5, 1e-4)
  bench.naive_full = _fit(5, 1e-4)


def _full(config, bench):
  """`:full`: paper scale, for an accelerator."""
  bench.pictorial = True
  bench.shots = "50,100,200,500"
  config.heatmap_size = 64  # Paper: 256 px images, 64 px heatmaps.
  config.image_size = 256
  config.evaluate.coarse_bins = 16  # CrossView's RPSM grid.
  config.evaluate.refine_iterations = 5
  bench.target_sigma = 2.0
  bench.pretrain_frames = 4000
  bench.maml.num_steps = 5000
  bench.maml.tasks_per_step = 8
  bench.maml.support_size = 8
  bench.maml.query_size = 8
  bench.affine_pretrain = _fit(5000, 1e-3)
  bench.naive_pretrain = _fit(5000, 1e-4)
  bench.panoptic_trials = 5
  bench.train_frames = 5000
  bench.test_frames = 500
  bench.finetune = _fit(500, 5e-3, 16)
  bench.naive_finetune = _fit(500, 1e-4, 16)
  bench.naive_full = _fit(5000, 1e-4, 16)


def _images(config, bench):
  """`:images`: the rendered-image backbone path."""
  config.heatmap_size = 16  # Rendered 64 px images through the backbone.
  config.image_size = 64
  bench.source = "images"
  bench.target_sigma = 2.0 * config.heatmap_size / 64
  bench.images.image_size = 64
  bench.pretrain_frames = 100
  bench.panoptic_trials = 1
  bench.heldout_rigs = "h36m"
  bench.shots = "50,100"
  bench.train_frames = 200
  bench.test_frames = 50
