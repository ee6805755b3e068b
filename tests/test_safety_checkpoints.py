"""What mf_tf writes and reads as learned parameters: folders it may replace, pickles it may load,
checkpoints swapped whole, stop signals during finetuning, and diverged parameters refused."""

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mf_tf import checkpoints
from mf_tf import files
from mf_tf.data import convert
from mf_tf.data import h36m
from mf_tf.fusion import starts as fusion_starts
from mf_tf.geometry import rigs
from mf_tf.modes import finetune as finetune_mode
from mf_tf.train import metatrain
from configs import default

SIZE = 16
_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def _main(repo_root, *args, timeout=300):
  return subprocess.run([sys.executable, "-m", "mf_tf.main", *args], cwd=repo_root, env=_ENV,
                        capture_output=True, text=True, timeout=timeout, check=False)


def _errors(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def _annotation_items(image_id):
  """One frame of the 4 Human3.6M S9 cameras in the H36M-Toolbox annotation layout."""
  joints_3d = np.array([0.0, 0.0, 900.0]) + np.random.default_rng(image_id).normal(0, 250,
                                                                                   (17, 3))
  items = []
  for camera_id, camera in enumerate(rigs.get_rig("h36m_S9").cameras):
    uv, _ = camera.project(joints_3d)
    name = f"s_11_act_02_subact_01_ca_{camera_id + 1:02d}"
    items.append({
        "image": f"{name}/{name}_{image_id:06d}.jpg", "joints_2d": uv, "joints_3d": joints_3d,
        "joints_vis": np.ones((17, 3)), "image_id": image_id, "subject": 11, "action": 2,
        "subaction": 1, "camera_id": camera_id,
        "camera": {"R": camera.R, "T": camera.center.reshape(3, 1), "fx": camera.K[0, 0],
                   "fy": camera.K[1, 1], "cx": camera.K[0, 2], "cy": camera.K[1, 2],
                   "k": camera.dist[[0, 1, 4]].reshape(3, 1),
                   "p": camera.dist[[2, 3]].reshape(2, 1)}})
  return items


@pytest.fixture()
def annotation_pickle(tmp_path):
  items = _annotation_items(5)
  path = tmp_path / "h36m_train.pkl"
  with open(path, "wb") as f:
    pickle.dump(items, f)
  return path


# ------------------------------------------------------------------------------------------------
# --mode=convert: only folders mf_tf wrote are replaced, and pickles load only when trusted.


def test_convert_refuses_a_folder_it_did_not_write_and_the_file_survives(
    repo_root, tmp_path, annotation_pickle):
  thesis = tmp_path / "thesis"
  thesis.mkdir()
  (thesis / "thesis.tex").write_text("\\documentclass{article}\n")
  result = _main(repo_root, "--mode=convert", f"--workdir={tmp_path / 'w'}",
                 f"--config.convert.input={annotation_pickle}",
                 f"--config.convert.output={thesis}", "--config.convert.trust_pickle=True")
  assert result.returncode == 2, result.stderr[-2000:]
  assert _errors(result.stderr) == [
      f"error: convert output folder '{thesis}' is a non-empty folder that mf_tf did not "
      "write; expected a new or empty path (mf_tf replaces only folders it wrote)"]
  assert "Traceback" not in result.stderr
  assert os.listdir(thesis) == ["thesis.tex"]
  assert (thesis / "thesis.tex").read_text() == "\\documentclass{article}\n"
  assert sorted(os.listdir(tmp_path)) == ["h36m_train.pkl", "thesis", "w"]  # No staging left.


def test_convert_replaces_a_folder_it_wrote(tmp_path, annotation_pickle):
  out = str(tmp_path / "converted")
  convert.convert("h36m_pickle", str(annotation_pickle), out, trust_pickle=True)
  assert files.is_own(out)
  items = _annotation_items(7)
  with open(annotation_pickle, "wb") as f:
    pickle.dump(items, f)
  convert.convert("h36m_pickle", str(annotation_pickle), out, trust_pickle=True)
  np.testing.assert_array_equal(h36m.read_h36m_annotations(out)["image"],
                                [item["image"] for item in items])
  assert sorted(os.listdir(tmp_path)) == ["converted", "h36m_train.pkl"]


class _Payload:
  """Unpickling this runs os.mkdir(path): what a hostile or mistaken file can do."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return os.mkdir, (self.path,)


def test_convert_does_not_unpickle_without_trust_pickle(repo_root, tmp_path, annotation_pickle):
  hostile = tmp_path / "downloaded.pkl"
  ran = tmp_path / "code_ran"
  with open(hostile, "wb") as f:
    pickle.dump(_Payload(str(ran)), f)
  out = tmp_path / "out"
  result = _main(repo_root, "--mode=convert", f"--workdir={tmp_path / 'w'}",
                 f"--config.convert.input={hostile}", f"--config.convert.output={out}")
  assert result.returncode == 2, result.stderr[-2000:]
  assert _errors(result.stderr) == [
      f"error: refusing to unpickle '{hostile}': unpickling runs any code the file holds; "
      "expected --config.convert.trust_pickle=True (trust_pickle=True) to convert a file you "
      "trust (e.g. one you generated yourself with H36M-Toolbox)"]
  assert not ran.exists() and not out.exists()
  # With the explicit opt-in, a trusted file converts.
  config = default.get_config("smoke")
  config.convert.input, config.convert.output = str(annotation_pickle), str(out)
  assert config.convert.trust_pickle is False  # The default.
  with pytest.raises(ValueError, match=r"^refusing to unpickle .*trust_pickle=True"):
    convert.convert("h36m_pickle", str(annotation_pickle), str(out))
  config.convert.trust_pickle = True
  from mf_tf.modes import convert as convert_mode  # pylint: disable=import-outside-toplevel
  assert convert_mode.run(config, str(tmp_path / "w")) == str(out)
  assert h36m.read_h36m_annotations(str(out))["image"].shape == (4,)


# ------------------------------------------------------------------------------------------------
# Finetuned checkpoints: one folder, swapped whole.


@pytest.fixture(scope="module")
def rig():
  return rigs.get_rig("h36m").subset([0, 1, 2], name="h36m3")


def _calibrated_layer(rig, shift=0.0):
  layer = fusion_starts.make_fusion_layer("calibrated", rig, SIZE)
  layer.theta.assign(layer.theta.numpy() + shift)
  return layer


def _folder_bytes(folder):
  return {name: open(os.path.join(folder, name), "rb").read()
          for name in checkpoints.FINETUNED_FILES}


def test_finetuned_checkpoint_is_old_or_new_whatever_rename_fails(rig, tmp_path, monkeypatch):
  """Every rename a save makes is failed in turn: the folder is then the old version or the new
  one (never new weights beside the old rig.json), and no staging folder is left."""
  first = rig.cameras[0]  # The same rig name, its first camera moved by 1 m.
  moved = dataclasses.replace(rig, cameras=(
      dataclasses.replace(first, t=first.t + np.array([1000.0, 0.0, 0.0])), *rig.cameras[1:]))
  old_layer, new_layer = _calibrated_layer(rig), _calibrated_layer(moved, shift=0.01)
  reference = tmp_path / "reference"
  versions = []
  for name, layer, target in (("old", old_layer, rig), ("new", new_layer, moved)):
    folder = checkpoints.save_finetuned(layer, target, str(reference / name / "h36m3"),
                                        {"method": "calibrated", "heatmap_size": SIZE,
                                         "shots": 4, "version": name})
    versions.append(_folder_bytes(folder))
  assert versions[0]["rig.json"] != versions[1]["rig.json"]
  real_rename, real_replace = os.rename, os.replace
  calls = {"count": 0, "fail_at": None}

  def counted(real):
    def rename(source, destination, *args, **kwargs):
      calls["count"] += 1
      if calls["count"] == calls["fail_at"]:
        raise OSError(f"injected failure of rename {calls['count']}")
      return real(source, destination, *args, **kwargs)
    return rename

  monkeypatch.setattr(os, "rename", counted(real_rename))
  monkeypatch.setattr(os, "replace", counted(real_replace))
  checkpoints.save_finetuned(new_layer, moved, str(tmp_path / "count" / "h36m3"),
                             {"method": "calibrated", "heatmap_size": SIZE, "shots": 4,
                              "version": "new"})
  total = calls["count"]
  assert total >= 2
  for fail_at in range(1, total + 1):
    parent = tmp_path / f"fail{fail_at}"
    calls.update(count=0, fail_at=None)
    rig_dir = checkpoints.save_finetuned(old_layer, rig, str(parent / "h36m3"),
                                         {"method": "calibrated", "heatmap_size": SIZE,
                                          "shots": 4, "version": "old"})
    calls.update(count=0, fail_at=fail_at)
    with pytest.raises(OSError, match=f"injected failure of rename {fail_at}"):
      checkpoints.save_finetuned(new_layer, moved, rig_dir,
                                 {"method": "calibrated", "heatmap_size": SIZE, "shots": 4,
                                  "version": "new"})
    calls["fail_at"] = None
    assert _folder_bytes(rig_dir) in versions, f"mixed versions after failing rename {fail_at}"
    assert os.listdir(parent) == ["h36m3"], f"left behind after failing rename {fail_at}"


def test_sigterm_during_finetune_training_exits_143_and_keeps_the_old_checkpoint(
    repo_root, tmp_path):
  workdir = tmp_path / "w"
  args = ["--mode=finetune", "--config=configs/default.py:smoke", f"--workdir={workdir}"]
  first = _main(repo_root, *args)
  assert first.returncode == 0, first.stderr[-2000:]
  rig_dir = workdir / "finetune" / "h36m"
  before = _folder_bytes(rig_dir)
  # SIGTERM from the end of the second epoch of a run that would train 1000 epochs.
  script = textwrap.dedent(f"""
      import os, signal, sys
      from mf_tf import main
      from mf_tf.train import finetune
      end = finetune._SelectByValidation.on_epoch_end
      def on_epoch_end(self, epoch, logs=None):
        end(self, epoch, logs)
        if epoch == 1:
          os.kill(os.getpid(), signal.SIGTERM)
      finetune._SelectByValidation.on_epoch_end = on_epoch_end
      sys.argv = ["mf_tf.main", *{args!r}, "--config.finetune.epochs=1000",
                  "--config.finetune.patience=1000", "--config.seed=1"]
      main.cli_main()
      """)
  result = subprocess.run([sys.executable, "-c", script], cwd=repo_root, env=_ENV,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
  assert "finetune: SIGTERM received: finishing the current step" in result.stderr
  assert f"finetune: stopped by SIGTERM during training; nothing written ({rig_dir} is as it " \
         "was)" in result.stderr
  assert "Traceback" not in result.stderr and not _errors(result.stderr)
  assert "Epoch 4/1000" not in result.stdout  # Stopped after the step during which it came.
  assert _folder_bytes(rig_dir) == before
  assert os.listdir(workdir / "finetune") == ["h36m"]  # No staging or log folder left.


def test_sigterm_while_saving_completes_the_new_checkpoint(tmp_path, monkeypatch):
  config = default.get_config("smoke")
  config.heatmap_size, config.finetune.epochs = SIZE, 1
  save = checkpoints.save_finetuned

  def save_during_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # Recorded; the save goes on.
    return save(*args, **kwargs)

  monkeypatch.setattr(checkpoints, "save_finetuned", save_during_sigterm)
  previous = signal.getsignal(signal.SIGTERM)
  with pytest.raises(SystemExit) as stopped:
    finetune_mode.run(config, str(tmp_path))
  assert stopped.value.code == 128 + signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is previous
  layer, stored, meta = checkpoints.load_finetuned(str(tmp_path / "finetune" / "h36m"))
  assert stored.name == "h36m" and meta["heatmap_size"] == SIZE and meta["shots"] == 10
  assert sorted(os.listdir(tmp_path / "finetune" / "h36m")) == [
      files.MARKER, "fusion.json", "fusion.npz", "meta.json", "rig.json", "tensorboard"]
  assert os.listdir(tmp_path / "finetune") == ["h36m"]


# ------------------------------------------------------------------------------------------------
# Diverged parameters: never saved, never loaded.


def test_metatrain_outer_lr_1e9_stops_with_one_error_and_saves_nothing(repo_root, tmp_path):
  result = _main(repo_root, "--mode=metatrain", "--config=configs/default.py:smoke",
                 f"--workdir={tmp_path}", "--config.metatrain.outer_lr=1e9")
  assert result.returncode == 2, result.stderr[-2000:]
  errors = _errors(result.stderr)
  assert len(errors) == 1 and "Traceback" not in result.stderr
  checkpoint_dir = tmp_path / "metatrain" / "checkpoints"
  assert errors[0].startswith(
      f"error: metatrain step 3 (checkpoint in '{checkpoint_dir}'): parameter 'omega_base' has "
      "magnitude up to "), errors[0]
  assert errors[0].endswith(
      ", beyond the bound 10000; expected values within +-10000 (training diverged: lower the "
      "learning rate; nothing was saved or served from it)"), errors[0]
  assert float(errors[0].split("magnitude up to ")[1].split(",")[0]) > 1e6
  assert not checkpoint_dir.exists()
  assert not (tmp_path / "metatrain" / checkpoints.META_PARAMS_FILE).exists()


@pytest.mark.parametrize("value, found", [
    (np.nan, "has 1 non-finite values of 1536; expected finite values within +-2000"),
    (1e12, "has magnitude up to 1e+12, beyond the bound 2000; expected values within +-2000")])
def test_meta_params_with_nan_or_huge_theta_are_refused(tmp_path, value, found):
  params = metatrain.default_meta_params(SIZE)
  theta = params.theta.copy()
  theta[7, 2] = value
  bad = checkpoints.maml.MetaParams(params.omega_base, theta)
  path = str(tmp_path / "meta_params.npz")
  with pytest.raises(ValueError) as refused:
    checkpoints.save_meta_params(bad, path)
  assert str(refused.value).startswith(
      f"meta-parameters to save to {path!r}: parameter 'theta' {found}")
  assert not os.path.exists(path) and os.listdir(tmp_path) == []
  # A file on disk (written by anything else) is refused on load.
  np.savez(path, omega_base=params.omega_base, theta=theta, metadata=np.asarray("{}"))
  with pytest.raises(ValueError) as refused:
    checkpoints.load_meta_params(path)
  assert str(refused.value) == (
      f"meta-parameters file {path!r}: parameter 'theta' {found} (training diverged: lower the "
      "learning rate; nothing was saved or served from it)")
  with pytest.raises(ValueError):
    checkpoints.load_init("metafuse", path)


def test_naive_matrices_with_nan_are_refused(tmp_path):
  matrices = np.zeros((2, SIZE * SIZE, SIZE * SIZE), np.float32)
  matrices[1, 3, 4] = np.inf
  path = str(tmp_path / "naive.npz")
  with pytest.raises(ValueError, match=r"parameter 'matrices' has 1 non-finite"):
    checkpoints.save_naive(matrices, (0, 1), path)
  assert not os.path.exists(path)
  np.savez(path, matrices=matrices, views=np.asarray((0, 1)))
  with pytest.raises(ValueError) as refused:
    checkpoints.load_naive(path)
  assert str(refused.value) == (
      f"NaiveFuse matrices file {path!r}: parameter 'matrices' has 1 non-finite values of "
      "131072; expected finite values within +-10000 (training diverged: lower the learning "
      "rate; nothing was saved or served from it)")


@pytest.mark.parametrize("value", [np.nan, 1e12])
def test_finetuned_checkpoint_with_bad_theta_is_refused_on_load_and_save(rig, tmp_path, value):
  layer = _calibrated_layer(rig)
  rig_dir = checkpoints.save_finetuned(layer, rig, str(tmp_path / "h36m3"),
                                       {"method": "calibrated", "heatmap_size": SIZE, "shots": 4})
  # The weights file rewritten on disk with one bad theta entry.
  weights = layer.get_weights()
  index = [w.name for w in layer.weights].index("theta")
  weights[index][2, 5, 1] = value
  with open(os.path.join(rig_dir, "fusion.npz"), "wb") as stream:
    np.savez(stream, **{f"w{i}": w for i, w in enumerate(weights)})
  npz = os.path.join(rig_dir, "fusion.npz")
  found = ("has 1 non-finite values of 9216; expected finite values within +-2000"
           if np.isnan(value) else
           "has magnitude up to 1e+12, beyond the bound 2000; expected values within +-2000")
  with pytest.raises(ValueError) as refused:
    checkpoints.load_finetuned(rig_dir)
  assert str(refused.value) == (
      f"finetuned fusion checkpoint {npz!r}: parameter 'theta' {found} (training diverged: "
      "lower the learning rate; nothing was saved or served from it)")
  with pytest.raises(ValueError):
    checkpoints.load_finetuned_for(rig_dir, rig, "h36m3")
  # Saving such a layer is refused and the folder on disk is left as it is.
  before = open(npz, "rb").read()
  layer.set_weights(weights)
  with pytest.raises(ValueError, match=r"^finetuned fusion to save to "):
    checkpoints.save_finetuned(layer, rig, rig_dir, {"method": "calibrated",
                                                     "heatmap_size": SIZE, "shots": 4})
  assert open(npz, "rb").read() == before
  assert os.listdir(tmp_path) == ["h36m3"]
  json.loads(open(os.path.join(rig_dir, "meta.json")).read())
