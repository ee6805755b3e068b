r"""Meta-training speed: second-order MAML outer step with and without XLA, and tasks per second.

  python -m benchmarks.maml_bench                    # 64x64 heatmaps, 17 joints (paper shapes)
  python -m benchmarks.maml_bench --size=32 --reps=5 # quicker

1. One outer step of second-order MAML (`mf_tf.meta.maml.maml_gradients`, one inner step) on ONE
   ordered pair (support 4 frames, query 4 frames), `tf.function(jit_compile=True)` versus
   `tf.function` without XLA, interleaved over --reps repetitions after one compiling call each.
2. Tasks per second of the full meta-training step of configs/default.py (`MetaLearner`:
   tasks_per_step tasks, inner_lr, second order, Adam) on tasks drawn from the simulated
   Panoptic 20-camera pool, task rendering excluded and included (step and rendering
   interleaved, after one warm-up call each).
Prints the shapes, the median and spread (p95, min..max) of absolute times, and ratios from this
run (`benchmarks.timing`). At 64x64 it also checks the step-only tasks/s against the goal of
twice --baseline_tasks_per_s; that baseline is an absolute figure from an earlier run, so this
one check is only as steady as the machine.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from benchmarks import timing  # noqa: E402
from mf_tf.data import world  # noqa: E402
from mf_tf.geometry import rigs  # noqa: E402
from mf_tf.meta import maml  # noqa: E402
from mf_tf.meta import tasks as tasks_lib  # noqa: E402
from mf_tf.modes import metatrain as metatrain_mode  # noqa: E402
from mf_tf.train import metatrain  # noqa: E402


def _default_config():
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "default.py")
  spec = importlib.util.spec_from_file_location("mf_tf_default_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=64, help="heatmap side H = W")
  parser.add_argument("--reps", type=int, default=3, help="timed repetitions per variant")
  parser.add_argument("--frames", type=int, default=40, help="pool frames of the 20-camera rig")
  parser.add_argument("--baseline_tasks_per_s", type=float, default=0.59,
                      help="step-only tasks/s at 64x64 before the speed-up work; goal: twice it")
  args = parser.parse_args()

  config = _default_config()
  settings = metatrain_mode.settings_from_config(config)
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
  xla, no_xla = tf.function(step, jit_compile=True), tf.function(step)
  comparison = timing.compare(lambda: xla(params, support, query),
                              lambda: no_xla(params, support, query), args.reps)
  for name, result in (("xla", comparison.a), ("no_xla", comparison.b)):
    print(f"outer step, 1 pair, {name:6s}: {result.summary('s', 3)}; first call "
          f"{result.first:.2f} s")
  print(f"ratio no_xla / xla (paired medians): {comparison.ratio:.2f}x")

  # 2. Tasks per second of the default config's training step.
  learner = metatrain.MetaLearner(init, settings)
  batches = iter([sampler.sample(i, settings.tasks_per_step) for i in range(args.reps + 1)])
  indices = iter(range(args.reps + 1))
  timings = timing.interleave({  # The warm-up step compiles.
      "step": lambda: learner.train_step(*next(batches)),
      "rendering": lambda: sampler.sample(next(indices), settings.tasks_per_step)}, args.reps)
  step_times, sample_times = timings["step"], timings["rendering"]
  tasks = settings.tasks_per_step
  print(f"default step ({tasks} tasks): {step_times.summary('s', 3)}; task rendering "
        f"{sample_times.summary('s', 3)}")
  step_only = tasks / step_times.median
  with_rendering = statistics.median(
      tasks / (step + sample) for step, sample in zip(step_times.times, sample_times.times))
  print(f"tasks/s: {step_only:.2f} (step only), {with_rendering:.2f} (with task rendering)")
  if size == 64:
    timing.report_goal(f"MAML tasks/s (step only, {tasks} tasks per step, 64x64), twice the "
                       f"baseline {args.baseline_tasks_per_s:g}", step_only,
                       2.0 * args.baseline_tasks_per_s, "tasks/s", lower_is_better=False)
  else:
    print(f"tasks/s goal not checked: its baseline was measured at 64x64, this run is "
          f"{size}x{size}")


if __name__ == "__main__":
  main()
