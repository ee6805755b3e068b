"""--mode=tflite: the backbone as fp32 / fp16 / int8 TFLite for edge devices, with a report.

backbone -> SavedModel -> .tflite (`mf_tf.serving.tflite`); the report compares the TFLite
heatmaps and decoded joints with Keras on held-out images (config.tflite.representative_glob, or
rendered views of config.rig.target), and times both.
"""

from __future__ import annotations

import json
import os

from absl import logging

from mf_tf import files
from mf_tf.modes import export as export_mode
from mf_tf.serving import tflite


def run(config, workdir: str) -> dict:
  """`--mode=tflite`: backbone -> SavedModel -> fp32/fp16/int8 .tflite; prints the report."""
  backbone = export_mode.load_backbone(config, workdir)
  image_size = int(backbone.input_shape[1])
  out_dir = os.path.join(export_mode.export_dir(config, workdir), "tflite")
  saved_model_dir = os.path.join(out_dir, "backbone_saved_model")
  tflite.export_backbone_saved_model(backbone, saved_model_dir)
  total = int(config.tflite.num_representative) + int(config.tflite.num_eval)
  if config.tflite.representative_glob:
    images = tflite.load_images(config.tflite.representative_glob, image_size, total)
  else:
    images = export_mode.synthetic_images(config, image_size, total)
  num_eval = min(int(config.tflite.num_eval), max(1, len(images) // 2))
  calibration, evaluation = images[num_eval:], images[:num_eval]
  quant_type = config.tflite.quant_type
  model = tflite.convert_tflite_model(saved_model_dir, quant_type,
                               calibration if quant_type == "int8" else None)
  path = os.path.join(out_dir, f"backbone_{quant_type}.tflite")
  files.write_atomic(path, model)
  report = tflite.compare_with_keras(backbone, model, evaluation, int(config.tflite.num_threads))
  report.update(quant_type=quant_type, path=path, num_calibration=len(calibration),
                num_eval=len(evaluation), image_size=image_size)
  files.write_atomic(os.path.join(out_dir, f"report_{quant_type}.json"),
                     json.dumps(report, indent=1))
  print(json.dumps(report, indent=1))
  logging.info("wrote %s", path)
  return report
