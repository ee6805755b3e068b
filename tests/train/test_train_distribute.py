"""tf.distribute: a mirrored meta-training step on two logical CPUs equals a single-device step.

Logical devices must be configured before TensorFlow initializes, so the check runs in a fresh
subprocess.
"""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

from config_settings import maml_settings

_SCRIPT = textwrap.dedent("""
    import json
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from mf_tf.meta import maml
    from mf_tf.train import common, metatrain

    size, tasks, frames, joints = 8, 4, 2, 3
    rng = np.random.default_rng(0)
    def split():
      return maml.TaskSplit(
          tf.constant(rng.random((tasks, frames, 2, size, size, joints)), tf.float32),
          tf.constant(rng.random((tasks, frames, size, size, joints)), tf.float32),
          tf.ones((tasks, frames, joints)))
    support, query = split(), split()
    settings = metatrain.MamlSettings(**json.loads(sys.argv[1]))
    assert settings.tasks_per_step == tasks, settings
    init = metatrain.default_meta_params(size)
    results = []
    for name in ("none", "mirrored"):
      strategy = common.get_strategy(name)
      learner = metatrain.MetaLearner(init, settings, strategy)
      metrics = [learner.train_step(support, query) for _ in range(2)]
      results.append((learner.params, metrics, strategy.num_replicas_in_sync))
    (single, m1, r1), (mirrored, m2, r2) = results
    assert (r1, r2) == (1, 2), (r1, r2)
    np.testing.assert_allclose(mirrored.theta, single.theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mirrored.omega_base, single.omega_base, rtol=1e-5, atol=1e-6)
    for a, b in zip(m1, m2):
      for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5)
    assert not np.allclose(single.theta, init.theta)
    print("MIRRORED_OK")
""")


@pytest.mark.large
def test_mirrored_step_equals_single_device_step(repo_root):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env["PYTHONPATH"] = str(repo_root) + os.pathsep + env.get("PYTHONPATH", "")
  settings = maml_settings(num_steps=100, tasks_per_step=4, inner_lr=0.5, outer_lr=1e-2,
                           loss="mse")
  result = subprocess.run([sys.executable, "-c", _SCRIPT,
                           json.dumps(dataclasses.asdict(settings))], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=600)
  assert "MIRRORED_OK" in result.stdout, result.stdout[-2000:] + result.stderr[-4000:]
