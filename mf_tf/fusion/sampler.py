"""Differentiable bilinear spatial-transformer sampler (Jaderberg et al. 2015) for fusion matrices.

MetaFuse (paper Eq. 2) builds row i of the fusion matrix W_{u->v} by warping one shared base map
omega_base [H, W] with a per-pixel affine theta_i. The warp is the spatial transformer's affine grid
plus bilinear sampling:

    for every output pixel j at normalized coordinates (x_j, y_j) (the SOURCE view's pixel grid),
      (x_s, y_s) = [[t0, t1, t2], [t3, t4, t5]] @ [x_j, y_j, 1]      (normalized base coordinates)
      W[i, j]    = bilinear(omega_base, x_s, y_s)                   (zero outside the base map)

Coordinate convention (align_corners=True, as in PyTorch `affine_grid(..., align_corners=True)`):
normalized coordinate -1 is the CENTRE of pixel 0 and +1 the centre of pixel W-1, so

    x_pixel = (x_normalized + 1) * (W - 1) / 2,      x_normalized = 2 * x_pixel / (W - 1) - 1,

with x the column and y the row, pixel centres at integers (mf_tf's heatmap convention). Theta
[1, 0, 0, 0, 1, 0] reproduces the base map exactly. Outside the base map the sampler reads zeros
(bilinear with zero padding), so a point half a pixel outside the border reads half the border value.

Implementation: one `tf.gather` per output pixel from a table holding, for every 2x2 patch of the
zero-padded base, the coefficients of its bilinear polynomial (floor indices carry no gradient; the
fractional offsets carry the gradient in theta), then that polynomial at the offsets. This is
piecewise polynomial in theta and linear in omega_base, so first- and second-order gradients
(MAML) are exact almost everywhere and XLA-compilable. `tf.recompute_grad` is deliberately not
used: it breaks second-order gradients.

`warp_base(..., backend="auto")` runs the same math on the compiled CPU kernels of
`mf_tf.fusion.warp_kernel` where the warp runs on the CPU and not inside XLA
(`warp_kernel.usable`): the TensorFlow ops here are the reference they are tested against, what
XLA compiles, and what runs on a GPU.

`warp_product` fuses the warp with the product that consumes it (paper Eq. 1's W h) and never
keeps the [P, HW, HW] warps: it runs over chunks of target pixels, and its gradient, of every
order, recomputes each chunk's warp instead of storing it (`_remat_chunks`).
"""

from __future__ import annotations

import tensorflow as tf

from mf_tf.fusion import warp_kernel

# Padding of the base map on each side: indices -2..W+1 exist, so a floor index clamped into
# [-2, W] always addresses either the true 2x2 neighbourhood or an all-zero patch.
_PAD = 2


def normalized_grid(height: int, width: int, dtype=tf.float32) -> tuple[tf.Tensor, tf.Tensor]:
  """Normalized (align_corners) coordinates of every pixel centre, row-major.

  Args:
    height: Map height H in pixels.
    width: Map width W in pixels.
    dtype: Float dtype of the result.

  Returns:
    x, y: [H * W] each, in [-1, 1]; pixel (row r, column c) is entry r * W + c.
  """
  xs = tf.linspace(tf.constant(-1.0, tf.float64), 1.0, width) if width > 1 else tf.zeros(
      [1], tf.float64)
  ys = tf.linspace(tf.constant(-1.0, tf.float64), 1.0, height) if height > 1 else tf.zeros(
      [1], tf.float64)
  y, x = tf.meshgrid(ys, xs, indexing="ij")
  return tf.cast(tf.reshape(x, [-1]), dtype), tf.cast(tf.reshape(y, [-1]), dtype)


def _bilinear_table(omega_base: tf.Tensor) -> tf.Tensor:
  """[..., (H + 3) * (W + 3), 4] bilinear coefficients of every 2x2 patch of the padded base.

  Entry (a, b) describes the padded base at rows a, a+1 and columns b, b+1, i.e. the
  neighbourhood of the base pixel (a - 2, b - 2), with corners p00 (top-left), p01 (top-right),
  p10 (bottom-left), p11 (bottom-right), as the polynomial in the fractional offsets (fx, fy)

      p(fx, fy) = c0 + fx c1 + fy (c2 + fx c3),
      c0 = p00, c1 = p01 - p00, c2 = p10 - p00, c3 = p11 - p10 - p01 + p00,

  which is the bilinear blend (p00 (1 - fx) + p01 fx) (1 - fy) + (p10 (1 - fx) + p11 fx) fy.
  Gathering coefficients instead of corners leaves fewer operations per sample point, forward
  and backward (faster: measured in BUILD.md, "Measured implementation choices").
  """
  height, width = omega_base.shape[-2], omega_base.shape[-1]
  rank = omega_base.shape.rank
  paddings = [[0, 0]] * (rank - 2) + [[_PAD, _PAD], [_PAD, _PAD]]
  padded = tf.pad(omega_base, paddings)
  rows, cols = height + 2 * _PAD - 1, width + 2 * _PAD - 1
  p00, p01 = padded[..., :rows, :cols], padded[..., :rows, 1:]
  p10, p11 = padded[..., 1:, :cols], padded[..., 1:, 1:]
  coefficients = tf.stack([p00, p01 - p00, p10 - p00, (p11 - p10) - (p01 - p00)], axis=-1)
  return tf.reshape(coefficients, tf.concat([tf.shape(omega_base)[:-2], [rows * cols, 4]], 0))


BACKENDS = ("auto", "kernel", "tf")


def warp_base(omega_base: tf.Tensor, theta: tf.Tensor, *, backend: str = "auto") -> tf.Tensor:
  """Warps a base map by many affine transforms, sampling on the base's own pixel grid.

  Args:
    omega_base: [H, W] base map shared by every transform, or [T, H, W] one base per leading
      index of `theta` (e.g. per-task fast weights in a vectorized MAML step).
    theta: [..., 6] affine parameters (t0..t5, row-major 2x3), normalized coordinates; with a
      batched base, theta is [T, ..., 6].

  Returns:
    [..., H * W]: for each transform, the warped map flattened row-major (output pixel j is
    (row j // W, column j % W)). With theta [P, H*W, 6] this is the fusion matrices
    [P, HW_target, HW_source].
  """
  omega_base = tf.convert_to_tensor(omega_base)
  theta = tf.convert_to_tensor(theta, dtype=omega_base.dtype)
  if omega_base.shape.rank not in (2, 3):
    raise ValueError(f"omega_base must be [H, W] or [T, H, W], got shape {omega_base.shape}")
  if theta.shape[-1] != 6:
    raise ValueError(f"theta must end in 6 affine parameters, got shape {theta.shape}")
  if backend not in BACKENDS:
    raise ValueError(f"backend={backend!r}, expected one of {BACKENDS}")
  if backend == "kernel" or (backend == "auto" and omega_base.dtype in (tf.float32, tf.float64)
                             and warp_kernel.usable()):
    if warp_kernel.in_xla_context():
      raise ValueError("backend='kernel' cannot run inside an XLA-compiled function "
                       "(jit_compile=True); use backend='tf' or 'auto' there")
    return _warp_on_kernel(omega_base, theta)
  height, width = int(omega_base.shape[-2]), int(omega_base.shape[-1])
  dtype = omega_base.dtype
  grid_x, grid_y = normalized_grid(height, width, dtype)

  # Affine grid in normalized base coordinates, then base pixel coordinates. [..., HW]
  # Written as contractions with the [3, HW] grid so that the theta gradient is one matrix
  # product per row of theta (XLA otherwise re-emits the whole sampler inside six reductions).
  grid = tf.stack([grid_x, grid_y, tf.ones_like(grid_x)])
  sx = tf.einsum("...k,kj->...j", theta[..., 0:3], grid)
  sy = tf.einsum("...k,kj->...j", theta[..., 3:6], grid)
  sx = (sx + 1.0) * (0.5 * (width - 1))
  sy = (sy + 1.0) * (0.5 * (height - 1))

  # Floors carry no gradient; the fractional parts carry d/dtheta (and its derivatives).
  x0 = tf.stop_gradient(tf.floor(sx))
  y0 = tf.stop_gradient(tf.floor(sy))
  fx = sx - x0
  fy = sy - y0
  # Cast first, clamp in integers: robust to huge or non-finite coordinates.
  col = tf.clip_by_value(tf.cast(x0, tf.int32), -_PAD, width) + _PAD
  row = tf.clip_by_value(tf.cast(y0, tf.int32), -_PAD, height) + _PAD
  table = _bilinear_table(omega_base)
  index = row * (width + 2 * _PAD - 1) + col
  if omega_base.shape.rank == 3:
    coefficients = tf.gather(table, index, batch_dims=1)
  else:
    coefficients = tf.gather(table, index)
  c0, c1, c2, c3 = tf.unstack(coefficients, axis=-1)
  return c0 + fx * c1 + fy * (c2 + fx * c3)


def _warp_on_kernel(omega_base: tf.Tensor, theta: tf.Tensor) -> tf.Tensor:
  """`warp_base` by `warp_kernel.warp`: base [1 or T, H, W], theta [1 or T, M, 6]."""
  height, width = int(omega_base.shape[-2]), int(omega_base.shape[-1])
  batch_shape = tf.shape(theta)[:-1]
  if omega_base.shape.rank == 2:
    base, theta = omega_base[None], tf.reshape(theta, [1, -1, 6])
  else:
    base, theta = omega_base, tf.reshape(theta, [tf.shape(theta)[0], -1, 6])
  warped = warp_kernel.warp(base, theta)
  return tf.reshape(warped, tf.concat([batch_shape, [height * width]], 0))


def warp_maps(omega_base: tf.Tensor, theta: tf.Tensor) -> tf.Tensor:
  """`warp_base` with the spatial layout kept: [..., 6] -> [..., H, W]."""
  warped = warp_base(omega_base, theta)
  height, width = omega_base.shape[-2], omega_base.shape[-1]
  return tf.reshape(warped, tf.concat([tf.shape(warped)[:-1], [height, width]], 0))


# Values in one chunk's [P, n, HW_source] warp block (8 MiB in float32); about a dozen such
# blocks are alive while a chunk's gradient is computed. The time and peak memory of the chunk
# sizes around it: measured in BUILD.md, "Measured implementation choices"
# (benchmarks/memory_bench.py).
REMAT_CHUNK_ELEMENTS = 1 << 21


def remat_chunk_pixels(num_maps: int, num_target: int, num_source: int,
                       budget: int | None = None) -> int:
  """Target pixels per chunk of `warp_product`: chunks of P * n * HW_source <= budget values.

  Args:
    num_maps: P, the leading dimension of theta (pairs or tasks).
    num_target: HW_target, the rows of each warp.
    num_source: HW_source, the columns of each warp.
    budget: Values allowed in one chunk's warp block (None: `REMAT_CHUNK_ELEMENTS`).

  Returns:
    n in [1, HW_target]; the chunks are balanced, so HW_target is split into
    ceil(HW_target / n) chunks of n rows (the last one padded).
  """
  budget = REMAT_CHUNK_ELEMENTS if budget is None else int(budget)
  limit = max(1, budget // max(1, int(num_maps) * int(num_source)))
  num_chunks = -(-int(num_target) // min(limit, int(num_target)))
  return -(-int(num_target) // num_chunks)


def warp_product(omega_base: tf.Tensor, theta: tf.Tensor, sources: tf.Tensor, *,
                 chunk_pixels: int | None = None) -> tf.Tensor:
  """Warps and multiplies in one op, without keeping the warps (Eq. 1's W h with Eq. 2's W).

      out[p, i, c] = sum_j W_p[i, j] sources[p, j, c],    W_p = warp_base(omega_base, theta[p]),

  i.e. `tf.matmul(warp_base(omega_base, theta), sources)`, computed over chunks of n target pixels
  i so that at most one chunk's [P, n, HW] warp exists at a time. The gradient (with respect to
  omega_base, theta and sources) is again such a chunked op: it recomputes each chunk's warp
  instead of keeping the forward's, and is itself differentiable the same way, so second-order
  gradients (MAML) keep no [P, HW, HW] tensor either. Values and gradients of every order are
  those of the unchunked expression (same sampler, same floor convention).

  Args:
    omega_base: [H, W] base map shared by every row of theta, or [P, H, W] one base per p.
    theta: [P, HW_target, 6] affine parameters (normalized coordinates).
    sources: [P, H * W, C] maps on the base's pixel grid, flattened row-major (for Eq. 1: the
      source view's heatmaps with batch x joints as columns).
    chunk_pixels: Target pixels per chunk; None: `remat_chunk_pixels` (a [P, n, HW] block of
      about `REMAT_CHUNK_ELEMENTS` values).

  Returns:
    [P, HW_target, C] in omega_base's dtype.
  """
  omega_base = tf.convert_to_tensor(omega_base)
  dtype = omega_base.dtype
  theta = tf.convert_to_tensor(theta, dtype)
  sources = tf.convert_to_tensor(sources, dtype)
  if omega_base.shape.rank not in (2, 3):
    raise ValueError(f"omega_base must be [H, W] or [P, H, W], got shape {omega_base.shape}")
  if theta.shape.rank != 3 or theta.shape[-1] != 6:
    raise ValueError(f"theta must be [P, HW_target, 6], got shape {theta.shape}")
  num_pixels = int(omega_base.shape[-2]) * int(omega_base.shape[-1])
  if sources.shape.rank != 3 or sources.shape[1] != num_pixels:
    raise ValueError(f"sources must be [P, {num_pixels}, C] (C maps on the {omega_base.shape[-2]}"
                     f"x{omega_base.shape[-1]} base grid), got shape {sources.shape}")
  num_target = theta.shape[1]
  if num_target is None:
    raise ValueError(f"theta's target-pixel dimension must be static, got shape {theta.shape}")
  if chunk_pixels is None:
    chunk_pixels = remat_chunk_pixels(theta.shape[0] or 1, num_target, num_pixels)
  chunk_pixels = int(chunk_pixels)
  if chunk_pixels < 1:
    raise ValueError(f"chunk_pixels must be >= 1, got {chunk_pixels}")
  chunk_pixels = min(chunk_pixels, num_target)
  num_chunks = -(-num_target // chunk_pixels)
  padded = num_chunks * chunk_pixels
  num_maps, columns = tf.shape(theta)[0], tf.shape(sources)[2]

  # [K, P, n, 6]: chunk k holds target pixels k n .. (k + 1) n - 1; padding rows are discarded.
  theta = tf.pad(theta, [[0, 0], [0, padded - num_target], [0, 0]])
  theta = tf.transpose(tf.reshape(theta, [num_maps, num_chunks, chunk_pixels, 6]), [1, 0, 2, 3])
  (product,), _ = _remat_chunks(_chunk_product, [theta], [omega_base, sources], [dtype], [])
  product = tf.reshape(tf.transpose(product, [1, 0, 2, 3]), [num_maps, padded, columns])
  return product[:, :num_target]


def _chunk_product(sliced, shared):
  """One chunk of `warp_product`: ([W_chunk @ sources], no summed outputs)."""
  (theta,), (omega_base, sources) = sliced, shared
  return [tf.matmul(warp_base(omega_base, theta), sources)], []


def _remat_chunks(fn, sliced, shared, chunk_dtypes, sum_like):
  """Maps `fn` over chunks, keeping nothing for the gradient but the inputs.

  With sliced inputs s (each [K, ...], chunk k is s[k]) and shared inputs a, `fn(s_k, a)` returns
  (per-chunk outputs y_k, summed outputs z_k); this op returns (y stacked over k [K, ...], sum_k
  z_k). Its vector-Jacobian product has the same form: per chunk, the cotangents of y_k are
  sliced inputs and those of sum_k z_k shared ones; the gradients of s_k come out per chunk and
  those of a summed over k. So the gradient is `_remat_chunks` of the chunk's VJP (the chunk is
  recomputed under a tape), and its gradient in turn of the VJP of that VJP: any order of
  differentiation keeps only one chunk's intermediates alive.

  Args:
    fn: (list of chunk tensors, list of shared tensors) -> (list, list); differentiable TF.
    sliced: Tensors [K, ...] with the same static K.
    shared: Tensors used whole by every chunk.
    chunk_dtypes: dtypes of fn's per-chunk outputs.
    sum_like: Tensors shaped like fn's summed outputs (their zeros start the sums).

  Returns:
    (list of [K, ...] stacked per-chunk outputs, list of summed outputs).
  """
  num_sliced, num_chunked = len(sliced), len(chunk_dtypes)

  @tf.custom_gradient
  def remat(*inputs):
    # Stopped inputs: no tape records the chunks, so nothing of them outlives the loop.
    held = [tf.stop_gradient(t) for t in inputs]
    chunked, summed = _chunk_loop(fn, held[:num_sliced], held[num_sliced:], chunk_dtypes,
                                  [tf.zeros_like(tf.stop_gradient(t)) for t in sum_like])
    outputs = chunked + summed

    def grad(*cotangents):
      cotangents = [tf.zeros_like(y) if g is None else tf.convert_to_tensor(g, y.dtype)
                    for g, y in zip(cotangents, outputs)]
      inputs_sliced, inputs_shared = list(inputs[:num_sliced]), list(inputs[num_sliced:])
      grads_sliced, grads_shared = _remat_chunks(
          _chunk_vjp(fn, num_sliced, len(inputs_shared)),
          inputs_sliced + cotangents[:num_chunked], inputs_shared + cotangents[num_chunked:],
          [t.dtype for t in inputs_sliced], inputs_shared)
      return grads_sliced + grads_shared

    return outputs, grad

  outputs = remat(*sliced, *shared)
  return list(outputs[:num_chunked]), list(outputs[num_chunked:])


def _chunk_vjp(fn, num_sliced, num_shared):
  """The chunk function of `fn`'s vector-Jacobian product, in `_remat_chunks`' form.

  Inputs: (chunk inputs + cotangents of fn's per-chunk outputs, shared inputs + cotangents of
  fn's summed outputs); outputs: (gradients of the chunk inputs, gradients of the shared inputs).
  """

  def vjp(sliced, shared):
    inputs_sliced, cotangents_chunk = sliced[:num_sliced], sliced[num_sliced:]
    inputs_shared, cotangents_sum = shared[:num_shared], shared[num_shared:]
    inputs = inputs_sliced + inputs_shared
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(inputs)
      chunked, summed = fn(inputs_sliced, inputs_shared)
    grads = tape.gradient(chunked + summed, inputs,
                          output_gradients=cotangents_chunk + cotangents_sum,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    # The sampler's gather yields IndexedSlices; the loop carries dense sums.
    grads = [tf.convert_to_tensor(g) for g in grads]
    return grads[:num_sliced], grads[num_sliced:]

  return vjp


def _chunk_loop(fn, sliced, shared, chunk_dtypes, sums):
  """`_remat_chunks`' forward: a sequential loop over the K chunks (one chunk alive at a time)."""
  num_chunks = sliced[0].shape[0]
  if num_chunks == 1:
    chunked, summed = fn([t[0] for t in sliced], shared)
    return [y[None] for y in chunked], [s + z for s, z in zip(sums, summed)]
  if num_chunks is None:
    num_chunks = tf.shape(sliced[0])[0]
  arrays = [tf.TensorArray(dtype, size=num_chunks, infer_shape=True) for dtype in chunk_dtypes]

  def body(index, arrays, sums):
    chunked, summed = fn([t[index] for t in sliced], shared)
    arrays = [a.write(index, y) for a, y in zip(arrays, chunked)]
    return index + 1, arrays, [s + z for s, z in zip(sums, summed)]

  _, arrays, sums = tf.while_loop(lambda index, *_: index < num_chunks, body,
                                  (tf.constant(0), arrays, sums), parallel_iterations=1)
  return [a.stack() for a in arrays], list(sums)


def normalized_to_pixel_projective(theta, height: int, width: int):
  """Pixel-space 3x3 matrix of a normalized affine: [x_s, y_s, 1]_px = M @ [x_o, y_o, 1]_px.

  Maps OUTPUT pixel coordinates to the pixel coordinates where the base is sampled (the direction
  `tf.raw_ops.ImageProjectiveTransformV3` expects), using the align_corners convention above.

  Args:
    theta: [..., 6] normalized affine parameters (numpy or tensor, float64 advised).
    height: Map height H.
    width: Map width W.

  Returns:
    [..., 3, 3] float64 numpy matrices.
  """
  import numpy as np  # Local: a test/export utility, not on the training path.

  theta = np.asarray(theta, np.float64)
  affine = np.zeros(theta.shape[:-1] + (3, 3))
  affine[..., :2, :] = theta.reshape(theta.shape[:-1] + (2, 3))
  affine[..., 2, 2] = 1.0
  sx, sy = 0.5 * (width - 1), 0.5 * (height - 1)
  to_pixel = np.array([[sx, 0.0, sx], [0.0, sy, sy], [0.0, 0.0, 1.0]])
  to_normalized = np.linalg.inv(to_pixel)
  return to_pixel @ affine @ to_normalized
