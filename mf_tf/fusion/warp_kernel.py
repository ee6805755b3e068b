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

`sampler.warp_base` uses the kernels wherever they can run: eagerly or in a `tf.function` without
XLA. Inside `jit_compile=True` it uses the TensorFlow ops (XLA cannot compile a custom op), and so
it does while `tf.saved_model.save` traces (a SavedModel must load without this library). With
no compiler, it uses the TensorFlow ops everywhere and logs why once; `MF_TF_WARP_KERNEL=0` turns
the kernels off.
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
  if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
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


def usable() -> bool:
  """The kernels run here: built and loaded, not tracing for XLA, not tracing a SavedModel."""
  return not in_xla_context() and not in_save_context() and available()


def xla_for_warps() -> bool:
  """Whether a step dominated by warps should be XLA-compiled: only when the kernels can't run.

  Measured on 2 CPU cores (`benchmarks/torch_compare.py`, one pair forward + backward at 64x64):
  97.5 ms on the kernels without XLA, 224.5 ms under XLA with the TensorFlow-op sampler.
  """
  return not available()


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
