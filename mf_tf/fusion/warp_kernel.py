"""Compiled CPU kernels of the affine warp (paper Eq. 2) with first and second derivatives.

`mf_tf.fusion.sampler.warp_base` is the warp in TensorFlow ops: XLA compiles it, and it is the
reference. XLA:CPU spends most of a training step in that gather and its scatter-add gradient
(`benchmarks/torch_compare.py`), so the same math is also a C++ op library,
`kernels/affine_warp.cc`, with three ops: the warp, its vector-Jacobian product and that
product's own vector-Jacobian product (so second-order MAML runs on kernels too). Values agree
with the reference to rounding (float64: 1e-13 of the gradients' scale, tests/fusion).

The library is compiled once per machine on first use, the way `torch.utils.cpp_extension` builds
extensions: with the C++ compiler (`$CXX`, else `c++` or `g++`) and TensorFlow's own header and
link flags (`tf.sysconfig`), into `$MF_TF_KERNEL_DIR` or `~/.cache/mf_tf/kernels`, under a name
that hashes the source, the flags, the compiler and TensorFlow's version (a file lock makes
concurrent first uses build once; the file appears by atomic rename). About 10 s. Prebuild with

    python -m mf_tf.fusion.warp_kernel

The kernels are CPU ops, so they run only where the warp runs on the CPU; `use_kernels` decides,
from the visible devices and the current `tf.device` placement:

  * placement on a CPU (`with tf.device("/CPU:0")`): the kernels;
  * placement on a GPU (or any other accelerator): the TensorFlow ops, under XLA;
  * no placement: the kernels when no accelerator is visible, else the TensorFlow ops under XLA
    (TensorFlow places ops on a visible GPU, and a CPU op there would copy its inputs to the host
    and its result back on every step);
  * `MF_TF_WARP_KERNEL` overrides the devices: 0, false, no or off never uses the kernels; any
    other non-empty value uses them wherever they build, beside a GPU too; unset or empty leaves
    the choice to the devices.

Where `use_kernels` says yes, `sampler.warp_base` runs them eagerly and in `tf.function`s without
XLA, and the training loops leave their steps uncompiled (`xla_for_warps`). Inside
`jit_compile=True` it uses the TensorFlow ops (XLA cannot compile a custom op), and so it does
while `tf.saved_model.save` traces (a SavedModel must load without this library). With no
compiler, it uses the TensorFlow ops everywhere and logs why once. On a machine with a GPU the
library is not built unless `MF_TF_WARP_KERNEL` asks for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from absl import logging
import tensorflow as tf

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "affine_warp.cc")
ENV_DIR = "MF_TF_KERNEL_DIR"
ENV_SWITCH = "MF_TF_WARP_KERNEL"
_OFF_VALUES = ("0", "false", "no", "off")  # Values of ENV_SWITCH that turn the kernels off.
# Device types the kernels run on; ops placed on any other type (GPU, TPU) use the TensorFlow ops.
_KERNEL_DEVICE_TYPES = ("CPU",)
BUILD_COMMAND = "python -m mf_tf.fusion.warp_kernel"

# Tried in order: the machine's own instruction set first (the library is built where it runs);
# AVX512-FP16 off because TensorFlow's bundled Eigen headers do not compile with it under GCC.
_ARCH_FLAGS = (["-march=native", "-mno-avx512fp16"], ["-march=native"], [])


class KernelUnavailableError(RuntimeError):
  """The kernel library could not be built or loaded (the message says why)."""


def default_cache_dir() -> str:
  """`$MF_TF_KERNEL_DIR` when set (and non-empty), else `~/.cache/mf_tf/kernels`."""
  return os.environ.get(ENV_DIR) or os.path.join(os.path.expanduser("~"), ".cache", "mf_tf",
                                                  "kernels")


def _compiler() -> str:
  for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
    if name and shutil.which(name):
      return shutil.which(name)
  raise KernelUnavailableError(
      "no C++ compiler found ($CXX, c++, g++ or clang++ on PATH); install one (Debian/Ubuntu: "
      "apt install g++) to build the warp kernels")


def _compiler_version(compiler: str) -> str:
  result = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
  return result.stdout.splitlines()[0] if result.stdout else compiler


def _library_name(compiler: str, arch_flags: list[str]) -> str:
  with open(SOURCE, "rb") as source:
    digest = hashlib.sha256(source.read())
  for part in ([tf.__version__, sys.version, platform.machine(), _compiler_version(compiler)] +
               tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags() + arch_flags):
    digest.update(part.encode())
  return f"affine_warp-{digest.hexdigest()[:16]}.so"


@contextlib.contextmanager
def _file_lock(path: str):
  with open(path, "w") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def build(cache_dir: str | None = None, *, force: bool = False) -> str:
  """Compiles the kernel library into the cache (once) and returns its path.

  Args:
    cache_dir: Cache folder; None for `default_cache_dir()`.
    force: Rebuild even when the library is cached.

  Raises:
    KernelUnavailableError: no compiler, or every flag set failed (with the compiler's errors).
  """
  cache_dir = os.path.abspath(cache_dir or default_cache_dir())
  os.makedirs(cache_dir, exist_ok=True)
  compiler = _compiler()
  errors = []
  for arch_flags in _ARCH_FLAGS:
    path = os.path.join(cache_dir, _library_name(compiler, arch_flags))
    with _file_lock(path + ".lock"):
      if os.path.isfile(path) and not force:
        return path
      handle, partial = tempfile.mkstemp(suffix=".so", dir=cache_dir)
      os.close(handle)
      command = ([compiler, "-O3", "-shared", "-fPIC", "-w"] + arch_flags + [SOURCE, "-o", partial]
                 + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())
      result = subprocess.run(command, capture_output=True, text=True, check=False)
      if result.returncode == 0:
        os.replace(partial, path)
        logging.info("built the warp kernels: %s", path)
        return path
      os.unlink(partial)
      errors.append(f"{' '.join(arch_flags) or 'no arch flags'}: "
                    f"{result.stderr.strip().splitlines()[-1:] if result.stderr else result}")
  raise KernelUnavailableError(f"compiling {SOURCE} with {compiler} failed: {errors}")


@functools.lru_cache(maxsize=None)
def _load():
  """(library module, None) or (None, reason)."""
  if env_switch() is False:
    return None, f"{ENV_SWITCH}={os.environ[ENV_SWITCH]!r} turns the warp kernels off"
  try:
    return tf.load_op_library(build()), None
  except (KernelUnavailableError, OSError, tf.errors.NotFoundError) as error:
    logging.warning("warp kernels unavailable, the TensorFlow-op sampler runs instead: %s", error)
    return None, str(error)


def available() -> bool:
  """True when the kernel library is built (building it now if needed) and loaded."""
  return _load()[0] is not None


def unavailable_reason() -> str | None:
  """Why the kernels cannot run here, or None when they can."""
  return _load()[1]


def _library():
  library, reason = _load()
  if library is None:
    raise KernelUnavailableError(reason)
  return library


def in_xla_context() -> bool:
  """True while tracing a function that XLA compiles (`jit_compile=True`), at any nesting."""
  try:
    from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import
  except ImportError:  # Without the tracing internals, assume XLA (the TF ops always run).
    return True
  return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def in_save_context() -> bool:
  """True while `tf.saved_model.save` traces: a saved graph must not need this library."""
  try:
    from tensorflow.python.saved_model import save_context  # pylint: disable=g-direct-tensorflow-import
  except ImportError:  # Without the saving internals, assume saving (the TF ops always run).
    return True
  return save_context.in_save_context()


def env_switch() -> bool | None:
  """`MF_TF_WARP_KERNEL`: False for 0, false, no or off; True for any other non-empty value;
  None when unset or empty (the devices decide, `use_kernels`)."""
  value = os.environ.get(ENV_SWITCH, "").strip().lower()
  if not value:
    return None
  return value not in _OFF_VALUES


def current_placement() -> str:
  """The device that a `tf.device` scope places new ops on here, eagerly or while tracing.

  Returns:
    The full device name ("/job:localhost/replica:0/task:0/device:GPU:0"), or "" outside any
    `tf.device` scope.
  """
  try:
    from tensorflow.python.eager import context  # pylint: disable=g-direct-tensorflow-import
  except ImportError:  # Without the runtime internals, assume no placement (the devices decide).
    return ""
  return context.context().device_name or ""


def _device_type(device) -> str | None:
  """The upper-case device type of a `LogicalDevice`, a device name or a bare type; None if none."""
  device_type = getattr(device, "device_type", None)
  if device_type is None:
    name = str(device).strip()
    if not name:
      return None
    device_type = (tf.DeviceSpec.from_string(name).device_type if "/" in name or ":" in name
                   else name)
  return device_type.upper() if device_type else None


def runs_on_cpu(devices=None, placement: str | None = None) -> bool:
  """Whether ops created here run on the CPU, by their placement, else by the visible devices.

  Args:
    devices: The visible devices: `tf.config.list_logical_devices()` entries, device names
      ("/device:GPU:0") or device types ("GPU"); None reads `tf.config.list_logical_devices()`.
    placement: The device of a `tf.device` scope ("/GPU:0", "/device:CPU:0", a full name); ""
      for none; None reads the current one (`current_placement`).

  Returns:
    True when the placement names a CPU, or, with no placement (or one without a device type,
    such as "/job:worker"), when every visible device is a CPU.
  """
  placement = current_placement() if placement is None else placement
  placed_on = _device_type(placement)
  if placed_on is not None:
    return placed_on in _KERNEL_DEVICE_TYPES
  devices = tf.config.list_logical_devices() if devices is None else devices
  return all(_device_type(device) in _KERNEL_DEVICE_TYPES for device in devices)


def use_kernels(devices=None, placement: str | None = None) -> bool:
  """Whether the warp should run on the kernels: where it runs on the CPU and they build.

  The one decision between the kernels and the TensorFlow-op sampler (see the module docstring):
  `MF_TF_WARP_KERNEL` when set (off: never; on: wherever they build), else the kernels exactly
  when `runs_on_cpu(devices, placement)`. Cheap: the library is built or loaded (once per
  process) only when the answer depends on it, so a GPU machine never builds it unasked.
  Tracing contexts are not considered here: `usable` adds them.

  Args:
    devices: As `runs_on_cpu`; None reads the visible devices.
    placement: As `runs_on_cpu`; None reads the current `tf.device` placement.

  Returns:
    True when the kernels should run (and are built and loaded).
  """
  forced = env_switch()
  if forced is False:
    return False
  if forced is None and not runs_on_cpu(devices, placement):
    return False
  return available()


def backend_summary(devices=None, placement: str | None = None) -> str:
  """One line naming the warp backend that `use_kernels` picks here, and why (logs, benchmarks).

  Args:
    devices: As `use_kernels`.
    placement: As `use_kernels`.
  """
  forced = env_switch()
  on_cpu = runs_on_cpu(devices, placement)
  if use_kernels(devices, placement):
    reason = "the warp runs on the CPU" if on_cpu else f"{ENV_SWITCH}={os.environ[ENV_SWITCH]!r}"
    return f"warp kernels, no XLA ({reason})"
  if forced is False:
    reason = f"{ENV_SWITCH}={os.environ[ENV_SWITCH]!r}"
  elif forced is None and not on_cpu:
    reason = "the warp runs on an accelerator"
  else:
    reason = f"warp kernels unavailable: {unavailable_reason()}"
  return f"TensorFlow ops under XLA ({reason})"


def usable() -> bool:
  """The kernels run here: `use_kernels()`, not tracing for XLA, not tracing a SavedModel."""
  return not in_xla_context() and not in_save_context() and use_kernels()


def xla_for_warps(devices=None, placement: str | None = None) -> bool:
  """Whether a step dominated by warps should be XLA-compiled: exactly when the kernels won't run.

  On the CPU the kernels without XLA are faster than the TensorFlow-op sampler under XLA
  (measured in BUILD.md, "Measured implementation choices"). On a GPU the TensorFlow ops run
  under XLA, as the kernels would copy every warp through the host.

  Args:
    devices: As `use_kernels`.
    placement: As `use_kernels`.
  """
  return not use_kernels(devices, placement)


def warp(base: tf.Tensor, theta: tf.Tensor) -> tf.Tensor:
  """The warp on the kernels: base [B, H, W] (B = 1 or P), theta [P, N, 6] -> [P, N, H * W].

  Same values and gradients as `sampler.warp_base`: first and second order in reverse mode, and
  forward mode (JVPs) of the warp itself. A third derivative, or forward mode over a gradient,
  raises `KernelUnavailableError`.
  """
  return _library().mf_affine_warp(base, theta)


def _zeros_if_none(gradient, like):
  return tf.zeros_like(like) if gradient is None else gradient


# Gradients are registered by op name (at import; the library is loaded on first use), so that
# tapes, graph gradients and forward-mode accumulators all find them.
@tf.RegisterGradient("MfAffineWarp")
def _warp_gradient(op, upstream):
  base, theta = op.inputs
  return _library().mf_affine_warp_grad(base, theta, upstream)


@tf.RegisterGradient("MfAffineWarpGrad")
def _warp_vjp_gradient(op, up_base, up_theta):
  base, theta, upstream = op.inputs
  grad_upstream, grad_base, grad_theta = _library().mf_affine_warp_grad_grad(
      base, theta, upstream, _zeros_if_none(up_base, base), _zeros_if_none(up_theta, theta))
  return grad_base, grad_theta, grad_upstream


@tf.RegisterGradient("MfAffineWarpGradGrad")
def _warp_vjp_vjp_gradient(op, c_upstream, c_base, c_theta):
  """Gradient of MfAffineWarpGradGrad with respect to its cotangent inputs (up_base, up_theta).

  The op is linear in them; its transpose is again the kernels (what forward-mode differentiation
  of a first derivative needs). Its gradient with respect to base, theta or grad would be a
  third derivative of the warp: refused, not returned as zeros.
  """
  skipped = getattr(op, "skip_input_indices", None)
  if skipped is None or not {0, 1, 2} <= set(skipped):
    raise KernelUnavailableError(
        "third derivatives of the warp kernels are not implemented; differentiate "
        "`sampler.warp_base(..., backend='tf')` instead")
  base, theta, upstream = op.inputs[:3]
  library = _library()
  c_upstream = _zeros_if_none(c_upstream, upstream)
  grad_base, grad_theta = library.mf_affine_warp_grad(base, theta, c_upstream)
  _, extra_base, extra_theta = library.mf_affine_warp_grad_grad(
      base, theta, upstream, _zeros_if_none(c_base, base), _zeros_if_none(c_theta, theta))
  return None, None, None, grad_base + extra_base, grad_theta + extra_theta


def main(argv=None):
  import argparse  # Local: only the command line needs it.

  parser = argparse.ArgumentParser(description="Builds the warp kernels into the cache.")
  parser.add_argument("--cache_dir", default=None, help=f"default: ${ENV_DIR} or "
                      "~/.cache/mf_tf/kernels")
  parser.add_argument("--force", action="store_true", help="rebuild even when cached")
  args = parser.parse_args(argv)
  print(build(args.cache_dir, force=args.force))


if __name__ == "__main__":
  main()
