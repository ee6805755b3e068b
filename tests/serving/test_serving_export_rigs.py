"""--mode=export's rig resolution: a built-in name, a rig file, or a finetuned rig's folder."""

import ml_collections
import numpy as np
import pytest

from mf_tf import checkpoints
from mf_tf.fusion import calibrated
from mf_tf.geometry import calibration
from mf_tf.geometry.rig import RigMismatchError
from mf_tf.geometry.rigs import ring_rig
from mf_tf.modes import export

SIZE = 16


def _config(source):
  return ml_collections.ConfigDict({
      "heatmap_size": SIZE, "recipe": "default",
      "fusion": {"temperature": 0.2, "loss_temperature": 0.2, "loss": "ce",
                 "line_width_px": 1.0, "line_value": 0.1},
      "export": {"fusion_source": source, "finetuned_dir": ""}})


@pytest.fixture
def own_rig(tmp_path):
  """A rig file named "my_rig" and its finetuned checkpoint in <workdir>/finetune/my_rig."""
  rig = ring_rig(3, seed=3, image_size=(640, 480), name="my_rig")
  path = str(tmp_path / "my_rig.json")
  calibration.save_rig_file(rig, path)
  workdir = str(tmp_path / "work")
  layer = calibrated.calibrated_fusion(rig, SIZE)
  checkpoints.save_finetuned(layer, rig, f"{workdir}/finetune/my_rig",
                             {"method": "calibrated", "heatmap_size": SIZE, "shots": 0})
  return {"rig": rig, "path": path, "workdir": workdir, "layer": layer}


@pytest.mark.parametrize("source", ["finetuned", "calibrated"])
@pytest.mark.parametrize("given", ["path", "name"])
def test_rig_file_or_finetuned_name_resolves_to_the_rig(own_rig, source, given):
  spec = own_rig["path"] if given == "path" else "my_rig"
  fusion, rig = export.load_fusion(_config(source), own_rig["workdir"], spec)
  assert rig.name == "my_rig"
  np.testing.assert_allclose(rig.projection_matrices(), own_rig["rig"].projection_matrices())
  np.testing.assert_allclose(fusion.theta.numpy(), own_rig["layer"].theta.numpy(), atol=1e-6)


def test_checkpoint_of_another_calibration_is_refused(own_rig, tmp_path):
  moved = ring_rig(3, seed=4, image_size=(640, 480), name="my_rig")  # Same name, other cameras.
  path = str(tmp_path / "moved.json")
  calibration.save_rig_file(moved, path)
  with pytest.raises(RigMismatchError) as info:
    export.load_fusion(_config("finetuned"), own_rig["workdir"], path)
  message = str(info.value)
  assert "finetune/my_rig/rig.json" in message and path in message
  assert "run --mode=finetune again" in message


def test_missing_checkpoint_and_unknown_rig_are_clear(own_rig, tmp_path):
  other = ring_rig(3, seed=3, image_size=(640, 480), name="other_rig")
  path = str(tmp_path / "other.json")
  calibration.save_rig_file(other, path)
  with pytest.raises(FileNotFoundError, match="no finetuned fusion for rig 'other_rig'"):
    export.load_fusion(_config("finetuned"), own_rig["workdir"], path)
  with pytest.raises(ValueError, match="neither a rig file nor a built-in rig"):
    export.load_fusion(_config("calibrated"), own_rig["workdir"], "nope")
