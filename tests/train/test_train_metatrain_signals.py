"""SIGINT / SIGTERM during meta-training save the last completed step, and the run resumes."""

import glob
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from mf_tf.meta import tasks
from mf_tf.train import metatrain

from config_settings import maml_settings  # pylint: disable=wrong-import-order
from test_train_metatrain import small_pool  # pylint: disable=wrong-import-order


def _checkpoint_steps(workdir):
  paths = glob.glob(os.path.join(workdir, "metatrain", "checkpoints", "ckpt-*.index"))
  return sorted(int(re.search(r"ckpt-(\d+)\.index$", path).group(1)) for path in paths)


_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def _command(workdir, num_steps):
  return [sys.executable, "-m", "mf_tf.main", "--mode=metatrain",
          "--config=configs/default.py:smoke", f"--workdir={workdir}",
          "--config.metatrain.holdout_pairs=0", f"--config.metatrain.num_steps={num_steps}",
          "--config.metatrain.checkpoint_every=3"]


def test_sigint_saves_the_last_step_and_the_run_resumes_from_it(repo_root, tmp_path):
  workdir = str(tmp_path)
  process = subprocess.Popen(_command(workdir, num_steps=10000), cwd=repo_root, env=_ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  lines, saved = [], threading.Event()

  def read():
    for line in process.stderr:
      lines.append(line)
      if "metatrain: saved checkpoint" in line:
        saved.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  try:
    assert saved.wait(timeout=90), "".join(lines[-20:])
    time.sleep(0.5)  # A step or two past the checkpoint: the saved step is not a periodic one.
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130, "".join(lines[-20:])
  finally:
    if process.poll() is None:
      process.kill()
  reader.join(timeout=10)
  text = "".join(lines)
  match = re.search(r"metatrain: stopped by SIGINT after step (\d+)", text)
  assert match, text[-3000:]
  stopped = int(match.group(1))
  assert stopped >= 3 and _checkpoint_steps(workdir)[-1] == stopped
  assert "Traceback" not in text

  resumed = subprocess.run(_command(workdir, num_steps=stopped + 1), cwd=repo_root, env=_ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=120, check=False)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert re.search(rf"resumed from \S+ckpt-{stopped} at step {stopped}\b", resumed.stderr)
  assert _checkpoint_steps(workdir)[-1] == stopped + 1


def test_sigterm_in_process_saves_the_step_and_exits_143(tmp_path):
  pool = small_pool(num_frames=20)
  pairs = tasks.split_pairs(pool.num_views, 0, seed=0)[0]
  settings = maml_settings(num_steps=50, tasks_per_step=2, support_size=2, query_size=2,
                           inner_lr=2.0, outer_lr=1e-2, target_sigma=0.5, seed=3, loss="mse")
  steps = []

  def terminate_at_two(step, _):
    steps.append(step)
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)

  previous = signal.getsignal(signal.SIGTERM)
  with pytest.raises(SystemExit) as exit_info:
    metatrain.metatrain_fusion(pool, pairs, settings, workdir=str(tmp_path),
                               checkpoint_every=100, progress=False, callback=terminate_at_two)
  assert exit_info.value.code == 128 + signal.SIGTERM
  # The signal arrived in step 2's callback: step 3 still trains, is saved, and the loop stops.
  assert steps == [1, 2]
  assert [int(re.search(r"ckpt-(\d+)", p).group(1)) for p in glob.glob(
      os.path.join(tmp_path, "checkpoints", "ckpt-*.index"))] == [3]
  assert signal.getsignal(signal.SIGTERM) is previous  # Handlers restored.
