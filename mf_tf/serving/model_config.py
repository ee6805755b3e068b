"""TF Serving's on-disk layout and its `models.config` (ModelServerConfig text proto).

Layout read by `tensorflow_model_server --model_config_file=.../models.config`:

    <export_dir>/models.config
    <export_dir>/<rig_name>/<version>/saved_model.pb, variables/, assets.extra/

A version folder is a positive integer; anything else in `<rig_name>/` (for example the hidden
temporary folders used while a version is being written) is ignored by the server.
"""

from __future__ import annotations

import json
import os
import re

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from mf_tf import files

MODELS_CONFIG = "models.config"
ASSETS_EXTRA = "assets.extra"  # Files beside the SavedModel that TF Serving reads or ignores.
WARMUP_FILE = "tf_serving_warmup_requests"  # In ASSETS_EXTRA; replayed by the server at load.
EXPORT_CONFIG_FILE = "export_config.json"  # In ASSETS_EXTRA: the export's settings and shapes.
_VERSION = re.compile(r"^[1-9][0-9]*$")


def check_model_name(name: str) -> str:
  """Returns `name` if it can be a served model name and a folder name, else raises ValueError
  (`mf_tf.files.check_name`: 1-100 letters, digits, '.', '_' or '-', not starting with '.' or
  '-')."""
  return files.check_name(name, "model name")


def versions(model_base_path: str) -> list[int]:
  """Sorted version numbers of the complete SavedModels under `model_base_path`."""
  if not os.path.isdir(model_base_path):
    return []
  found = []
  for entry in os.listdir(model_base_path):
    if _VERSION.match(entry) and os.path.isfile(
        os.path.join(model_base_path, entry, "saved_model.pb")):
      found.append(int(entry))
  return sorted(found)


def latest_version(model_base_path: str) -> int | None:
  """Highest complete version under `model_base_path`, or None when there is none."""
  found = versions(model_base_path)
  return found[-1] if found else None


def read_export_config(model_base_path: str, version: int | None = None) -> dict | None:
  """The `assets.extra/export_config.json` of one exported version, or None when absent.

  Args:
    model_base_path: `<export_dir>/<model_name>`.
    version: Version number; None: the latest complete version (the one TF Serving loads).

  Returns:
    The record written by the export (rig, num_views, image_size, heatmap_size, ...), or None
    when there is no such version or file.
  """
  version = latest_version(model_base_path) if version is None else int(version)
  if version is None:
    return None
  path = os.path.join(model_base_path, str(version), ASSETS_EXTRA, EXPORT_CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    record = json.load(f)
  if not isinstance(record, dict):
    raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")
  return record


def exported_models(export_dir: str) -> list[str]:
  """Sorted names of the sub-folders of `export_dir` that hold at least one complete version."""
  if not os.path.isdir(export_dir):
    return []
  return sorted(name for name in os.listdir(export_dir)
                if files.NAME_PATTERN.fullmatch(name) and versions(os.path.join(export_dir, name)))


def build_models_config(names_to_base_paths: dict[str, str],
                        num_versions: int = 1) -> model_server_config_pb2.ModelServerConfig:
  """A ModelServerConfig serving each named model from its base path.

  Args:
    names_to_base_paths: model name -> base path (the folder holding numbered versions), as the
      server will see it (absolute).
    num_versions: How many of the latest versions the server keeps loaded.

  Returns:
    The config proto.
  """
  config = model_server_config_pb2.ModelServerConfig()
  for name in sorted(names_to_base_paths):
    entry = config.model_config_list.config.add()
    entry.name = check_model_name(name)
    entry.base_path = names_to_base_paths[name]
    entry.model_platform = "tensorflow"
    entry.model_version_policy.latest.num_versions = int(num_versions)
  return config


def parse_models_config(text: str) -> model_server_config_pb2.ModelServerConfig:
  """Parses and checks a models.config text proto.

  Raises:
    ValueError: The text is not a ModelServerConfig, lists no model, or lists a model twice or
      without a base path.
  """
  config = model_server_config_pb2.ModelServerConfig()
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as error:
    raise ValueError(
        f"models.config is not a valid ModelServerConfig text proto: {error}") from error
  entries = config.model_config_list.config
  if not entries:
    raise ValueError("models.config lists no model (model_config_list.config is empty)")
  names = [entry.name for entry in entries]
  if len(set(names)) != len(names):
    raise ValueError(f"models.config lists a model name more than once: {names}")
  for entry in entries:
    check_model_name(entry.name)
    if not entry.base_path:
      raise ValueError(f"models.config: model {entry.name!r} has no base_path")
  return config


def read_models_config(path: str) -> dict[str, str]:
  """Model name -> base path, from a models.config file (validated)."""
  with open(path, encoding="utf-8") as f:
    config = parse_models_config(f.read())
  return {entry.name: entry.base_path for entry in config.model_config_list.config}


def write_models_config(export_dir: str, base_path_prefix: str | None = None,
                        num_versions: int = 1) -> str:
  """Writes `<export_dir>/models.config` listing every model exported under `export_dir`.

  Args:
    export_dir: Folder holding `<model_name>/<version>/` SavedModels.
    base_path_prefix: Where the server will see `export_dir` (for example "/models" when the folder
      is mounted there in the `tensorflow/serving` container). None: the absolute local path.
    num_versions: How many of the latest versions the server keeps loaded.

  Returns:
    The path written. The text is parsed back before it replaces the previous file, atomically and
    readable by all (mode 0644: the server reading it, a TF Serving container, may run as another
    user).
  """
  names = exported_models(export_dir)
  if not names:
    raise ValueError(f"no exported model (<name>/<version>/saved_model.pb) under {export_dir!r}")
  root = os.path.abspath(export_dir) if not base_path_prefix else base_path_prefix.rstrip("/")
  config = build_models_config({name: f"{root}/{name}" for name in names}, num_versions)
  text = text_format.MessageToString(config)
  parse_models_config(text)
  path = os.path.join(export_dir, MODELS_CONFIG)
  files.write_atomic(path, text)
  return path


def write_warmup_requests(path: str, logs) -> None:
  """Writes PredictionLog protos as the TFRecord file TF Serving replays when it loads a version."""
  with tf.io.TFRecordWriter(path) as writer:
    for log in logs:
      writer.write(log.SerializeToString())


def read_warmup_requests(path: str) -> list:
  """PredictionLog protos from a `tf_serving_warmup_requests` TFRecord file."""
  logs = []
  for record in tf.data.TFRecordDataset(path):
    log = prediction_log_pb2.PredictionLog()
    log.ParseFromString(record.numpy())
    logs.append(log)
  return logs
