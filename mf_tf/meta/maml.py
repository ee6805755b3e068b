"""MAML for the MetaFuse factorization (paper Sec. 4.2, Eq. 4-6; Finn et al. 2017): pure functions.

Meta-parameters are the base map omega_base [H, W] and ONE theta initialization [HW, 6] shared by
every task: a task is an ordered camera pair (source u -> target v) and a new pair starts from the
same theta. For a batch of T tasks:

    inner (Eq. 4-5), per task t, `inner_steps` times, on the support split:
      theta_t'  = theta_t  - alpha * d L_support_t / d theta_t
      omega_t'  = omega_t  - alpha * d L_support_t / d omega_t
    outer (Eq. 6):  mean_t L_query_t(omega_t', theta_t'), differentiated with respect to
      (omega_base, theta) through the inner steps (second order), or with the inner gradients
      held constant (first order, `first_order=True`).

Tasks are batched: the meta-parameters are tiled to [T, ...] fast weights, all tasks' fusion
matrices come from one batched `mf_tf.fusion.ops.affine_matrices` call, and `ops.fuse` and
`ops.fusion_loss` run per task (T static; `tf.vectorized_map` was tried and rejected: its
gradients made XLA recompile whenever the parameter values changed). Because the summed loss
of independent tasks has the per-task gradient in each task's slice, one `tape.gradient` of the
sum gives every task's inner gradient at once. Everything is XLA-compilable and contains no
`tf.recompute_grad` (it would break the second-order gradient).

`remat` (`task_losses`, `adapt`, `maml_gradients`, `evaluate_adaptation`; default True) computes
each task's W h with `mf_tf.fusion.ops.affine_product` instead of the matrices: the same values
and gradients of every order, without the [T, HW, HW] matrices; the first- and second-order
gradients recompute the warps chunk by chunk. One second-order step on one pair at 64x64 (4 + 4
frames, 17 joints, XLA on CPU): 0.38 GB peak instead of 1.7 GB, and no slower
(benchmarks/memory_bench.py). `remat=False` keeps the matrices.

Calibrated variant (`theta_offset`, a departure from the paper for calibrated rigs): task t's
theta starts from its pair's calibrated theta (`mf_tf.fusion.calibrated.calibrated_theta`) plus
the meta-parameter theta, which is then a residual delta [HW, 6] shared by all pairs:
theta_t = theta_offset[t] + delta. Inner and outer steps are unchanged; the outer gradient with
respect to delta flows through the addition.

Task data (`TaskSplit`), T tasks of N frames each, views ordered [source, target]:
  heatmaps [T, N, 2, H, W, J] initial (detector / backbone) heatmaps,
  target   [T, N, H, W, J] Gaussian ground truth of the TARGET view (peak 1),
  weights  [T, N, J] per-joint loss weights of the target view (visibility, 0 drops a joint).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from mf_tf.fusion import ops


class TaskSplit(NamedTuple):
  """One split (support or query) of a batch of pair tasks; see the module docstring."""
  heatmaps: tf.Tensor  # [T, N, 2, H, W, J]
  target: tf.Tensor  # [T, N, H, W, J]
  weights: tf.Tensor  # [T, N, J]


class MetaParams(NamedTuple):
  """MetaFuse meta-parameters."""
  omega_base: tf.Tensor  # [H, W]
  theta: tf.Tensor  # [HW, 6]


def validate_hyperparameters(inner_lr: float, inner_steps: int, temperature: float):
  """Raises ValueError naming the first bad MAML hyper-parameter."""
  if not float(inner_lr) > 0.0:
    raise ValueError(f"inner learning rate alpha must be positive, got {inner_lr}")
  if int(inner_steps) < 1 or int(inner_steps) != inner_steps:
    raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps}")
  if not float(temperature) > 0.0:
    raise ValueError(f"softmax temperature must be positive, got {temperature}")


def pair_matrices(matrix: tf.Tensor) -> tf.Tensor:
  """The two-view fusion matrices of one ordered-pair task.

  In `ordered_pairs(2)` order the pairs are (1 -> 0), (0 -> 1); a task's views are [source,
  target], so its matrix W_{source -> target} is pair 1 and pair 0 is zero (the source view is not
  supervised in a pair task).

  Args:
    matrix: [HW, HW] W_{source -> target}.

  Returns:
    [2, HW, HW].
  """
  return tf.stack([tf.zeros_like(matrix), matrix], axis=0)


def pair_loss(matrix: tf.Tensor, heatmaps: tf.Tensor, target: tf.Tensor, weights: tf.Tensor,
              temperature: float, loss: str = "mse") -> tf.Tensor:
  """Fusion loss of one pair task (paper Eq. 1 and 3 on the target view).

  Args:
    matrix: [HW, HW] W_{source -> target} (`ops.affine_matrices` of the task's parameters).
    heatmaps: [N, 2, H, W, J], views [source, target].
    target: [N, H, W, J] target-view Gaussian ground truth.
    weights: [N, J] target-view joint weights.
    temperature: Softmax temperature T.

  Returns:
    Scalar loss.
  """
  fused = ops.fuse(heatmaps, pair_matrices(matrix))[:, 1:]  # [N, 1, H, W, J]
  return ops.fusion_loss(fused, target[:, None], weights[:, None], temperature, loss)


def task_losses(omega_base: tf.Tensor, theta: tf.Tensor, split: TaskSplit,
                temperature: float, loss: str = "mse", *, remat: bool = True) -> tf.Tensor:
  """Per-task losses of a task batch with per-task parameters.

  The fusion matrices of all tasks come from one batched `ops.affine_matrices` call; Eq. 1 and the
  loss (`pair_loss`) run per task over the static task axis: T matrix products. With `remat`, the
  messages W_t h_source of all tasks come from one `ops.affine_product` call instead (no
  matrices kept; gradients recompute them), in the heatmaps' dtype.

  Args:
    omega_base: [T, H, W] per-task base maps.
    theta: [T, HW, 6] per-task affine parameters.
    split: `TaskSplit` of T tasks (T static).
    temperature: Softmax temperature T.
    loss: `ops.fusion_loss` kind.
    remat: Fuse with `ops.affine_product` (rematerializing) instead of the matrices.

  Returns:
    [T] losses.
  """
  num_tasks = split.heatmaps.shape[0]
  if num_tasks is None:
    raise ValueError("the number of tasks must be static (known at trace time)")
  if remat:
    fused = _fused_targets(omega_base, theta, split.heatmaps)  # [T, N, H, W, J]
    return tf.stack([ops.fusion_loss(fused[task][:, None], split.target[task][:, None],
                                     split.weights[task][:, None], temperature, loss)
                     for task in range(num_tasks)])
  matrices = ops.affine_matrices(omega_base, theta[:, None])[:, 0]  # [T, HW, HW]
  return tf.stack([pair_loss(matrices[task], split.heatmaps[task], split.target[task],
                             split.weights[task], temperature, loss) for task in range(num_tasks)])


def _fused_targets(omega_base: tf.Tensor, theta: tf.Tensor, heatmaps: tf.Tensor) -> tf.Tensor:
  """Eq. 1 on each task's target view: h_target + W_t h_source, by `ops.affine_product`.

  Args:
    omega_base: [T, H, W] per-task base maps.
    theta: [T, HW, 6] per-task affine parameters.
    heatmaps: [T, N, 2, H, W, J], views [source, target].

  Returns:
    [T, N, H, W, J] fused target-view heatmaps, the heatmaps' dtype.
  """
  heatmaps = tf.convert_to_tensor(heatmaps)
  _, _, _, height, width, num_joints = heatmaps.shape
  num_tasks, num_frames = tf.shape(heatmaps)[0], tf.shape(heatmaps)[1]
  # [T, HW, N * J]: a task's frames and joints are the columns of one matrix product.
  sources = tf.reshape(tf.transpose(heatmaps[:, :, 0], [0, 2, 3, 1, 4]),
                       [num_tasks, height * width, num_frames * num_joints])
  messages = ops.affine_product(tf.cast(omega_base, heatmaps.dtype),
                                tf.cast(theta, heatmaps.dtype), sources)
  messages = tf.reshape(messages, [num_tasks, height, width, num_frames, num_joints])
  return heatmaps[:, :, 1] + tf.transpose(messages, [0, 3, 1, 2, 4])


def tile_params(params: MetaParams, num_tasks, *, theta_offset=None) -> MetaParams:
  """Fast weights: the meta-parameters repeated for each of `num_tasks` tasks.

  Args:
    params: Shared `MetaParams`, omega_base [H, W] and theta [HW, 6].
    num_tasks: T.
    theta_offset: Optional [T, HW, 6] per-task theta added to the shared theta (the calibrated
      variant: per-pair calibrated theta plus the shared residual).
  """
  theta = tf.repeat(params.theta[None], num_tasks, axis=0)
  if theta_offset is not None:
    theta = theta + tf.convert_to_tensor(theta_offset, theta.dtype)
  return MetaParams(tf.repeat(params.omega_base[None], num_tasks, axis=0), theta)


def adapt(params: MetaParams, support: TaskSplit, *, inner_lr: float, inner_steps: int,
          temperature: float, first_order: bool = False, train_omega: bool = True,
          loss: str = "mse", theta_offset=None,
          remat: bool = True) -> tuple[MetaParams, tf.Tensor]:
  """Inner loop (Eq. 4-5): per-task gradient steps from shared or per-task parameters.

  Args:
    params: `MetaParams` with omega_base [H, W] and theta [HW, 6] (shared; tiled to the tasks) or
      [T, H, W] and [T, HW, 6] (per task).
    support: `TaskSplit` of T tasks.
    inner_lr: Step size alpha.
    inner_steps: Number of inner gradient steps.
    temperature: Softmax temperature T.
    first_order: Treat inner gradients as constants (no second-order terms in the outer gradient).
    train_omega: Also adapt omega_base (Eq. 5); False adapts theta only.
    loss: `ops.fusion_loss` kind ("mse" or "ce").
    theta_offset: Optional [T, HW, 6] added to shared params' theta (calibrated variant, module
      docstring); only with shared params.
    remat: Fuse by `ops.affine_product` (no matrices kept, `task_losses`).

  Returns:
    (adapted per-task `MetaParams` [T, ...], support losses [T] before the first inner step).
  """
  num_tasks = tf.shape(support.heatmaps)[0]
  if params.omega_base.shape.rank == 3:
    if theta_offset is not None:
      raise ValueError("theta_offset applies to shared meta-parameters, got per-task ones")
    fast = params
  else:
    fast = tile_params(params, num_tasks, theta_offset=theta_offset)
  first_loss = None
  for _ in range(int(inner_steps)):
    with tf.GradientTape() as tape:
      tape.watch(fast)
      losses = task_losses(fast.omega_base, fast.theta, support, temperature, loss, remat=remat)
      total = tf.reduce_sum(losses)  # Task t's slice of the gradient is dL_t / d params_t.
    # The sampler's gather gives omega an IndexedSlices gradient; densify it for the update.
    grad_omega, grad_theta = (tf.convert_to_tensor(g) for g in
                              tape.gradient(total, [fast.omega_base, fast.theta]))
    if first_order:
      grad_omega, grad_theta = tf.stop_gradient(grad_omega), tf.stop_gradient(grad_theta)
    if first_loss is None:
      first_loss = losses
    omega = fast.omega_base - inner_lr * grad_omega if train_omega else fast.omega_base
    fast = MetaParams(omega, fast.theta - inner_lr * grad_theta)
  return fast, first_loss


def maml_gradients(params: MetaParams, support: TaskSplit, query: TaskSplit, *, inner_lr: float,
                   inner_steps: int, temperature: float, first_order: bool = False,
                   loss_scale: float | None = None, theta_offset=None,
                   train_omega: bool = True, loss: str = "mse",
                   remat: bool = True) -> tuple[MetaParams, dict]:
  """Outer gradient of the MAML objective (Eq. 6) for one batch of tasks.

  Args:
    params: Meta-parameters, omega_base [H, W] and theta [HW, 6].
    support: `TaskSplit` [T, N_support, ...] for the inner steps.
    query: `TaskSplit` [T, N_query, ...] for the outer loss.
    inner_lr: Inner step size alpha.
    inner_steps: Inner gradient steps per task.
    temperature: Softmax temperature T.
    first_order: First-order MAML (drop second-order terms).
    loss_scale: Multiplies the summed query loss before differentiation; None means 1 / T (the
      mean over this batch). Under tf.distribute pass 1 / global_num_tasks so that summing replicas'
      gradients gives the global mean.
    theta_offset: Optional [T, HW, 6] per-task calibrated theta; params.theta is then the shared
      residual (module docstring).
    train_omega: The inner steps also adapt omega_base (Eq. 5); False adapts theta only (as
      finetuning on a new rig does). The outer step updates both either way.
    loss: `ops.fusion_loss` kind ("mse" or "ce"), inner and outer.
    remat: Fuse by `ops.affine_product`: no [T, HW, HW] matrices kept at either order
      (`task_losses`); same gradients.

  Returns:
    grads: `MetaParams` of gradients, same shapes as `params`.
    metrics: scalar means over the T tasks: "support_loss" (before adaptation),
      "query_loss_before" (meta-parameters, no adaptation), "query_loss_after" (adapted).
  """
  params = MetaParams(*(tf.convert_to_tensor(p) for p in params))
  with tf.GradientTape() as tape:
    tape.watch(params)
    adapted, support_losses = adapt(params, support, inner_lr=inner_lr, inner_steps=inner_steps,
                                    temperature=temperature, first_order=first_order,
                                    train_omega=train_omega, theta_offset=theta_offset,
                                    loss=loss, remat=remat)
    query_after = task_losses(adapted.omega_base, adapted.theta, query, temperature, loss,
                              remat=remat)
    if loss_scale is None:
      objective = tf.reduce_mean(query_after)
    else:
      objective = tf.reduce_sum(query_after) * loss_scale
  grads = MetaParams(*(tf.convert_to_tensor(g) for g in
                       tape.gradient(objective, [params.omega_base, params.theta])))
  num_tasks = tf.shape(query.heatmaps)[0]
  tiled = tile_params(MetaParams(*(tf.stop_gradient(p) for p in params)), num_tasks,
                      theta_offset=theta_offset)
  query_before = task_losses(tiled.omega_base, tiled.theta, query, temperature, loss,
                             remat=remat)
  metrics = {"support_loss": tf.reduce_mean(support_losses),
             "query_loss_before": tf.reduce_mean(query_before),
             "query_loss_after": tf.reduce_mean(query_after)}
  return grads, metrics


def evaluate_adaptation(params: MetaParams, support: TaskSplit, query: TaskSplit, *,
                        inner_lr: float, inner_steps: int, temperature: float,
                        theta_offset=None, loss: str = "mse", remat: bool = True) -> dict:
  """Per-task query losses before and after `inner_steps` inner steps (no outer gradient).

  `theta_offset` [T, HW, 6]: the calibrated variant's per-task theta (module docstring);
  `remat`: fuse by `ops.affine_product` (`task_losses`).

  Returns:
    {"query_loss_before": [T], "query_loss_after": [T], "support_loss": [T]}.
  """
  params = MetaParams(*(tf.convert_to_tensor(p) for p in params))
  adapted, support_losses = adapt(params, support, inner_lr=inner_lr, inner_steps=inner_steps,
                                  temperature=temperature, first_order=True,
                                  theta_offset=theta_offset, loss=loss, remat=remat)
  tiled = tile_params(params, tf.shape(query.heatmaps)[0], theta_offset=theta_offset)
  return {"support_loss": support_losses,
          "query_loss_before": task_losses(tiled.omega_base, tiled.theta, query, temperature,
                                           loss, remat=remat),
          "query_loss_after": task_losses(tf.stop_gradient(adapted.omega_base),
                                          tf.stop_gradient(adapted.theta), query, temperature,
                                          loss, remat=remat)}
