"""Parameter files and checkpoint folders that one stage writes and later stages read.

Meta-parameters (`save_meta_params` / `load_meta_params`), written by --mode=metatrain and
--mode=pretrain --config.pretrain.method=affine, one `.npz`:
  omega_base [H, W] float32, theta [H*W, 6] float32, metadata (a JSON string).

NaiveFuse matrices (`save_naive` / `load_naive`), written by --mode=pretrain
--config.pretrain.method=naive, one `.npz`:
  matrices [P, HW, HW] float32, views [V'] (the pretraining views the matrices belong to).

Finetuned fusion of one rig (`save_finetuned` / `load_finetuned`), a folder written by
--mode=finetune (by default <workdir>/finetune/<rig name>/):
  fusion.json      the Keras layer config (a registered mf_tf layer; no code is deserialized)
  fusion.npz       the layer's weights, in `layer.get_weights()` order
  rig.json         the rig the fusion was finetuned for (canonical rig file)
  meta.json        method, K, heatmap size, temperature, training history

Every file is written through a temporary file and a rename (`mf_tf.files.write_atomic`), and a
finetuned folder as a whole: a staging folder that one rename swaps for the old one
(`mf_tf.files.replace_folder`), so a reader sees the old version or the new one and never new
weights beside an old rig.json. Unreadable files raise `CheckpointError` naming the file.

Learned parameters are checked before every save and after every load (`check_parameters`):
non-finite values, or values beyond the bounds below (`THETA_BOUND`, `MAP_BOUND`), raise a
`ParameterError` naming the parameter, so a diverged run is never saved nor served.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from typing import Mapping

import keras
import numpy as np

from mf_tf import files
from mf_tf.fusion import layers as fusion_layers  # noqa: F401  (registers the layer classes)
from mf_tf.geometry import calibration
from mf_tf.geometry import rig as rig_lib
from mf_tf.geometry.rig import Rig
from mf_tf.meta import maml

META_PARAMS_FILE = "meta_params.npz"
FINETUNED_FILES = ("fusion.json", "fusion.npz", "rig.json", "meta.json")

# Calibrations compared with this relative and absolute tolerance (K px, R, t mm, dist): a rig
# file round trip is exact, so anything above it is another calibration.
RIG_TOLERANCE = 1e-5


# Bounds on learned fusion parameters: far beyond any trained value, so only a diverged run
# (e.g. --config.metatrain.outer_lr=1e9 gives |theta| ~ 2e9) or a corrupt file reaches them.
#
# theta maps a target pixel's normalized coordinates ([-1, 1] across the heatmap, align_corners)
# to source coordinates: its linear part is a scale, its translation is in half heatmap widths.
# Beyond 2e3 it stretches or moves the base by more than 1e3 heatmap widths, where the source
# heatmap holds nothing (the calibrated theta of every built-in rig stays below 10).
THETA_BOUND = 2e3
# omega_base, NaiveFuse matrices and materialized fusion values are weights that multiply source
# heatmap values (in [0, 1]) and are added to a heatmap read out by a softmax of temperature
# ~0.2: a weight of 1e4 already makes that read-out one-hot, a trained map needs far less (the
# calibrated line base peaks at line_value, 0.3 by default).
MAP_BOUND = 1e4
# The bound of each learned weight, by its name (`save_meta_params` arrays, fusion layer weights).
PARAMETER_BOUNDS = {"theta": THETA_BOUND, "theta_residual": THETA_BOUND,
                    "omega_base": MAP_BOUND, "matrices": MAP_BOUND, "values": MAP_BOUND}


class CheckpointError(ValueError):
  """A checkpoint or parameter file is unreadable or belongs to another run."""


class ParameterError(ValueError):
  """Learned parameters that are not finite or beyond their bound (`PARAMETER_BOUNDS`)."""


def check_parameters(arrays: Mapping[str, np.ndarray], where: str) -> None:
  """Raises unless every named array is finite and within its bound (`PARAMETER_BOUNDS`).

  Arrays whose name has no bound (e.g. the integer indices of a sparse fusion) are checked for
  finiteness only.

  Args:
    arrays: Parameter name -> array (any shape).
    where: What holds them, for the message ("meta-parameters to save to '...'").

  Raises:
    ParameterError: naming the parameter, its largest magnitude (or its non-finite count) and the
      bound.
  """
  for name, values in arrays.items():
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.number) or values.size == 0:
      continue
    bound = PARAMETER_BOUNDS.get(name, np.inf)
    finite = np.isfinite(values)
    if not finite.all():
      raise ParameterError(
          f"{where}: parameter {name!r} has {int(values.size - finite.sum())} non-finite values "
          f"of {values.size}; expected finite values within +-{bound:g} (training diverged: "
          "lower the learning rate; nothing was saved or served from it)")
    largest = float(np.max(np.abs(values)))
    if largest > bound:
      raise ParameterError(
          f"{where}: parameter {name!r} has magnitude up to {largest:.3g}, beyond the bound "
          f"{bound:g}; expected values within +-{bound:g} (training diverged: lower the "
          "learning rate; nothing was saved or served from it)")


def _layer_parameters(layer: keras.layers.Layer) -> dict:
  """A fusion layer's weights by name (`AffineFusion`: theta as used, with its residual field)."""
  arrays = {weight.name: np.asarray(weight.numpy()) for weight in layer.weights}
  if hasattr(layer, "effective_theta") and getattr(layer, "built", False):
    arrays["theta"] = np.asarray(layer.effective_theta())
  return arrays


def _npz_bytes(**arrays) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def _read_npz(path: str, keys, what: str, written_by: str) -> dict:
  """The arrays `keys` of an `.npz` file; CheckpointError naming `path` if unreadable."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what} file {path!r} does not exist (run {written_by} first)")
  try:
    with np.load(path) as data:
      missing = [key for key in keys if key not in data.files]
      if missing:
        raise CheckpointError(f"{what} file {path!r} lacks arrays {missing}; it holds "
                              f"{data.files}, expected {list(keys)}")
      return {key: data[key] for key in data.files}
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
    if isinstance(error, CheckpointError):
      raise
    raise CheckpointError(
        f"{what} file {path!r} is unreadable ({type(error).__name__}: {error}); expected the "
        f".npz written by {written_by}: the file is truncated or corrupt, write it again"
    ) from error


# ------------------------------------------------------------------------------------------------
# Meta-parameters.


def save_meta_params(params: maml.MetaParams, path: str, metadata: dict | None = None) -> None:
  """Writes omega_base [H, W] and theta_init [HW, 6] (and JSON metadata) to an `.npz` file.

  Raises:
    ParameterError: a non-finite or absurd parameter (`check_parameters`); nothing is written.
  """
  check_parameters({"omega_base": params.omega_base, "theta": params.theta},
                   f"meta-parameters to save to {path!r}")
  files.write_atomic(path, _npz_bytes(omega_base=np.asarray(params.omega_base, np.float32),
                                      theta=np.asarray(params.theta, np.float32),
                                      metadata=np.asarray(json.dumps(metadata or {}))))


def load_meta_params(path: str) -> tuple[maml.MetaParams, dict]:
  """Reads `save_meta_params` output: (MetaParams(omega_base [H, W], theta [HW, 6]), metadata)."""
  data = _read_npz(path, ("omega_base", "theta"), "meta-parameters",
                   "--mode=metatrain or --mode=pretrain")
  omega, theta = data["omega_base"], data["theta"]
  try:
    metadata = json.loads(data["metadata"].item()) if "metadata" in data else {}
  except json.JSONDecodeError as error:
    raise CheckpointError(f"meta-parameters file {path!r} has unreadable metadata: {error}") \
        from error
  if omega.ndim != 2 or theta.shape != (omega.size, 6):
    raise ValueError(f"{path!r}: omega_base {omega.shape} and theta {theta.shape} are not "
                     "[H, W] and [H*W, 6]")
  check_parameters({"omega_base": omega, "theta": theta}, f"meta-parameters file {path!r}")
  return maml.MetaParams(omega, theta), metadata


# ------------------------------------------------------------------------------------------------
# NaiveFuse matrices.


def save_naive(matrices: np.ndarray, views, path: str) -> None:
  """Writes NaiveFuse matrices [P, HW, HW] and their pretraining views [V'] to an `.npz`.

  Raises:
    ParameterError: a non-finite or absurd matrix entry (`check_parameters`); nothing is written.
  """
  check_parameters({"matrices": matrices}, f"NaiveFuse matrices to save to {path!r}")
  files.write_atomic(path, _npz_bytes(matrices=np.asarray(matrices, np.float32),
                                      views=np.asarray(views)))


def load_naive(path: str) -> np.ndarray:
  """The matrices [P, HW, HW] written by `save_naive` (checked by `check_parameters`)."""
  matrices = _read_npz(path, ("matrices",), "NaiveFuse matrices",
                       "--mode=pretrain --config.pretrain.method=naive")["matrices"]
  check_parameters({"matrices": matrices}, f"NaiveFuse matrices file {path!r}")
  return matrices


# ------------------------------------------------------------------------------------------------
# Initializations of the finetuning methods.


def default_init_path(method: str, workdir: str) -> str:
  """Where the earlier stages write the init of finetuning `method` ("" when it needs none)."""
  meta = os.path.join(workdir, "metatrain", META_PARAMS_FILE)
  return {"metafuse": meta, "metafuse_calibrated": meta, "metafuse_self_calibrated": meta,
          "affine": os.path.join(workdir, "pretrain", "affine.npz"),
          "naive": os.path.join(workdir, "pretrain", "naive.npz")}.get(method, "")


def load_init(method: str, path: str):
  """The pretrained init of finetuning `method` from `path` (None for methods that need none).

  Returns:
    None ("calibrated", "self_calibrated"), NaiveFuse matrices [P, HW, HW] ("naive"), else
    `maml.MetaParams`.
  """
  if method in ("calibrated", "self_calibrated"):
    return None
  if method == "naive":
    return load_naive(path)
  params, _ = load_meta_params(path)
  return params


# ------------------------------------------------------------------------------------------------
# Finetuned fusion of one rig.


def finetuned_rig_dir(root: str, rig: Rig) -> str:
  """Where --mode=finetune writes the checkpoint of `rig`: `<root>/<rig.name>`, proved inside.

  Raises:
    files.UnsafePathError: the rig's name is not a safe folder name (`files.check_name`).
  """
  return files.inside(root, files.check_name(rig.name, "rig name"))


def save_finetuned(layer: keras.layers.Layer, rig: Rig, rig_dir: str, meta: dict, *,
                   log_dir: str | None = None) -> str:
  """Writes a rig's finetuned fusion folder (module docstring) atomically; returns `rig_dir`.

  The files are written to a staging folder beside `rig_dir`, which one rename puts in the place
  of the old folder (`files.replace_folder`): weights, rig.json and meta.json of one version
  always go together, and an interruption leaves the old folder whole and no staging folder.

  Args:
    layer: The finetuned fusion layer (built).
    rig: The rig it was finetuned for (saved as rig.json).
    rig_dir: The checkpoint folder; an existing one must be mf_tf's (`files.check_replaceable`).
    meta: JSON-serializable facts of the run (method, K, heatmap size, history).
    log_dir: Optional folder of this run's TensorBoard logs, moved into the checkpoint as
      `tensorboard/` (the logs of the run that wrote it; an older run's go with its folder).

  Raises:
    ParameterError: a non-finite or absurd weight (`check_parameters`); nothing is written.
    files.UnsafePathError: `rig_dir` exists and mf_tf did not write it.
  """
  rig_dir = os.path.abspath(rig_dir)
  check_parameters(_layer_parameters(layer), f"finetuned fusion to save to {rig_dir!r}")
  what = "finetuned fusion checkpoint"
  files.check_replaceable(rig_dir, what)
  parent = os.path.dirname(rig_dir)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(rig_dir)}.", suffix=".tmp")
  try:
    weights = layer.get_weights()
    files.write_atomic(os.path.join(staging, "fusion.json"),
                       json.dumps(keras.saving.serialize_keras_object(layer), indent=1))
    files.write_atomic(os.path.join(staging, "fusion.npz"),
                       _npz_bytes(**{f"w{i}": w for i, w in enumerate(weights)}))
    calibration.save_rig_file(rig, os.path.join(staging, "rig.json"))
    files.write_atomic(os.path.join(staging, "meta.json"),
                       json.dumps(meta, indent=1, sort_keys=True))
    if log_dir and os.path.isdir(log_dir):
      os.rename(log_dir, os.path.join(staging, "tensorboard"))
    try:
      files.replace_folder(staging, rig_dir, what)
    except BaseException:
      _put_back_set_aside(rig_dir)
      raise
  finally:
    # Removes the staging folder only when the swap did not happen (mf_tf wrote all of it).
    shutil.rmtree(staging, ignore_errors=True)
  return rig_dir


def _put_back_set_aside(rig_dir: str) -> None:
  """After a failed swap, renames the old folder that `files.replace_folder` had set aside
  (".<name>.old-*") back to `rig_dir`, when `rig_dir` is missing and that folder is mf_tf's."""
  if os.path.lexists(rig_dir):
    return
  parent, name = os.path.split(rig_dir)
  aside = [os.path.join(parent, entry) for entry in os.listdir(parent)
           if entry.startswith(f".{name}.old-")]
  aside = [path for path in aside if os.path.isdir(path) and files.is_own(path)]
  if aside:
    os.rename(max(aside, key=os.path.getmtime), rig_dir)


def load_finetuned(rig_dir: str) -> tuple[keras.layers.Layer, Rig, dict]:
  """Loads a folder written by `save_finetuned` / --mode=finetune.

  Returns:
    (fusion layer, built, weights loaded; rig; meta dict with at least "method",
    "heatmap_size", "shots").

  Raises:
    FileNotFoundError: A file of FINETUNED_FILES is missing.
    CheckpointError: A file is unreadable.
    ParameterError: A weight is not finite or beyond its bound (`check_parameters`).
  """
  missing = [n for n in FINETUNED_FILES if not os.path.isfile(os.path.join(rig_dir, n))]
  if missing:
    raise FileNotFoundError(f"finetuned fusion checkpoint {rig_dir!r} lacks {missing}")
  try:
    with open(os.path.join(rig_dir, "fusion.json")) as stream:
      layer = keras.saving.deserialize_keras_object(json.load(stream), safe_mode=True)
    with open(os.path.join(rig_dir, "meta.json")) as stream:
      meta = json.load(stream)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise CheckpointError(f"finetuned fusion checkpoint {rig_dir!r} has an unreadable JSON "
                          f"file: {error}") from error
  rig = calibration.load_rig_file(os.path.join(rig_dir, "rig.json"))
  size = int(meta["heatmap_size"])
  if not layer.built:
    layer.build((None, rig.num_views, size, size, 1))
  data = _read_npz(os.path.join(rig_dir, "fusion.npz"), (), "finetuned fusion weights",
                   "--mode=finetune")
  layer.set_weights([data[f"w{i}"] for i in range(len(data))])
  check_parameters(_layer_parameters(layer),
                   f"finetuned fusion checkpoint {os.path.join(rig_dir, 'fusion.npz')!r}")
  return layer, rig, meta


def check_finetuned_rig(stored: Rig, target: Rig, checkpoint: str, target_source: str) -> None:
  """Raises RigMismatchError unless a checkpoint's stored rig has the target rig's cameras.

  Args:
    stored: The rig saved with the finetuned fusion (its rig.json).
    target: The rig the fusion is about to be used for.
    checkpoint: The checkpoint folder, named in the message.
    target_source: How the target was given (a built-in name or a rig file path).

  Raises:
    RigMismatchError: Different view count, camera names or calibration (K, R, t, dist, image
      size beyond `RIG_TOLERANCE`): the fusion was finetuned for another calibration.
  """
  try:
    rig_lib.check_same_rig(stored, target, check_geometry=True, tolerance=RIG_TOLERANCE)
  except rig_lib.RigMismatchError as error:
    raise rig_lib.RigMismatchError(
        f"finetuned fusion {checkpoint!r} was trained for rig {stored.name!r} "
        f"({os.path.join(checkpoint, 'rig.json')}), not for the target rig {target.name!r} "
        f"({target_source}): {error}; run --mode=finetune again with this rig, or give the "
        "rig that checkpoint was trained for") from None


def load_finetuned_for(checkpoint: str, target: Rig, target_source: str):
  """A finetuned fusion folder, checked against the rig it is used for.

  Returns:
    (fusion layer, stored rig, meta), as `load_finetuned`.

  Raises:
    FileNotFoundError: An incomplete checkpoint.
    RigMismatchError: See `check_finetuned_rig`.
  """
  layer, stored, meta = load_finetuned(checkpoint)
  check_finetuned_rig(stored, target, checkpoint, target_source)
  return layer, stored, meta
