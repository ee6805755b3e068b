r"""Meta-training speed: second-order MAML outer step with and without XLA, and tasks per second.

  python -m benchmarks.maml_bench                    # 64x64 heatmaps, 17 joints (paper shapes)
  python -m benchmarks.maml_bench --size=32 --reps=5 # quicker

1. One outer step of second-order MAML (`mf_tf.meta.maml.maml_gradients`, one inner step) on ONE
   ordered pair (support 4 frames, query 4 frames), `tf.function(jit_compile=True)` versus
   `tf.function` without XLA, interleaved over --reps repetitions after one compiling call each.
2. Tasks per second of the full meta-training step of configs/default.py (`MetaLearner`:
   tasks_per_step tasks, inner_lr, second order, Adam) on tasks drawn from the simulated
   Panoptic 20-camera pool, task rendering excluded and included.
Prints the shapes, the median and spread (min..max) of absolute times, and ratios from this run.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from mf_tf.data import world  # noqa: E402
from mf_tf.geometry import rigs  # noqa: E402
from mf_tf.meta import maml  # noqa: E402
from mf_tf.meta import tasks as tasks_lib  # noqa: E402
from mf_tf.train import metatrain  # noqa: E402


def _default_config():
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "default.py")
  spec = importlib.util.spec_from_file_location("mf_tf_default_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _timed(fn, *args):
  start = time.perf_counter()
  result = fn(*args)
  tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
  return time.perf_counter() - start


def _summary(times):
  return (f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f},"
          f" n={len(times)})")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=64, help="heatmap side H = W")
  parser.add_argument("--reps", type=int, default=3, help="timed repetitions per variant")
  parser.add_argument("--frames", type=int, default=40, help="pool frames of the 20-camera rig")
  args = parser.parse_args()

  config = _default_config()
  settings = metatrain.settings_from_config(config)
  size = args.size
  settings = metatrain.MamlSettings(**{**settings.__dict__,
                                       "target_sigma": 2.0 * size / 64})
  rig = rigs.get_rig(config.rig.pretrain)
  frames = world.simulate_frames(rig, args.frames, 0, config.joint_set, size,
                                 return_heatmaps=False)
  pool = tasks_lib.FramePool.from_frames(frames, size)
  sampler = tasks_lib.TaskSampler(pool, rig.pairs, settings.support_size, settings.query_size,
                                  settings.target_sigma, seed=0)
  init = metatrain.default_meta_params(size)
  params = maml.MetaParams(tf.constant(init.omega_base), tf.constant(init.theta))
  print(f"shapes: heatmaps {size}x{size}, joints {pool.num_joints}, support "
        f"{settings.support_size} + query {settings.query_size} frames, inner steps "
        f"{settings.inner_steps}, second order; devices "
        f"{[d.name for d in tf.config.list_logical_devices()]}")

  # 1. XLA versus no XLA, one pair.
  support, query = sampler.sample(0, 1)
  step = functools.partial(maml.maml_gradients, inner_lr=settings.inner_lr,
                           inner_steps=settings.inner_steps, temperature=settings.temperature)
  variants = {"xla": tf.function(step, jit_compile=True), "no_xla": tf.function(step)}
  compile_times = {name: _timed(fn, params, support, query) for name, fn in variants.items()}
  times = {name: [] for name in variants}
  for _ in range(args.reps):
    for name, fn in variants.items():
      times[name].append(_timed(fn, params, support, query))
  for name in variants:
    print(f"outer step, 1 pair, {name:6s}: {_summary(times[name])}; first call "
          f"{compile_times[name]:.2f} s")
  ratio = statistics.median(times["no_xla"]) / statistics.median(times["xla"])
  print(f"ratio no_xla / xla (medians): {ratio:.2f}x")

  # 2. Tasks per second of the default config's training step.
  learner = metatrain.MetaLearner(init, settings)
  batches = [sampler.sample(i, settings.tasks_per_step) for i in range(args.reps + 1)]
  learner.train_step(*batches[0])  # Compiles.
  step_times = [_timed(learner.train_step, *batch) for batch in batches[1:]]
  sample_times = [_timed(lambda i: sampler.sample(i, settings.tasks_per_step), i)
                  for i in range(args.reps)]
  per_step = statistics.median(step_times)
  print(f"default step ({settings.tasks_per_step} tasks): {_summary(step_times)}; task "
        f"rendering {_summary(sample_times)}")
  print(f"tasks/s: {settings.tasks_per_step / per_step:.2f} (step only), "
        f"{settings.tasks_per_step / (per_step + statistics.median(sample_times)):.2f} "
        "(with task rendering)")


if __name__ == "__main__":
  main()
