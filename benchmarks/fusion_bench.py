r"""Fusion core speed and memory: affine sampler + Eq. 1, XLA vs graph vs eager, sparse vs dense.

  python -m benchmarks.fusion_bench                 # paper shapes: 64x64, 17 joints, batch 8
  python -m benchmarks.fusion_bench --size=32 --reps=3 --skip_memory   # quick look

Cases (every ratio is measured within this one run, the variants of a case interleaved, as the
median of per-repetition ratios; absolute times are medians with p95 and min..max over --reps
repetitions after one warm-up call that includes tracing / XLA compilation; `benchmarks.timing`):
  1. forward + backward of the affine fusion (W from omega_base, theta, then Eq. 1 and the loss),
     one ordered pair and the 4-view rig (12 pairs): XLA vs plain tf.function vs eager
     (4-view: XLA only unless --rig_graph; the unfused sampler keeps ~15 [P, HW, HW] tensors,
     about 10 GB at 64x64, so the 4-view eager step is not run).
  2. affine forward (building W plus the product) vs NaiveFuse forward (the bare product), with
     the Keras layers on 2 views (2 ordered pairs) and on the 4-view rig (12 pairs).
  3. materialized dense inference vs NaiveFuse forward, and sparse top-k vs dense.
  4. peak memory (CPU: peak RSS growth of a fresh subprocess running one step, compile included,
     measured from /proc/self/status VmHWM; GPU: tf.config.experimental.get_memory_info peak) of
     a 4-view forward + backward and of one second-order MAML step on one pair, next to the
     analytic size of the fusion matrices.
"""

from __future__ import annotations

import argparse
import functools
import gc
import multiprocessing
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import timing  # noqa: E402
from mf_tf.fusion import layers  # noqa: E402
from mf_tf.fusion import ops  # noqa: E402


def _call(layer, heatmaps):
  return layer(heatmaps)


def _inputs(views, size, joints, batch, seed=0):
  rng = np.random.default_rng(seed)
  heatmaps = tf.constant(rng.random((batch, views, size, size, joints)), tf.float32)
  target = tf.constant(rng.random((batch, views, size, size, joints)), tf.float32)
  return heatmaps, target


def _pair_parameters(size, pairs, seed=0):
  rng = np.random.default_rng(seed)
  omega = tf.Variable(ops.line_base(size, 1.0, 0.05))
  theta = tf.Variable(ops.translation_theta(size, pairs)
                      + 0.01 * rng.standard_normal((pairs, size * size, 6)).astype(np.float32))
  return omega, theta


def _one_pair_loss(omega, theta, heatmaps, target):
  """Single ordered pair (view 0 -> view 1): fused_1 = h_1 + W h_0."""
  matrix = ops.affine_matrices(omega, theta)[0]  # [HW, HW]
  batch, _, height, width, joints = heatmaps.shape
  source = tf.reshape(tf.transpose(heatmaps[:, 0], [1, 2, 0, 3]), [height * width, -1])
  message = tf.transpose(tf.reshape(matrix @ source, [height, width, batch, joints]),
                         [2, 0, 1, 3])
  fused = heatmaps[:, 1:] + message[:, None]
  return ops.fusion_loss(fused, target[:, 1:], None)


def _rig_loss(omega, theta, heatmaps, target):
  return ops.fusion_loss(ops.fuse(heatmaps, ops.affine_matrices(omega, theta)), target, None)


def _grad_step(loss_fn):
  def step(omega, theta, heatmaps, target):
    with tf.GradientTape() as tape:
      loss = loss_fn(omega, theta, heatmaps, target)
    return tape.gradient(loss, [omega, theta])
  return step


def _maml_step(omega, theta, heatmaps, target, alpha=1e-3):
  """One second-order MAML meta-gradient on one pair (support = query here)."""
  with tf.GradientTape() as outer:
    with tf.GradientTape() as inner:
      inner_loss = _one_pair_loss(omega, theta, heatmaps, target)
    g_omega, g_theta = inner.gradient(inner_loss, [omega, theta])
    outer_loss = _one_pair_loss(omega - alpha * g_omega, theta - alpha * g_theta, heatmaps,
                                target)
  return outer.gradient(outer_loss, [omega, theta])


def _memory_child(kind, size, joints, batch, queue):
  """Runs one step in a fresh process and reports peak memory growth in bytes."""
  gpus = tf.config.list_physical_devices("GPU")
  views, pairs, loss = (4, 12, _rig_loss) if kind == "rig_fwd_bwd" else (2, 1, None)
  heatmaps, target = _inputs(views, size, joints, batch)
  omega, theta = _pair_parameters(size, pairs)
  fn = tf.function(_grad_step(loss) if loss else _maml_step, jit_compile=True)
  if gpus:
    tf.config.experimental.reset_memory_stats("GPU:0")
    [g.numpy() for g in fn(omega, theta, heatmaps, target)]
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    queue.put(("GPU peak (get_memory_info)", peak))
    return
  baseline = _vm("VmRSS")
  [g.numpy() for g in fn(omega, theta, heatmaps, target)]
  queue.put(("CPU peak RSS growth (VmHWM - VmRSS before)", _vm("VmHWM") - baseline))


def _vm(field):
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  return 0


def _memory(kind, size, joints, batch):
  context = multiprocessing.get_context("spawn")
  queue = context.Queue()
  process = context.Process(target=_memory_child, args=(kind, size, joints, batch, queue))
  process.start()
  process.join()
  return queue.get() if not queue.empty() else ("failed", -1)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--joints", type=int, default=17)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--eager_reps", type=int, default=2)
  parser.add_argument("--top_k", type=int, default=256)
  parser.add_argument("--skip_memory", action="store_true")
  parser.add_argument("--rig_graph", action="store_true",
                      help="also run the 4-view rig without XLA (several GB at 64x64)")
  args = parser.parse_args(argv)
  size, joints, batch, reps = args.size, args.joints, args.batch, args.reps
  hw = size * size
  print(f"devices: {[d.name for d in tf.config.list_logical_devices()]}; TF {tf.__version__}; "
        f"inter/intra threads {tf.config.threading.get_inter_op_parallelism_threads()}/"
        f"{tf.config.threading.get_intra_op_parallelism_threads()} (0 = all cores, "
        f"{os.cpu_count()} here)")
  print(f"shapes: heatmaps [B={batch}, V, {size}, {size}, J={joints}], theta [P, {hw}, 6], "
        f"W [P, {hw}, {hw}]; one pair: P=1 (V=2 views, view 0 -> view 1); rig: V=4, P=12")
  results = {}

  # 4. Peak memory, first: each case in a fresh subprocess, before this process grows.
  if not args.skip_memory:
    for kind, what in (("rig_fwd_bwd", "4-view fwd+bwd (XLA)"),
                       ("maml_pair", "second-order MAML step, one pair (XLA)")):
      method, peak = _memory(kind, size, joints, batch)
      pairs = 12 if kind == "rig_fwd_bwd" else 1
      print(f"[memory] {what}: {peak / 2**20:.0f} MiB {method}; analytic W alone "
            f"{pairs * hw * hw * 4 / 2**20:.0f} MiB")

  # 1. Forward + backward: XLA vs graph vs eager.
  for name, views, pairs, loss_fn, eager_ok in (("one pair", 2, 1, _one_pair_loss, True),
                                                ("4-view rig", 4, 12, _rig_loss, False)):
    graph_ok = eager_ok or args.rig_graph
    heatmaps, target = _inputs(views, size, joints, batch)
    omega, theta = _pair_parameters(size, pairs)
    step = _grad_step(loss_fn)
    runs = {"xla": tf.function(step, jit_compile=True)}
    if graph_ok:
      runs["graph"] = tf.function(step)
    if eager_ok:
      runs["eager"] = step
    timings = timing.interleave(
        {mode: (lambda fn=fn: fn(omega, theta, heatmaps, target)) for mode, fn in runs.items()},
        {mode: args.eager_reps if mode == "eager" else reps for mode in runs})
    for mode, times in timings.items():
      results[(name, "fwd+bwd", mode)] = times
      print(f"[fwd+bwd {name:10s}] {mode:5s} {times.summary()}")
    for mode in runs:
      if mode != "xla":
        ratio = timing.paired_ratio(timings[mode], timings["xla"])
        print(f"  ratio {mode}/xla = {ratio:.2f}x")
        if mode == "eager":
          timing.report_goal(f"eager / xla, fwd+bwd {name}", ratio, 4.0, "x",
                             lower_is_better=False)

  # 2-3. Forward: affine (W + product) vs naive (product) vs materialized dense / sparse top-k.
  for name, views in (("2 views", 2), ("4-view rig", 4)):
    pairs = views * (views - 1)
    heatmaps, _ = _inputs(views, size, joints, batch)
    affine = layers.AffineFusion(views, size)
    affine.build(heatmaps.shape)
    rng = np.random.default_rng(1)
    affine.assign_parameters(theta=affine.theta.numpy()
                             + 0.01 * rng.standard_normal(affine.theta.shape))
    naive = layers.NaiveFusion(views, size)
    naive.build(heatmaps.shape)
    dense = affine.materialize()
    sparse = affine.materialize(top_k=args.top_k)
    naive.matrices.assign(dense.matrices)
    sparse_label = f"sparse{args.top_k}"
    forwards = {"affine": affine, "naive": naive, "dense": dense, sparse_label: sparse}
    outputs = {}
    modes = (("xla", True), ("graph", False)) if views == 2 or args.rig_graph else (("xla", True),)
    for mode_name, jit in modes:
      # Partials, so that each function counts its own traces (tf.function keys them by code).
      fns = {label: tf.function(functools.partial(_call, layer), jit_compile=jit)
             for label, layer in forwards.items()}
      timings = timing.interleave({label: (lambda fn=fn: fn(heatmaps))
                                   for label, fn in fns.items()}, reps)
      for label, times in timings.items():
        outputs[label] = fns[label](heatmaps).numpy()
        results[(name, "fwd", label, mode_name)] = times
        print(f"[forward {name:10s}] {mode_name:5s} {label:10s} {times.summary()}")
      ratio = lambda a, b: timing.paired_ratio(timings[a], timings[b])  # noqa: E731
      print(f"  {mode_name}: affine/naive = {ratio('affine', 'naive'):.2f}x; "
            f"dense/naive = {ratio('dense', 'naive'):.2f}x (target ~1); "
            f"dense/{sparse_label} = {ratio('dense', sparse_label):.2f}x")
      timing.report_goal(f"affine / naive forward, {name}, {mode_name}",
                         ratio("affine", "naive"), 3.0, "x")
      timing.report_goal(f"dense / {sparse_label} forward, {name}, {mode_name}",
                         ratio("dense", sparse_label), 5.0, "x", lower_is_better=False)
    reference = outputs["affine"]
    fusion_size = np.abs(reference - heatmaps.numpy()).max()
    print(f"  max |dense - affine| = {np.abs(outputs['dense'] - reference).max():.2e}; "
          f"max |{sparse_label} - dense| = "
          f"{np.abs(outputs[sparse_label] - outputs['dense']).max():.2e} "
          f"(largest fusion message {fusion_size:.2e}); pairs={pairs}, "
          f"W bytes {pairs * hw * hw * 4 / 2**20:.0f} MiB")
    del affine, naive, dense, sparse, forwards, outputs
    gc.collect()

  sys.stdout.flush()
  return results


if __name__ == "__main__":
  main()
