r"""Peak memory and time of the affine fusion: plain matrices vs rematerializing gradient.

  python -m benchmarks.memory_bench                    # paper shapes, the goals below
  python -m benchmarks.memory_bench --size=32 --reps=2  # quick look

Cases, each in a fresh subprocess (so no case sees another's allocations or compiled code), all
`tf.function(jit_compile=True)`:
  rig   forward + backward of the 4-view rig (12 ordered pairs): loss = fusion_loss(Eq. 1), its
        gradient with respect to omega_base [H, W] and theta [12, HW, 6]; heatmaps [8, 4, H, W,
        17]. plain: `ops.fuse(h, ops.affine_matrices(omega_base, theta))`; remat:
        `ops.fuse_affine(h, omega_base, theta)`.
  maml  one second-order MAML outer step on one ordered pair (`maml.maml_gradients`, one inner
        step, support 4 + query 4 frames, 17 joints), `remat=False` vs `remat=True`.

Memory is the growth of the process's resident set over its size just before the step (the
inputs and parameters already exist): peak VmHWM minus VmRSS, from /proc/self/status.
`tf.config.experimental.get_memory_info` is not available for CPU devices ("Allocator stats
not available"), so the operating system's count is used. Two numbers per case:
  step     a call after the compiling one: the high-water mark is reset (/proc/self/clear_refs)
           right before it, and its peak is counted from the RSS before the FIRST call. The
           runtime keeps a compiled step's buffers between calls (seen with TF 2.21's XLA:CPU:
           after the first 4-view plain call the RSS stays 8.5 GB up, and a second call adds
           0.03 GB), so the peak over the RSS right before the second call would miss them.
           The child runs with MALLOC_MMAP_THRESHOLD_ so that freed tensors go back to the
           system.
  +compile the first call, tracing and XLA compilation included (ru_maxrss - RSS before).
Time is the median of --reps calls after the compiling one, in a second child with the default
allocator settings. The goals use the step peak and the time ratio remat / plain.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

from benchmarks import timing

_GOALS = {"rig_peak": 2.5e9, "rig_time_ratio": 1.3, "maml_peak": 0.8e9}


def _status(field: str) -> int:
  """A /proc/self/status memory field in bytes."""
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise KeyError(field)


def _reset_peak():
  """Resets VmHWM to the current RSS (Linux >= 4.0)."""
  with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")


def _rig_step(remat: bool, size: int, joints: int, batch: int):
  """(step function, its arguments) for the 4-view forward + backward."""
  import numpy as np
  import tensorflow as tf

  from mf_tf.fusion import ops

  views, pairs = 4, 12
  rng = np.random.default_rng(0)
  heatmaps = tf.constant(rng.random((batch, views, size, size, joints)), tf.float32)
  target = tf.constant(rng.random((batch, views, size, size, joints)), tf.float32)
  omega = tf.Variable(ops.line_base(size, 1.0, 0.05))
  theta = tf.Variable(ops.translation_theta(size, pairs)
                      + 0.01 * rng.standard_normal((pairs, size * size, 6)).astype(np.float32))

  @tf.function(jit_compile=True)
  def step(heatmaps, target):
    with tf.GradientTape() as tape:
      if remat:
        fused = ops.fuse_affine(heatmaps, omega, theta)
      else:
        fused = ops.fuse(heatmaps, ops.affine_matrices(omega, theta))
      loss = ops.fusion_loss(fused, target, None)
    return [tf.convert_to_tensor(g) for g in tape.gradient(loss, [omega, theta])]

  return step, (heatmaps, target)


def _maml_step(remat: bool, size: int, joints: int, frames: int):
  """(step function, its arguments) for one second-order MAML step on one pair."""
  import numpy as np
  import tensorflow as tf

  from mf_tf.fusion import ops
  from mf_tf.meta import maml

  rng = np.random.default_rng(0)

  def split():
    return maml.TaskSplit(
        tf.constant(rng.random((1, frames, 2, size, size, joints)), tf.float32),
        tf.constant(rng.random((1, frames, size, size, joints)), tf.float32),
        tf.ones((1, frames, joints), tf.float32))

  params = maml.MetaParams(tf.constant(ops.line_base(size, 1.0, 0.05)),
                           tf.constant(ops.translation_theta(size)))
  # configs/default.py's metatrain settings: alpha 0.003, one inner step, T = 0.2.
  step = tf.function(lambda p, s, q: maml.maml_gradients(
      p, s, q, inner_lr=0.003, inner_steps=1, temperature=0.2, remat=remat)[0], jit_compile=True)
  return step, (params, split(), split())


def _child(case: str, variant: str, measure: str, args) -> dict:
  """Runs one case in this (fresh) process; returns its measurements."""
  import tensorflow as tf

  remat = variant == "remat"
  if case == "rig":
    step, inputs = _rig_step(remat, args.size, args.joints, args.batch)
  else:
    step, inputs = _maml_step(remat, args.size, args.joints, args.frames)

  def run():
    return [t.numpy() for t in tf.nest.flatten(step(*inputs))]

  result = {}
  before = _status("VmRSS")
  result["first_call_s"] = timing.measure(run, 1, warmup=0).times[0]
  result["compile_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
  if measure == "memory":
    result["held_after_first"] = _status("VmRSS") - before
    _reset_peak()
    run()
    result["step_peak"] = _status("VmHWM") - before  # Buffers kept from the first call count.
  else:
    result["times"] = list(timing.measure(run, args.reps, warmup=0).times)
  return result


def _spawn(case: str, variant: str, measure: str, args) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  if measure == "memory":
    env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 17)  # Freed blocks above 128 KiB are unmapped.
  command = [sys.executable, "-m", "benchmarks.memory_bench", f"--child={case}:{variant}:{measure}",
             f"--size={args.size}", f"--joints={args.joints}", f"--batch={args.batch}",
             f"--frames={args.frames}", f"--reps={args.reps}"]
  done = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode != 0 or not lines:
    raise RuntimeError(f"{case}:{variant}:{measure} failed (exit {done.returncode}):\n"
                       f"{done.stderr[-3000:]}")
  return json.loads(lines[-1])


def _gb(value: float) -> str:
  return f"{value / 1e9:.2f} GB"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=64, help="heatmap side H = W")
  parser.add_argument("--joints", type=int, default=17)
  parser.add_argument("--batch", type=int, default=8, help="rig case: frames per batch")
  parser.add_argument("--frames", type=int, default=4, help="maml case: support = query frames")
  parser.add_argument("--reps", type=int, default=3, help="timed calls after the compiling one")
  parser.add_argument("--cases", default="rig,maml")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.child:
    case, variant, measure = args.child.split(":")
    print(json.dumps(_child(case, variant, measure, args)), flush=True)
    return None

  hw = args.size * args.size
  print(f"heatmaps {args.size}x{args.size}, {args.joints} joints; rig: 4 views (12 pairs), batch "
        f"{args.batch}; maml: 1 pair, support {args.frames} + query {args.frames} frames, 1 inner "
        f"step, second order; XLA on CPU ({os.cpu_count()} cores); W per pair "
        f"{_gb(hw * hw * 4)}")
  results = {}
  for case in args.cases.split(","):
    for variant in ("plain", "remat"):
      memory = _spawn(case, variant, "memory", args)
      timed = _spawn(case, variant, "time", args)
      results[case, variant] = {**memory, "times": timed["times"],
                                "time": statistics.median(timed["times"])}
      row = results[case, variant]
      print(f"[{case} {variant:5s}] peak step {_gb(row['step_peak'])} (first call, compiling "
            f"included: {_gb(row['compile_peak'])}, held after it {_gb(row['held_after_first'])})"
            f"; time median {row['time']:.3f} s (min "
            f"{min(row['times']):.3f}, max {max(row['times']):.3f}, n={len(row['times'])}); "
            f"first call {timed['first_call_s']:.1f} s", flush=True)

  if "rig" in args.cases.split(","):
    plain, remat = results["rig", "plain"], results["rig", "remat"]
    ratio = remat["time"] / plain["time"]
    print(f"peak 4-view fwd+bwd: plain {_gb(plain['step_peak'])}, remat "
          f"{_gb(remat['step_peak'])}; memory ratio "
          f"{plain['step_peak'] / remat['step_peak']:.1f}x less")
    timing.report_goal("peak 4-view fwd+bwd, remat", remat["step_peak"] / 1e9,
                       _GOALS["rig_peak"] / 1e9, "GB")
    timing.report_goal("time remat / plain, 4-view fwd+bwd", ratio, _GOALS["rig_time_ratio"],
                       "x")
  if "maml" in args.cases.split(","):
    plain, remat = results["maml", "plain"], results["maml", "remat"]
    print(f"peak second-order MAML step, one pair: plain {_gb(plain['step_peak'])}, remat "
          f"{_gb(remat['step_peak'])}; time ratio {remat['time'] / plain['time']:.2f} "
          "(remat / plain, no goal)")
    timing.report_goal("peak second-order MAML step, one pair, remat",
                       remat["step_peak"] / 1e9, _GOALS["maml_peak"] / 1e9, "GB")
  return results


if __name__ == "__main__":
  main()
