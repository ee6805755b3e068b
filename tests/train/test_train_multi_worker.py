"""tf.distribute: meta-training with MultiWorkerMirroredStrategy on two local worker processes.

Two workers on 127.0.0.1 (free ports, TF_CONFIG per worker) run the same tiny meta-training with
`get_strategy("multi_worker")`; a third process runs it with the default single-device strategy.
The tasks of every step are split over the two replicas and the gradients all-reduced, so both
workers end with the same parameters, equal to the single-process run up to float rounding.
Each run is a fresh process: TF_CONFIG is read when the strategy is created, and a process can
join one cluster only.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from config_settings import maml_settings

_TIMEOUT_S = 120  # For all three processes together.
# The meta-training of every process, passed to it as JSON.
_SETTINGS = json.dumps(dataclasses.asdict(maml_settings(
    num_steps=3, tasks_per_step=2, support_size=2, query_size=2, inner_lr=2.0, outer_lr=1e-2,
    target_sigma=0.5, seed=3, loss="mse")))

_SCRIPT = textwrap.dedent("""
    import json
    import sys
    import numpy as np
    from mf_tf.data import world
    from mf_tf.geometry import rigs
    from mf_tf.meta import tasks
    from mf_tf.train import common, metatrain

    # The strategy first: MultiWorkerMirroredStrategy must be created before other TF work.
    strategy = common.get_strategy(sys.argv[1])
    size, joints = 16, 4
    frames = world.simulate_frames(rigs.get_rig("panoptic_vga20"), 8, 0, heatmap_size=size,
                                   return_heatmaps=False)
    for key in ("joints2d", "visibility", "peaks", "amplitudes"):
      frames[key] = frames[key][:, :, :joints]
    pool = tasks.FramePool.from_frames(frames, size)
    pairs = tasks.split_pairs(pool.num_views, 0, seed=0)[0]
    settings = metatrain.MamlSettings(**json.loads(sys.argv[3]))
    losses = []
    params = metatrain.metatrain_fusion(
        pool, pairs, settings, strategy=strategy, progress=False,
        callback=lambda step, metrics: losses.append(metrics["query_loss_after"]))
    np.savez(sys.argv[2], omega_base=params.omega_base, theta=params.theta,
             replicas=strategy.num_replicas_in_sync, losses=np.asarray(losses))
""")


def _free_ports(count):
  """`count` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
  sockets = []
  try:
    for _ in range(count):
      sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      sock.bind(("127.0.0.1", 0))
      sockets.append(sock)
    return [sock.getsockname()[1] for sock in sockets]
  finally:
    for sock in sockets:
      sock.close()


def _start(repo_root, tmp_path, name, strategy, tf_config=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env["PYTHONPATH"] = str(repo_root) + os.pathsep + env.get("PYTHONPATH", "")
  env.pop("TF_CONFIG", None)
  if tf_config is not None:
    env["TF_CONFIG"] = json.dumps(tf_config)
  out = tmp_path / f"{name}.npz"
  log = open(tmp_path / f"{name}.log", "w")
  process = subprocess.Popen([sys.executable, "-c", _SCRIPT, strategy, str(out), _SETTINGS],
                             cwd=repo_root, env=env, stdout=log, stderr=subprocess.STDOUT)
  log.close()
  return {"name": name, "process": process, "out": out, "log": tmp_path / f"{name}.log"}


def _log_tail(run, chars=3000):
  return f"--- {run['name']} (exit {run['process'].returncode}) ---\n" + run["log"].read_text()[
      -chars:]


@pytest.mark.large
def test_two_workers_match_each_other_and_a_single_process_run(repo_root, tmp_path):
  workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
  runs = [_start(repo_root, tmp_path, f"worker{index}", "multi_worker",
                 {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
          for index in range(2)]
  runs.append(_start(repo_root, tmp_path, "single", "none"))
  deadline = time.monotonic() + _TIMEOUT_S
  try:
    for run in runs:
      run["process"].wait(timeout=max(1.0, deadline - time.monotonic()))
  except subprocess.TimeoutExpired:
    pytest.fail(f"meta-training did not finish within {_TIMEOUT_S} s:\n"
                + "\n".join(_log_tail(run) for run in runs))
  finally:
    for run in runs:
      if run["process"].poll() is None:
        run["process"].kill()
        run["process"].wait()
  failed = [run for run in runs if run["process"].returncode != 0]
  assert not failed, "\n".join(_log_tail(run) for run in failed)

  worker0, worker1, single = (np.load(run["out"]) for run in runs)
  assert (int(worker0["replicas"]), int(worker1["replicas"]), int(single["replicas"])) == (2, 2, 1)
  for key in ("omega_base", "theta"):
    # Mirrored variables: the two workers hold the very same values.
    np.testing.assert_array_equal(worker0[key], worker1[key], err_msg=key)
    # Half the tasks per replica, summed gradients: the single-process update up to rounding.
    np.testing.assert_allclose(worker0[key], single[key], rtol=1e-5, atol=1e-6, err_msg=key)
  # Losses are all-reduced means over the global batch of tasks.
  np.testing.assert_allclose(worker0["losses"], single["losses"], rtol=1e-5)
  # Training moved the parameters, so the equalities above are not those of the init.
  from mf_tf.train import metatrain
  init = metatrain.default_meta_params(16)
  assert np.abs(single["theta"] - init.theta).max() > 1e-3
  assert np.abs(single["omega_base"] - init.omega_base).max() > 1e-3
