r"""mf_tf command line: one entry point, one mode per stage.

  python -m mf_tf.main --mode=MODE [--config=configs/FILE.py[:variant]] [--workdir=DIR] \
      [--config.some.key=value ...]

No --config means configs/default.py (the embedded synthetic world; nothing is downloaded).

A user error (unknown mode, unknown config key or bad override, a workdir that cannot be written,
or a ValueError, CalibrationError or OSError (a missing, unreadable or unwritable file, a full
disk) raised by a mode) prints one line `error: <message>` to stderr and exits with status 2;
`--verbosity=1` (or higher) also prints the traceback.

The default log is mf_tf's own: one line per stage. TensorFlow's messages (its C++ log: oneDNN
and CPU-feature notices, CUDA probes on a machine without a GPU; its Python logger; the absl
records of TensorFlow and Keras internals, such as the renamed inputs a SavedModel save lists)
appear with `--verbosity=1` (or higher). An explicit TF_CPP_MIN_LOG_LEVEL is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import importlib.util
import logging as std_logging
import os
import re
import sys
import tempfile
import traceback
import warnings

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

# name -> one-line help. Mode NAME runs `mf_tf.modes.NAME.run(config, workdir)` (predict also
# takes the --server, --rig, --images and --tls_* flags). A mode's module (and with it TensorFlow)
# is imported only when the mode runs, so help and usage errors answer at once.
MODES = {
    "simulate": "write a synthetic multi-view dataset for a rig and a contact sheet of one frame",
    "warmup": "train the backbone on rendered images (MSE to Gaussians)",
    "precompute": "store the pretraining rig's heatmap pool",
    "metatrain": "MAML over camera-pair tasks: omega_base, theta init",
    "pretrain": "baselines: AffineFuse / NaiveFuse by plain training",
    "finetune": "finetune fusion (theta only) on K frames of a new rig",
    "convert": "convert a TRUSTED annotation pickle to the safe format",
    "export": "export a TF Serving SavedModel per rig + models.config",
    "predict": "one instant of --images (one per view) through --server for --rig",
    "tflite": "convert the backbone to TFLite; size, latency, agreement",
    "evaluate": "JDR and MPJPE (DLT, pictorial) of fusion methods",
    "benchmark": "paper protocol: all methods x K on held-out rigs",
    "demo": "end to end: meta-train, finetune on a new rig, compare, plot",
    "video": "a recording + calibration in: people's 3D motion (TRC, C3D, CSV), overlays",
    "calibrate": "convert a calibration file, or estimate extrinsics from people in a recording",
    "batch": "every session of a folder as --mode=video, in parallel on Apache Beam",
}

# Exit status of a user error (bad flag, config or input), as absl uses for usage errors.
USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report it.

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "configs", "default.py")


@dataclasses.dataclass(frozen=True)
class _Flags:
  """Holders of the command-line flags (defined by `_define_flags`)."""
  mode: flags.FlagHolder
  workdir: flags.FlagHolder
  config: flags.FlagHolder
  server: flags.FlagHolder
  rig: flags.FlagHolder
  images: flags.FlagHolder
  tls_ca_cert: flags.FlagHolder
  tls_client_cert: flags.FlagHolder
  tls_client_key: flags.FlagHolder
  tls_server_name: flags.FlagHolder


def _define_flags() -> _Flags:
  """Defines the flags on absl's FLAGS.

  Defining --config parses the config file and looks up the types of the --config.* overrides of
  sys.argv, so an unknown key surfaces here (AttributeError / KeyError) rather than in parsing.
  """
  return _Flags(
      mode=flags.DEFINE_enum(
          "mode", None, list(MODES),
          "What to run:\n" + "\n".join(f"  {name}: {text}" for name, text in MODES.items())),
      workdir=flags.DEFINE_string("workdir", "workdir",
                                  "Directory for outputs, checkpoints and logs."),
      config=config_flags.DEFINE_config_file(
          "config", _DEFAULT_CONFIG, "Experiment config file, optionally FILE.py:variant.",
          lock_config=True),
      server=flags.DEFINE_string("server", "127.0.0.1:8500", "predict: TF Serving gRPC HOST:PORT."),
      rig=flags.DEFINE_string("rig", None, "predict: served rig (model) name."),
      images=flags.DEFINE_list("images", [], "predict: one image file per view, in rig order."),
      tls_ca_cert=flags.DEFINE_string(
          "tls_ca_cert", None, "predict: connect over TLS, trusting this CA certificate (PEM)."),
      tls_client_cert=flags.DEFINE_string(
          "tls_client_cert", None, "predict: client certificate (PEM) for mutual TLS."),
      tls_client_key=flags.DEFINE_string(
          "tls_client_key", None, "predict: private key (PEM) of --tls_client_cert."),
      tls_server_name=flags.DEFINE_string(
          "tls_server_name", None,
          "predict: name the server's certificate is checked against (default: --server's host)."))


def resolve_mode(mode: str):
  """The run function of a mode name (a key of MODES)."""
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; expected one of: {', '.join(MODES)}")
  return importlib.import_module(f"mf_tf.modes.{mode}").run


def _message(error: BaseException) -> str:
  """One line describing `error` (its cause's message when its own is empty)."""
  while not str(error).strip() and (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  text = str(error).strip() or type(error).__name__
  if "Traceback (most recent call last):" in text:
    # ml_collections embeds the config file's traceback: keep its lead and the final exception.
    lead = text.split("Traceback (most recent call last):")[0].strip()
    text = f"{lead} {text.splitlines()[-1].strip()}"
  return " ".join(text.split())


def _chain(error: BaseException):
  """`error`, then its causes and contexts, innermost last."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _unknown_key_error(error: BaseException) -> ValueError:
  """A clear error for an override naming a key the config does not have.

  ml_collections raises a KeyError (re-raised as AttributeError, each time quoting the previous
  message) whose innermost form holds the bare key, and adds `Did you mean "x"` when a key of
  the config is close: the message names the override, the key, and that suggestion. A key that
  a recipe replaced (`mf_tf.train.recipes.REPLACED_KEYS`) names `config.recipe` instead.
  """
  from mf_tf.train import recipes  # Standard library only: keeps TensorFlow out of usage errors.

  for arg in sys.argv[1:]:
    name = arg.split("=", 1)[0].lstrip("-")
    replaced = name.startswith("config.") and recipes.replaced_key_message(name[len("config."):])
    if replaced:
      return ValueError(f"--{name}: {replaced}")
  key = None
  for link in _chain(error):
    if isinstance(link, KeyError) and link.args and isinstance(link.args[0], str) \
        and "\n" not in link.args[0]:
      key = link.args[0]  # The innermost bare key wins.
  if key is None:
    key = str(error).split("\\n")[0].split("\n")[0]
    while len(key) > 1 and key[0] == key[-1] and key[0] in "'\"":
      key = key[1:-1]  # KeyError / AttributeError str() quotes the key, once per re-raise.
    key = key.strip("'\"\\")
  suggestion = next((match.group(1) for link in _chain(error)
                     for match in [re.search(r'Did you mean \\?"([^"\\]+)\\?"', str(link))]
                     if match), None)
  overrides = [arg.split("=", 1)[0].lstrip("-") for arg in sys.argv[1:]
               if arg.lstrip("-").startswith("config.")]
  named = [name for name in overrides if name.split(".")[-1] == key or f".{key}." in name]
  flag = f"--{named[0]}" if named else f"a --config.* override ({key!r})"
  hint = f"did you mean {suggestion!r}? " if suggestion else ""
  return ValueError(f"{flag}: unknown config key {key!r}; {hint}expected a key of the config "
                    "file (see its get_config)")


def argv_verbosity(argv) -> int:
  """The --verbosity (-v) of command-line arguments, read as absl does, before parsing.

  TensorFlow reads its log level when it is imported, which can precede absl's parsing. The last
  value wins; arguments after `--` are not flags; a value that is not an integer counts as 0
  (absl's parser refuses it later).
  """
  args = list(argv)
  args = args[:args.index("--")] if "--" in args else args
  verbosity = 0
  for index, arg in enumerate(args):
    name, has_value, value = arg.lstrip("-").partition("=")
    if not arg.startswith("-") or name not in ("verbosity", "v"):
      continue
    if not has_value:
      value = args[index + 1] if index + 1 < len(args) else ""
    try:
      verbosity = int(value)
    except ValueError:
      verbosity = 0
  return verbosity


def _verbose() -> bool:
  """Whether --verbosity >= 1: absl's flag once parsed, else the command line's."""
  if flags.FLAGS.is_parsed():
    return int(flags.FLAGS.verbosity or 0) >= 1
  return argv_verbosity(sys.argv[1:]) >= 1


# Packages whose own log records show only from --verbosity=1 on (they log through absl too).
_TENSORFLOW_PACKAGES = ("tensorflow", "keras", "tf_keras", "tensorflow_datasets", "tensorboard")


class TensorFlowChatterFilter(std_logging.Filter):
  """Drops the log records below ERROR that the files of `packages` log.

  TensorFlow's SavedModel writer logs every input it renames (hundreds of numbers per export),
  its checkpoint saver its sharding time: these come through absl's logger, mf_tf's own, so they
  are told apart by the file that logged them.
  """

  def __init__(self, packages=_TENSORFLOW_PACKAGES):
    super().__init__()
    folders = []
    for package in packages:
      spec = importlib.util.find_spec(package)  # A top-level package: found, not imported.
      if spec is not None and spec.submodule_search_locations:
        folders += [os.path.join(folder, "") for folder in spec.submodule_search_locations]
    self.folders = tuple(folders)

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.ERROR or not record.pathname.startswith(self.folders)


def quiet_tensorflow(verbosity: int) -> None:
  """Keeps TensorFlow's own messages out of the log below --verbosity=1; call it before
  TensorFlow is imported (then by `import_tensorflow`).

  Sets TF_CPP_MIN_LOG_LEVEL=3 unless it is set (the C++ log: CPU-feature notices, CUDA probe
  errors without a GPU; a failure still raises in Python), raises the `tensorflow` Python logger
  to ERROR, filters absl's logger (`TensorFlowChatterFilter`) and ignores the Python warnings of
  those packages.
  """
  if verbosity >= 1:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
  absl_logger = logging.get_absl_logger()
  if not any(isinstance(known, TensorFlowChatterFilter) for known in absl_logger.filters):
    absl_logger.addFilter(TensorFlowChatterFilter())
  warnings.filterwarnings(
      "ignore", module=r"(" + "|".join(_TENSORFLOW_PACKAGES) + r")(\.|$)")


@contextlib.contextmanager
def _file_descriptor_2_to(stream):
  """Sends what is written to file descriptor 2 (stderr, C++ included) to `stream` meanwhile."""
  sys.stderr.flush()
  saved = os.dup(2)
  os.dup2(stream.fileno(), 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def import_tensorflow() -> None:
  """Imports TensorFlow, its libraries' loading notices hidden when TF_CPP_MIN_LOG_LEVEL >= 1.

  Those notices (oneDNN's, the CUDA driver probe's; once per library that prints them) come
  before TensorFlow initializes its C++ log, which is what reads TF_CPP_MIN_LOG_LEVEL, so the
  import writes stderr to a temporary file instead, shown only when the import fails. oneDNN
  stays on (TF_ENABLE_ONEDNN_OPTS untouched): only its notice goes.
  """
  try:
    level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
  except ValueError:
    level = 0
  if level < 1 or "tensorflow" in sys.modules:
    return  # The mode imports it.
  with tempfile.TemporaryFile() as captured:
    try:
      with _file_descriptor_2_to(captured):
        importlib.import_module("tensorflow")
    except BaseException:
      captured.seek(0)
      sys.stderr.write(captured.read().decode("utf-8", "replace"))
      raise


def _fail(error: BaseException, verbose: bool | None = None) -> None:
  """Prints `error: <message>` (after the traceback when verbose) and exits with status 2."""
  if verbose if verbose is not None else _verbose():
    traceback.print_exception(error)
  print(f"error: {_message(error)}", file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_EXIT_CODE)


def _parse_flags(argv):
  """absl flags parser turning a bad flag value into one `error:` line and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    _fail(error, verbose=False)
  except (AttributeError, KeyError) as error:
    # With --config=FILE the overrides are applied while parsing (without it, while defining).
    _fail(_unknown_key_error(error), verbose=False)


# Modes that read config.rig.pretrain / config.rig.target: both are loaded (and checked) first.
_RIG_MODES = ("simulate", "warmup", "precompute", "metatrain", "pretrain", "finetune", "evaluate",
              "export", "benchmark", "demo")


def _check_common(config, mode: str) -> None:
  """Validates the settings every mode shares, before any work.

  Image sizes, the fusion settings (`FusionSettings`), the simulated detector's parameters
  (`DetectorParams`), and for the modes that use them the rigs
  of config.rig.* (name or file, loaded with every rig-file check): a bad value fails here, not
  after minutes of training.
  """
  for key in ("heatmap_size", "image_size"):
    value = config.get(key)
    if value is not None and (int(value) != value or value < 2):
      raise ValueError(f"config.{key}={value}, expected an integer >= 2 pixels")
  from mf_tf.modes import common as modes_common  # TensorFlow: imported once a mode is to run.

  if "fusion" in config:
    modes_common.fusion_settings(config)
  if "detector" in config:
    from mf_tf.data import detector as detector_lib

    try:
      detector_lib.detector_params_from_config(config.detector)
    except ValueError as error:
      raise ValueError(f"config.detector: {error}") from error
  if mode in _RIG_MODES and "rig" in config:
    for role in modes_common.RIG_ROLES:
      try:
        modes_common.rig(config, role)
      except ValueError as error:
        raise ValueError(f"config.rig.{role}={config.rig[role]!r}: {error}") from error


def check_workdir(workdir: str, flag_value: str) -> None:
  """Creates `workdir` if needed and proves it writable, before any work.

  A probe file is written with mf_tf's atomic writer (a temporary file and a rename, as every
  output) and removed, so a read-only, full or unreachable folder fails now rather than after
  minutes of computing.

  Raises:
    ValueError: naming --workdir, the path and the system's reason.
  """
  from mf_tf import files  # Standard library only: keeps TensorFlow out of usage errors.

  try:
    if os.path.exists(workdir) and not os.path.isdir(workdir):
      raise ValueError(f"--workdir={flag_value} is a file; expected a folder (or a new path)")
    os.makedirs(workdir, exist_ok=True)
    handle, probe = tempfile.mkstemp(prefix=".mf_tf_probe.", suffix=".tmp", dir=workdir)
    os.close(handle)
    try:
      files.write_atomic(probe, b"mf_tf: workdir write check\n")
    finally:
      os.remove(probe)
  except OSError as error:
    reason = error.strerror or type(error).__name__
    where = error.filename if error.filename else workdir
    raise ValueError(f"--workdir={flag_value} is not writable: {reason} ({where!r}); expected a "
                     "folder this user can create and write, with free space") from error


def _os_error(error: OSError, workdir: str) -> ValueError:
  """One line for an OSError a mode let through: the path, the reason, and what to check."""
  reason = error.strerror or str(error) or type(error).__name__
  code = errno.errorcode.get(error.errno, "") if error.errno else ""
  paths = [os.fspath(path) for path in (error.filename, error.filename2) if path]
  where = " -> ".join(repr(path) for path in paths) if paths else f"under --workdir {workdir!r}"
  return ValueError(f"cannot read or write {where}: {reason}{f' ({code})' if code else ''}; "
                    "expected readable inputs and a writable workdir with free space")


# Errors that mean bad input (config, files, calibration), not a bug of mf_tf.
_USER_ERRORS = (ValueError, FileNotFoundError)  # CalibrationError is a ValueError.


def main(argv, cli: _Flags):
  if len(argv) > 1 and cli.mode.value != "batch":  # batch: Beam options given after `--`.
    _fail(ValueError(f"unexpected positional arguments {argv[1:]}; expected only flags"))
  if cli.mode.value is None:
    _fail(ValueError("--mode is required; one of: " + ", ".join(MODES)))
  config = cli.config.value
  workdir = os.path.abspath(cli.workdir.value)
  try:
    check_workdir(workdir, cli.workdir.value)
    import_tensorflow()
    _check_common(config, cli.mode.value)
    logging.info("mode=%s workdir=%s", cli.mode.value, workdir)
    run = resolve_mode(cli.mode.value)
    if cli.mode.value == "predict":
      run(config, workdir, server=cli.server.value, rig=cli.rig.value,
          images=tuple(cli.images.value), tls_ca_cert=cli.tls_ca_cert.value,
          tls_client_cert=cli.tls_client_cert.value, tls_client_key=cli.tls_client_key.value,
          tls_server_name=cli.tls_server_name.value)
    elif cli.mode.value == "batch":
      run(config, workdir, pipeline_args=tuple(argv[1:]))
    else:
      run(config, workdir)
  except _USER_ERRORS as error:
    _fail(error)
  except OSError as error:
    # Unreadable inputs, a read-only or full disk: the path and the reason, not a traceback.
    _fail(_os_error(error, workdir))
  except KeyboardInterrupt:
    # Training loops save a checkpoint before letting the interrupt through.
    print("error: interrupted", file=sys.stderr, flush=True)
    sys.exit(INTERRUPTED_EXIT_CODE)


def cli_main() -> None:
  """The `python -m mf_tf.main` entry point."""
  quiet_tensorflow(argv_verbosity(sys.argv[1:]))
  try:
    cli = _define_flags()
  except (AttributeError, KeyError) as error:
    _fail(_unknown_key_error(error))
  except (ValueError, TypeError, flags.Error) as error:
    # A bad --config / --config.* value found while defining the config flag.
    _fail(error)
  app.run(lambda argv: main(argv, cli), flags_parser=_parse_flags)


if __name__ == "__main__":
  cli_main()
