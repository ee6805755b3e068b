r"""Training speed of one ordered pair's fusion: mf_tf (XLA) against plain PyTorch, same math.

  python -m benchmarks.torch_compare                     # 64x64, 17 joints, batch 8 (paper shapes)
  python -m benchmarks.torch_compare --size=32 --reps=3  # quick look

Needs PyTorch (CPU build is enough: `pip install torch`); without it the script exits with a
message. The computation, for one ordered pair (source u -> target v), N frames, J joints:

    W[i, :]  = omega_base [H, W] warped by theta[i] [6] with bilinear sampling    (paper Eq. 2)
    fused_v  = h_v + W h_u                                                        (paper Eq. 1)
    loss     = mean_{n, j} weight[n, j] * sum_i (softmax_T(fused_v)[i] * mass - target[i])^2
    gradients of the loss with respect to omega_base [H, W] and theta [HW, 6]

  mf_tf     the meta-training loss of one task, `mf_tf.meta.maml.task_losses` (T = 1: the
            fusion matrix by `ops.affine_matrices`, Eq. 1 by `ops.fuse` on the two-view task,
            `ops.fusion_loss`), under `tf.function(jit_compile=True)`;
  mf_tf_1   the same mf_tf ops with the single product W h_u written out (no zero matrix for the
            unsupervised direction), also compiled;
  torch     the spatial-transformer way: `F.affine_grid` (align_corners=True) on theta viewed as
            [HW, 2, 3], `F.grid_sample` (bilinear, zero padding) of omega_base expanded to
            [HW, 1, H, W], then `torch.matmul` and the same loss, heatmaps channels-first
            [N, 2, J, H, W]; eager autograd.

First the three are checked to give the same loss, W and gradients on small shapes (float32
tolerance); then forward + backward is timed, interleaved in one run (`benchmarks.timing`), and
the paired ratio torch / mf_tf is checked against the goal (mf_tf at least 3x faster).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
  import torch
  import torch.nn.functional as F
except ImportError:
  sys.exit("benchmarks.torch_compare needs PyTorch, which is not installed: "
           "pip install torch (the CPU build is enough), then run it again.")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import timing  # noqa: E402
from mf_tf.fusion import ops  # noqa: E402
from mf_tf.fusion import warp_kernel  # noqa: E402
from mf_tf.meta import maml  # noqa: E402

GOAL_SPEEDUP = 3.0  # torch time / mf_tf time, one pair forward + backward at paper shapes.


def _problem(height: int, width: int, joints: int, batch: int, seed: int = 0) -> dict:
  """Random inputs in mf_tf's layout (float32 numpy).

  Returns:
    omega_base [H, W]; theta [HW, 6] (translation init plus noise, so that samples fall off
    pixel centres and partly outside the base); heatmaps [N, 2, H, W, J] (views [source,
    target]); target [N, H, W, J] (non-negative); weights [N, J] in {0, 1}.
  """
  rng = np.random.default_rng(seed)
  theta = ops.translation_theta((height, width)) + 0.05 * rng.standard_normal(
      (height * width, 6)).astype(np.float32)
  # Scaled so that a message W h_u is O(1), as in training, not O(HW).
  omega_base = rng.random((height, width)) * (4.0 / (height * width))
  return {
      "omega_base": omega_base.astype(np.float32),
      "theta": theta.astype(np.float32),
      "heatmaps": rng.random((batch, 2, height, width, joints)).astype(np.float32),
      "target": rng.random((batch, height, width, joints)).astype(np.float32),
      "weights": (rng.random((batch, joints)) > 0.2).astype(np.float32),
  }


# ------------------------------------------------------------------------------------ mf_tf


def _mf_tf_matrix(omega_base, theta):
  return ops.affine_matrices(omega_base, theta[None])[0]  # [HW_target, HW_source]


def _mf_tf_loss(omega_base, theta, heatmaps, target, weights, temperature):
  """The meta-training loss of one task (`maml.task_losses` with T = 1)."""
  split = maml.TaskSplit(heatmaps[None], target[None], weights[None])
  return maml.task_losses(omega_base[None], theta[None], split, temperature)[0]


def _mf_tf_single_product_loss(omega_base, theta, heatmaps, target, weights, temperature):
  """`_mf_tf_loss` with W h_u as one product (the source direction's zero matrix left out)."""
  matrix = _mf_tf_matrix(omega_base, theta)
  batch, _, height, width, joints = heatmaps.shape
  source = tf.reshape(tf.transpose(heatmaps[:, 0], [1, 2, 0, 3]), [height * width, -1])
  message = tf.transpose(tf.reshape(matrix @ source, [height, width, batch, joints]),
                         [2, 0, 1, 3])
  fused = heatmaps[:, 1] + message  # [N, H, W, J]
  return ops.fusion_loss(fused[:, None], target[:, None], weights[:, None], temperature)


def _grad_step(omega_base, theta, heatmaps, target, weights, *, loss_fn, temperature):
  with tf.GradientTape() as tape:
    tape.watch([omega_base, theta])
    loss = loss_fn(omega_base, theta, heatmaps, target, weights, temperature)
  grad_omega, grad_theta = (tf.convert_to_tensor(g)
                            for g in tape.gradient(loss, [omega_base, theta]))
  return loss, grad_omega, grad_theta


def _mf_tf_step(loss_fn, temperature, jit_compile):
  """Forward + backward as one tf.function: (loss, d loss / d omega_base, d loss / d theta).

  Under XLA the warp is the TensorFlow-op sampler; without, the compiled warp kernels where
  `mf_tf.fusion.warp_kernel.use_kernels()` picks them (on the CPU, when they build here).
  """
  # A partial, so that each step counts its own traces (tf.function keys them by code object).
  return tf.function(functools.partial(_grad_step, loss_fn=loss_fn, temperature=temperature),
                     jit_compile=jit_compile)


# ------------------------------------------------------------------------------------ torch


def torch_matrix(omega_base: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
  """Fusion matrix by the spatial transformer: [H, W], [HW, 6] -> [HW_target, HW_source]."""
  height, width = omega_base.shape
  pixels = height * width
  grid = F.affine_grid(theta.view(pixels, 2, 3), [pixels, 1, height, width], align_corners=True)
  warped = F.grid_sample(omega_base.expand(pixels, 1, height, width), grid, mode="bilinear",
                         padding_mode="zeros", align_corners=True)  # [HW, 1, H, W]
  return warped.view(pixels, pixels)


def torch_loss(omega_base, theta, heatmaps, target, weights, temperature):
  """Same loss as `_mf_tf_loss`, channels-first.

  Args:
    omega_base: [H, W]; theta: [HW, 6].
    heatmaps: [N, 2, J, H, W], views [source, target].
    target: [N, J, H, W]; weights: [N, J].
  """
  batch, _, joints, height, width = heatmaps.shape
  matrix = torch_matrix(omega_base, theta)
  source = heatmaps[:, 0].reshape(batch * joints, height * width)
  message = torch.matmul(source, matrix.t()).view(batch, joints, height, width)
  fused = heatmaps[:, 1] + message
  mass = target.sum(dim=(2, 3), keepdim=True)
  prediction = torch.softmax(fused.reshape(batch, joints, -1) / temperature, dim=-1).view_as(
      fused) * mass
  per_channel = (prediction - target).square().sum(dim=(2, 3)) * weights
  return per_channel.mean()


def _torch_inputs(problem: dict) -> dict:
  channels_first = lambda x, *axes: torch.from_numpy(np.ascontiguousarray(  # noqa: E731
      np.transpose(x, axes)))
  return {
      "omega_base": torch.from_numpy(problem["omega_base"]).requires_grad_(),
      "theta": torch.from_numpy(problem["theta"]).requires_grad_(),
      "heatmaps": channels_first(problem["heatmaps"], 0, 1, 4, 2, 3),
      "target": channels_first(problem["target"], 0, 3, 1, 2),
      "weights": torch.from_numpy(problem["weights"]),
  }


def _torch_step(inputs: dict, temperature: float):
  """Forward + backward: (loss, d loss / d omega_base, d loss / d theta), detached."""
  loss = torch_loss(**inputs, temperature=temperature)
  grad_omega, grad_theta = torch.autograd.grad(loss, [inputs["omega_base"], inputs["theta"]])
  return loss.detach(), grad_omega, grad_theta


# ------------------------------------------------------------------------------------ main


def check_same_values(steps: dict, height: int, width: int, joints: int, batch: int,
                      temperature: float, tolerance: float = 1e-4) -> dict:
  """Largest differences of W, loss and gradients between mf_tf and torch, relative to the peak.

  Args:
    steps: Name -> compiled mf_tf step (`_mf_tf_step`), each compared with torch.
    height, width, joints, batch: Small problem shape.
    temperature: Softmax temperature T.
    tolerance: Largest accepted difference relative to the quantity's peak magnitude.

  Returns:
    Quantity -> largest relative difference over the steps.

  Raises:
    AssertionError: naming the step and quantity, when a difference exceeds `tolerance`.
  """
  problem = _problem(height, width, joints, batch, seed=1)
  tf_inputs = [tf.constant(problem[k]) for k in ("omega_base", "theta", "heatmaps", "target",
                                                 "weights")]
  torch_inputs = _torch_inputs(problem)
  reference = [t.numpy() for t in _torch_step(torch_inputs, temperature)]
  with torch.no_grad():
    reference.append(torch_matrix(torch_inputs["omega_base"], torch_inputs["theta"]).numpy())
  worst = {}
  for name, step in steps.items():
    values = [t.numpy() for t in step(*tf_inputs)]
    values.append(_mf_tf_matrix(*tf_inputs[:2]).numpy())
    for what, ours, theirs in zip(("loss", "d/d omega_base", "d/d theta", "W"), values,
                                  reference):
      error = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))
      worst[what] = max(worst.get(what, 0.0), error)
      if not error <= tolerance:
        raise AssertionError(f"{name} and torch differ in {what} at {height}x{width}: largest "
                             f"difference {error:.2e} of the peak, tolerance {tolerance:.0e}")
  return worst


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=64, help="heatmap side H = W")
  parser.add_argument("--joints", type=int, default=17)
  parser.add_argument("--batch", type=int, default=8, help="frames N")
  parser.add_argument("--reps", type=int, default=10, help="timed repetitions per variant")
  parser.add_argument("--temperature", type=float, default=ops.DEFAULT_TEMPERATURE)
  args = parser.parse_args(argv)
  size, joints, batch, temperature = args.size, args.joints, args.batch, args.temperature
  print(f"TF {tf.__version__} (intra-op threads "
        f"{tf.config.threading.get_intra_op_parallelism_threads()}, 0 = all cores), "
        f"PyTorch {torch.__version__} (threads {torch.get_num_threads()}), "
        f"{os.cpu_count()} CPUs, devices {[d.name for d in tf.config.list_logical_devices()]}")

  kernels = warp_kernel.use_kernels()
  print(f"warp backend: {warp_kernel.backend_summary()}")
  # mf_tf: the step as meta-training runs it (kernels without XLA where they run, else XLA).
  steps = {"mf_tf": _mf_tf_step(_mf_tf_loss, temperature, jit_compile=not kernels),
           "mf_tf_1": _mf_tf_step(_mf_tf_single_product_loss, temperature, not kernels)}
  if kernels:
    steps["mf_tf_xla"] = _mf_tf_step(_mf_tf_loss, temperature, jit_compile=True)
  for height, width in ((12, 16), (16, 16)):
    worst = check_same_values(steps, height, width, 4, 2, temperature)
    print(f"same values, mf_tf and mf_tf_1 vs torch at {height}x{width}, 4 joints, batch 2; "
          "largest difference relative to the peak: "
          + ", ".join(f"{what} {error:.1e}" for what, error in worst.items()))

  problem = _problem(size, size, joints, batch)
  tf_inputs = [tf.constant(problem[k]) for k in ("omega_base", "theta", "heatmaps", "target",
                                                 "weights")]
  torch_inputs = _torch_inputs(problem)
  fns = {name: (lambda fn=fn: fn(*tf_inputs)) for name, fn in steps.items()}
  fns["torch"] = lambda: _torch_step(torch_inputs, temperature)
  print(f"one ordered pair forward + backward: heatmaps {size}x{size}, {joints} joints, batch "
        f"{batch}; W [{size * size}, {size * size}] ({size ** 4 * 4 / 2 ** 20:.0f} MiB); "
        f"{args.reps} interleaved repetitions after one warm-up call each")
  timings = timing.interleave(fns, args.reps)
  for name, result in timings.items():
    print(f"  {name:8s} {result.summary()}; first call {result.first:.2f} s")
  losses = {name: float(fn()[0].numpy()) for name, fn in fns.items()}
  print("  loss at these shapes: " + ", ".join(f"{n} {v:.6g}" for n, v in losses.items()))
  for name in steps:
    print(f"  ratio torch / {name} (paired medians): "
          f"{timing.paired_ratio(timings['torch'], timings[name]):.2f}x")
  timing.report_goal(f"mf_tf speed-up over plain PyTorch, one pair fwd+bwd {size}x{size}, "
                     f"{joints} joints, batch {batch}",
                     timing.paired_ratio(timings["torch"], timings["mf_tf"]), GOAL_SPEEDUP, "x",
                     lower_is_better=False)


if __name__ == "__main__":
  main()
