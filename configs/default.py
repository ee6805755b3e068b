r"""The embedded synthetic default: every mode runs on it with no download.

  python -m mf_tf.main --mode=simulate --workdir=/tmp/mf_tf
  python -m mf_tf.main --mode=simulate --config=configs/default.py:smoke --workdir=/tmp/mf_tf_smoke

Each section belongs to one stage; libraries receive explicit arguments taken from it by the mode
functions, never the config itself. `:smoke` shrinks everything for quick local runs and CI.
"""

import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0  # Every random draw (poses, rigs, detector noise, init) derives from this.
  config.joint_set = "h36m17"  # Named joint set; see mf_tf/data/joints.py.
  config.heatmap_size = 64  # Heatmap side in pixels; a heatmap covers its camera's whole image.
  config.image_size = 256  # Rendered / backbone input side in pixels (heatmap_size * 4).
  # How fusion adapts to a new rig (mf_tf/train/recipes.py): its starts, loss, selection and
  # theta field; meta-training and pretraining train with its loss what its starts read.
  config.recipe = "default"  # default (geometry of the K labels; measured best, README.md) |
  # paper (meta-learned init, MSE, per-pixel theta) | calibrated (calibrated theta + residual).

  # Rigs: a built-in name (see mf_tf/geometry/rigs.py) or a canonical rig JSON file.
  config.rig = ml_collections.ConfigDict()
  config.rig.pretrain = "panoptic_vga20"  # Paper: 20 Panoptic cameras, 380 ordered pairs.
  config.rig.target = "h36m"  # Held-out rig for finetune / evaluate / export / demo.

  # Fusion (mf_tf/fusion/settings.py): read-out, training-loss temperature, the calibrated line.
  config.fusion = ml_collections.ConfigDict()
  config.fusion.temperature = 0.2  # Paper Sec. 5.1: softmax temperature on every fused channel.
  config.fusion.loss_temperature = 0.2  # Training-loss softmax T; the paper's value (a higher T
  # lets fusion overwhelm visible joints: measured in BUILD.md, "Measured settings").
  config.fusion.line_width_px = 1.0  # Calibrated init: line cross-section sigma, heatmap px.
  config.fusion.line_value = 0.1  # Calibrated init: line peak (fused = h_v + 0.1 * line sums); a
  # stronger line pulls the estimate onto the line, off the joint (measured in BUILD.md).

  _data_sections(config)
  _serving_sections(config)
  _evaluation_sections(config)
  _training_sections(config)
  _video_section(config)
  _calibrate_sections(config)
  config.distribute = "none"  # none | mirrored | multi_worker (tf.distribute strategy).

  if arg == "smoke":
    _smoke(config)
  elif arg == "paper":
    config.recipe = "paper"  # MetaFuse as the paper (mf_tf/train/recipes.py PAPER).
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; expected none, 'smoke' or 'paper'")
  return config


def _data_sections(config):
  """Datasets, the synthetic world and its simulated detector, rendering, conversion."""
  # TFDS datasets (mf_tf/data/tfds_builders.py): where prepared datasets live and where a
  # manually downloaded one (Human3.6M, Panoptic, Total Capture) was unpacked.
  config.data = ml_collections.ConfigDict()
  config.data.tfds_dir = ""  # "" means <workdir>/tensorflow_datasets.
  config.data.manual_dir = ""  # Real-data builders read here (see each builder's docstring).

  # Synthetic world and its simulated detector (mf_tf/data/).
  config.world = ml_collections.ConfigDict()
  config.world.num_frames = 100  # Frames written by --mode=simulate.
  config.world.render_images = True  # Also render the volumetric body (slower).
  config.world.shard_size = 50  # Frames per TFRecord shard.
  config.world.rig = "target"  # Simulated rig: config.rig.target, or "pretrain" (rig.pretrain).
  config.world.image_encoding = "png"  # png (lossless, ~3x smaller) | raw uint8 in the shards.
  config.world.store_heatmaps = False  # Dense heatmaps in shards; False: compact detector state.
  config.world.sheet_frame = 0  # Frame drawn on the contact sheet.
  config.world.sheet_joint = "lwrist"  # Joint whose epipolar lines the contact sheet draws.
  config.world.sheet_views = 9  # Views drawn on the contact sheet (the rig's first ones).

  # Simulated detector error model (mf_tf/data/detector.py DetectorParams; px at 64x64, scaled).
  config.detector = ml_collections.ConfigDict()
  config.detector.sigma = 2.0  # Peak Gaussian std, px (SimpleBaseline targets use 2 at 64x64).
  config.detector.visible_jitter_px = 1.0  # Visible joints: position noise std, px.
  config.detector.visible_amplitude = (0.75, 1.0)  # Visible joints: true peak height range.
  config.detector.visible_distractor_amplitude = (0.0, 0.25)  # Visible: faint distractor.
  config.detector.visible_confusion_probability = 0.05  # Visible joints still confused L/R.
  config.detector.occluded_jitter_px = 1.5  # Occluded joints: position noise std, px.
  config.detector.occluded_amplitude = (0.2, 0.6)  # Occlusion weakens the true peak.
  config.detector.distractor_amplitude = (0.5, 1.0)  # ... and a stronger wrong peak appears.
  config.detector.distractor_jitter_px = 1.0  # Distractor position noise std, px.
  config.detector.mirror_probability = 0.7  # Distractor on the mirrored joint, else on a limb.
  config.detector.noise_level = 0.04  # Smooth background noise std per pixel.

  # Rendered images of the capsule body (mf_tf/data/render.py).
  config.render = ml_collections.ConfigDict()
  config.render.tile_mm = 500.0  # Floor checker tile side, mm.
  config.render.noise_std = 0.03  # Per-pixel background noise std (intensities in [0, 1]).

  # One-time conversion of trusted annotation files (mf_tf/data/convert.py, --mode=convert).
  config.convert = ml_collections.ConfigDict()
  config.convert.format = "h36m_pickle"  # CrossView / H36M-Toolbox annotation pickle.
  config.convert.input = ""  # The TRUSTED input file (it is unpickled); required.
  config.convert.output = ""  # "" means <workdir>/converted/h36m.
  # Unpickling runs any code the input holds: only an explicit True converts (a mistyped path
  # must never run a stranger's file).
  config.convert.trust_pickle = False


def _serving_sections(config):
  """Serving export, --mode=predict and the TFLite backbone."""
  # Serving export (mf_tf/serving/export.py, --mode=export): a SavedModel per rig for TF Serving.
  config.export = ml_collections.ConfigDict()
  config.export.dir = ""  # Export root served by TF Serving; "" means <workdir>/export.
  config.export.rigs = ""  # Comma-separated rigs to export; "" means config.rig.target.
  config.export.top_k = 0  # 0: dense fusion matrices; k > 0: sparse top-k per row (its time
  # share and JDR: benchmarks/serving_bench.py, measured in BUILD.md).
  config.export.triangulate = True  # Add joints_3d (DLT with the rig's calibration baked in).
  config.export.version = 0  # 0: next free version number; else this one (must not exist yet).
  config.export.base_path_prefix = ""  # models.config paths: "" local, "/models" in a container.
  config.export.warmup = True  # Write assets.extra/tf_serving_warmup_requests (fast first call).
  config.export.client_timeout_s = 60.0  # --mode=predict gRPC deadline (4 views on a CPU are slow).
  config.export.backbone_weights = ""  # .keras or .weights.h5 ("": the warmup stage's output file).
  config.export.fusion_source = "finetuned"  # finetuned (K labelled frames) or calibrated (K = 0).
  config.export.finetuned_dir = ""  # Finetuned rigs <dir>/<rig>/; "" means <workdir>/finetune.
  # <export dir>/batching_parameters for `tensorflow_model_server --enable_batching` (and the
  # in-process server's batching): mf_tf/serving/batching.py; load figures in BUILD.md.
  config.export.batching = ml_collections.ConfigDict()
  config.export.batching.max_batch_size = 16  # Frames per batch: the largest request (16 frames).
  config.export.batching.batch_timeout_micros = 2000  # Wait for company: a small share of a
  # fuse_crops frame's time, so one client alone is barely slowed.
  config.export.batching.max_enqueued_batches = 16  # Then UNAVAILABLE: bounded queue and memory.
  config.export.batching.num_batch_threads = 4  # Batches at once: set to the server's CPU cores.
  config.export.batching.allowed_batch_sizes = ""  # "1,2,4,8,16": pad batches to these sizes
  # (fewer shapes, for GPU servers); "": no padding (padding only adds work on a CPU).

  # --mode=predict (mf_tf/modes/predict.py): one instant of --images sent to a served rig.
  config.predict = ml_collections.ConfigDict()
  config.predict.route = "crops"  # crops: BlazePose here, person-crop fusion on the server (real
  # photos; the instant as --mode=video, config.video's settings); image: whole images to the
  # served backbone (only for a backbone trained on images like yours).
  config.predict.rig_file = ""  # crops: the served rig's rig.json; "": the export record's.

  # TFLite backbone for edge devices (mf_tf/serving/tflite.py, --mode=tflite).
  config.tflite = ml_collections.ConfigDict()
  config.tflite.quant_type = "int8"  # fp32 | fp16 | int8 (full-integer ops, float32 input/output).
  config.tflite.representative_glob = ""  # int8 calibration images; "" renders synthetic frames.
  config.tflite.num_representative = 32  # Calibration images for int8 (more: steadier ranges).
  config.tflite.num_eval = 8  # Images for the agreement and latency report.
  config.tflite.num_threads = 2  # Interpreter threads (the edge device's cores).


def _evaluation_sections(config):
  """Evaluation and the end-to-end demo."""
  # Evaluation (mf_tf/evaluation/, --mode=evaluate): JDR, MPJPE by DLT and by the RPSM.
  config.evaluate = ml_collections.ConfigDict()
  config.evaluate.methods = "no_fusion,calibrated,finetuned"  # finetuned: skipped if absent.
  config.evaluate.checkpoint = ""  # Finetuned fusion of the rig; "" means <workdir>/finetune/<rig>.
  config.evaluate.num_frames = 200  # Synthetic test frames of config.rig.target.
  config.evaluate.seed_offset = 1000  # Test seed = config.seed + this: held out from training.
  config.evaluate.limb_frames = 500  # Training poses (config.seed) giving the RPSM limb lengths.
  config.evaluate.batch_size = 16  # Frames per fusion call.
  config.evaluate.box_size_mm = 2000.0  # RPSM coarse cube side around the triangulated root.
  config.evaluate.coarse_bins = 12  # CrossView: 16; 12 is faster for about the same MPJPE
  # (benchmarks/rpsm_bench.py, measured in BUILD.md).
  config.evaluate.refine_bins = 5  # RPSM local grid per axis per joint (5: spacing halves).
  config.evaluate.refine_iterations = 5  # RPSM refinement passes (final spacing 5.2 mm).
  config.evaluate.limb_tolerance = 0.2  # Flat limb prior within 20% of the mean length.
  config.evaluate.limb_sigma_mm = 20.0  # Gaussian tails of the limb prior beyond the tolerance.
  config.evaluate.sampling = "bicubic"  # Heatmap interpolation in the RPSM unary term.
  config.evaluate.outlier_px = 0.0  # > 0: robust DLT drops views reprojecting farther (px).

  # End-to-end demo (mf_tf/experiments/demo.py, --mode=demo): pretrain rig -> config.rig.target.
  config.demo = ml_collections.ConfigDict()
  config.demo.heatmap_size = 32  # CPU-sized: 64 px pair matrices are 16.8M entries each.
  config.demo.pretrain_frames = 300  # Frames of config.rig.pretrain for meta-training.
  # Meta-training of the demo: the fields of config.metatrain's MAML settings, CPU-sized.
  config.demo.maml = ml_collections.ConfigDict()
  config.demo.maml.num_steps = 40  # MAML outer steps, CPU-sized.
  config.demo.maml.tasks_per_step = 4  # Ordered camera pairs per outer step.
  config.demo.maml.support_size = 4  # Frames per task for the inner step.
  config.demo.maml.query_size = 4  # Frames per task for the outer loss.
  config.demo.maml.inner_lr = 0.1  # Inner SGD alpha: 1.0 diverges at 32 px (measured in BUILD.md).
  config.demo.maml.inner_steps = 1  # Inner gradient steps.
  config.demo.maml.outer_lr = 1e-3  # Paper: Adam 1e-3 in meta-training.
  config.demo.maml.first_order = False  # Second-order MAML, as in the paper.
  config.demo.maml.inner_omega = True  # Inner steps adapt omega_base too (paper Eq. 5).
  config.demo.shots = 50  # K labelled frames of the new rig (paper: 50 already beats No-Fusion).
  config.demo.finetune_steps = 60  # Adam steps on theta (omega_base frozen).
  config.demo.finetune_lr = 5e-3  # Paper: Adam 5e-3 in meta-testing.
  config.demo.finetune_batch_size = 8
  config.demo.test_frames = 100  # Test frames of the new rig (seed + evaluate.seed_offset).
  config.demo.coarse_bins = 8  # RPSM coarse grid of the demo (32 px heatmaps need no finer).
  config.demo.refine_iterations = 3  # RPSM refinement passes of the demo.
  config.demo.export = True  # Export the finetuned rig for TF Serving (skipped if unavailable).
  config.demo.export_backbone = "mobilenetv2_035"  # Backbone in the exported graph.
  config.demo.export_backbone_weights = ""  # Trained backbone weights; "" exports untrained.
  config.demo.progress = True  # Progress bars while training.
  config.demo.paper_row = True  # Also MetaFuse^K with the paper recipe (unless config.recipe).
  config.demo.calibrated_variant = False  # Also MetaFuse^K with the "calibrated" recipe.


def _training_sections(config):
  """The backbone and the training stages, in pipeline order."""
  # Backbone (mf_tf/models/backbone.py): SimpleBaseline, image -> heatmaps at a quarter size.
  config.model = ml_collections.ConfigDict()
  config.model.backbone = "resnet50"  # Paper; "mobilenetv2_035" is the light CPU/CI builder.
  config.model.weights = ""  # Local .weights.h5/.h5 (whole backbone or headless trunk); "" none.
  config.model.target_sigma = 2.0  # Gaussian target std at 64 px (SimpleBaseline), scaled.

  # Warm-up (mf_tf/train/warmup.py, --mode=warmup): backbone alone, MSE to Gaussian targets.
  config.warmup = ml_collections.ConfigDict()
  config.warmup.data_dir = ""  # TFRecord dataset with images (--mode=simulate); "" simulates.
  config.warmup.num_frames = 64  # Simulated frames (x all views) when data_dir is "".
  config.warmup.views = 4  # Views per simulated frame used as images (first ones of the rig).
  config.warmup.epochs = 2  # Paper: 30 on the real data (configs/metafuse_paper.py).
  config.warmup.batch_size = 8  # Images per step.
  config.warmup.learning_rate = 1e-3  # Paper: Adam 1e-3, /10 at 1/2 and /100 at 5/6 of epochs.
  config.warmup.validation_fraction = 0.1  # Held-out images for val_loss.

  # Precompute (--mode=precompute): the frame pool meta-training reads.
  config.precompute = ml_collections.ConfigDict()
  config.precompute.source = "detector"  # detector (simulated, compact) | backbone (warm-up).
  config.precompute.num_frames = 300  # Frames of config.rig.pretrain in the pool.
  config.precompute.batch_size = 8  # Frames per backbone call (source=backbone).

  # Meta-training (mf_tf/train/metatrain.py, --mode=metatrain): MAML over camera-pair tasks.
  config.metatrain = ml_collections.ConfigDict()
  config.metatrain.num_steps = 30  # Outer steps; CPU-sized (paper scale: metafuse_paper.py).
  config.metatrain.tasks_per_step = 2  # Ordered pairs per outer step (split over replicas).
  config.metatrain.support_size = 4  # Frames per task for the inner step (D_i^train).
  config.metatrain.query_size = 4  # Frames per task for the outer loss (D_i^test).
  config.metatrain.inner_lr = 0.003  # alpha of Eq. 4-5; best one-step value at 64 px (measured).
  config.metatrain.inner_steps = 1  # Inner gradient steps.
  config.metatrain.outer_lr = 1e-3  # Paper: Adam 1e-3.
  config.metatrain.first_order = False  # Second order by default.
  config.metatrain.inner_omega = True  # Inner steps adapt omega_base too (paper Eq. 5); False:
  # theta only.
  config.metatrain.holdout_pairs = 20  # Pairs never meta-trained on; losses reported at the end.
  config.metatrain.checkpoint_every = 10  # Steps between checkpoints (resume point).
  config.metatrain.restart = False  # True: discard checkpoints of other settings and start over.

  # Baseline pretraining (mf_tf/train/pretrain.py, --mode=pretrain), paper Table 1.
  config.pretrain = ml_collections.ConfigDict()
  config.pretrain.method = "affine"  # affine (AffineFuse) | naive (NaiveFuse).
  config.pretrain.views = (0, 5, 10, 15)  # "four selected cameras" of config.rig.pretrain.
  config.pretrain.epochs = 3  # Passes over the pool frames.
  config.pretrain.batch_size = 8  # Frames per step.
  config.pretrain.learning_rate = 1e-3  # Adam.

  # Finetuning on a new rig (mf_tf/train/finetune.py, --mode=finetune), paper Sec. 4.3.
  config.finetune = ml_collections.ConfigDict()
  config.finetune.fusion = "metafuse"  # metafuse (from config.recipe's starts) | affine | naive
  # (the paper's baselines, from --mode=pretrain), all trained with the recipe.
  config.finetune.init = ""  # Pretrained init file; "" is the earlier stage's output.
  config.finetune.data_dir = ""  # TFRecord dataset of the target rig; "" simulates K frames.
  config.finetune.tfds = ""  # Or a TFDS dataset, "builder/config" of mf_tf.data.tfds_builders
  # (e.g. mf_tf_synthetic_world/h36m), prepared offline under config.data.tfds_dir.
  config.finetune.tfds_split = "train"  # Split (or TFDS slice) of config.finetune.tfds.
  config.finetune.shots = 50  # K labelled frames of config.rig.target (paper: 50..500).
  config.finetune.validation_fraction = 0.2  # Of the K frames, held out for the selection.
  config.finetune.epochs = 30  # Upper bound; the recipe's selection stops earlier (patience).
  config.finetune.patience = 5  # Epochs without a new best before stopping.
  config.finetune.batch_size = 8  # Frames per step.
  config.finetune.learning_rate = 5e-3  # Paper: Adam 5e-3, theta only (omega_base frozen).


def _video_section(config):
  """--mode=video: a recording in, 3D motion out."""
  config.video = ml_collections.ConfigDict()  # --mode=video (mf_tf/modes/video.py).
  # The recording: exactly one of session, videos, frames_dir.
  config.video.session = ""  # Pose2Sim session folder: videos/<camera>.mp4 and calibration/.
  config.video.videos = ""  # Comma-separated video files, one per camera (name = file stem).
  config.video.frames_dir = ""  # One subfolder of synchronized frames per camera, named as it.
  config.video.rig = ""  # Calibration file (any supported format) or built-in rig name; empty:
  # the session's calibration/ file.
  config.video.units = ""  # m | cm | mm: a TOML/EasyMocap file's unit when it cannot be told.
  config.video.start = 0  # First frame.
  config.video.stop = 0  # Frame to stop before; 0: the end of the shortest camera.
  config.video.stride = 1  # Every n-th frame (the outputs' frame rate is fps / stride).
  config.video.offsets = ""  # "cam01:2,cam03:-1": camera c's frame i + k shows instant i.
  config.video.fps = 0.0  # Frame rate of image folders (they carry none); 0: 30. Videos: theirs.
  config.video.workers = 0  # Threads running the views' models in parallel; 0: one per CPU core
  # (measured in BUILD.md: 2 workers of one TFLite thread beat one worker of two on 2 cores).
  config.video.joint_set = "h36m17"  # BlazePose joints mapped to this set (h36m17 | coco19 | ...).
  config.video.fusion = "epipolar"  # none | epipolar: calibrated line fusion of the crop heatmaps
  # (the line of config.fusion.line_width_px / line_value, as MetaFuse^0).
  config.video.output_dir = ""  # Empty: <workdir>/video.
  config.video.max_cost_px = 30.0  # Association: mean symmetric epipolar distance of one person.
  config.video.min_score = 0.5  # Joint visibility below it: not associated, not triangulated.
  config.video.max_error_px = 25.0  # A view leaves a joint of >= 3 views beyond this reprojection
  # error (above the confident fused joints' 99th percentile: measured in BUILD.md).
  config.video.min_bone_ratio = 0.55  # Bone length / reference (data.skeleton) outside
  config.video.max_bone_ratio = 1.6  # [min, max] drops the joint and what hangs on it (wider
  # than the demo frames' well-seen people, measured in BUILD.md).
  config.video.redetect_every = 30  # Frames between person-detector runs where all are tracked
  # (the detector is the costliest stage; a lost crop runs it at once).
  config.video.recover_views = True  # Search the views that missed a reconstructed person.
  config.video.recovery_max_px = 30.0  # A recovered pose's mean distance to the projection.
  config.video.track_max_distance_mm = 500.0  # Centre move per frame that keeps an identity
  # (far above walking, below the distance between two people standing side by side).
  config.video.max_gap_frames = 20  # Frames a person may go unseen (and gaps filled) per track.
  config.video.min_track_frames = 10  # Shorter tracks are not written as motion files.
  config.video.duplicate_distance_mm = 200.0  # Two people of disjoint views this close (median
  # joint distance) are one person that association split (well below two people side by side).
  config.video.filter = "butterworth"  # none | butterworth | savgol | one_euro (measured in
  # BUILD.md: jitter and bone-length variation against lag on the demo recordings).
  config.video.filter_params = ""  # "cutoff_hz=6,order=4"; empty: the method's defaults.
  config.video.formats = "trc,c3d,csv"  # Motion files per person.
  config.video.overlays = True  # overlays/<camera>.mp4 (fused joints, reprojected skeleton).
  config.video.overlay_scale = 0.5  # Overlay size / frame size (smaller encodes faster).
  config.video.animation = True  # skeleton.mp4: the filtered 3D skeletons.


def _calibrate_sections(config):
  """--mode=calibrate and --mode=batch."""
  config.calibrate = ml_collections.ConfigDict()  # --mode=calibrate (mf_tf/modes/calibrate.py).
  config.calibrate.calibration = ""  # The file to read (any supported format).
  config.calibrate.convert = ""  # The file (.json, .toml) or folder (EasyMocap) to write.
  config.calibrate.format = ""  # json | toml | easymocap; empty: from convert's extension.
  config.calibrate.units = ""  # m | cm | mm: a TOML/EasyMocap input's unit when it cannot be told.
  # Calibration from the people in a recording (given one of session / videos / frames_dir).
  config.calibrate.session = ""  # Pose2Sim session folder (videos/<camera>.mp4), as config.video.
  config.calibrate.videos = ""  # Comma-separated video files, one per camera (name = file stem).
  config.calibrate.frames_dir = ""  # One subfolder of synchronized frames per camera.
  config.calibrate.intrinsics = ""  # Calibration file whose K, distortion and size are used (its
  # extrinsics are not); empty: the checkerboard images below.
  config.calibrate.checkerboard = ""  # Folder of one subfolder of board images per camera (its
  # name contains the camera's), for OpenCV's calibrateCamera.
  config.calibrate.board = "4x7"  # Inner corners COLSxROWS (Pose2Sim's demo board).
  config.calibrate.square_mm = 60.0  # Board square side; intrinsics do not depend on it.
  config.calibrate.start = 0  # First frame read.
  config.calibrate.stop = 0  # Frame to stop before; 0: the end of the shortest camera.
  config.calibrate.stride = 0  # Every n-th frame; 0: spread max_frames over start..stop.
  config.calibrate.max_frames = 100  # Frames used when stride is 0 (error against the number of
  # frames measured in BUILD.md); BlazePose on every view of every frame is the cost.
  config.calibrate.person_height_mm = 0.0  # Stature of the people: sets the metric scale; 0: none.
  config.calibrate.camera_distance = ""  # "camA,camB,MM": a measured distance between two camera
  # centres, sets the scale (takes precedence over person_height_mm).
  config.calibrate.refine_focal = False  # Also adjust each camera's focal length in the bundle.
  config.calibrate.joint_set = "h36m17"  # Joints read out (h36m17 names the head and ankles).
  config.calibrate.min_score = 0.5  # Joint visibility below it is not a correspondence.
  config.calibrate.max_people = 0  # Keep the n most observed people; 0: all seen in >= 2 views.
  config.calibrate.association = "auto"  # tracks (consecutive frames) | frames (instants far
  # apart) | auto: tracks, then frames when a camera is left with no matched person.
  config.calibrate.name = "people"  # Rig name and file: <workdir>/calibrate/<name>.json.
  config.calibrate.reference = ""  # Calibration file to compare with: rotation, centre, MPJPE.
  config.calibrate.workers = 0  # BlazePose threads; 0: one per CPU core (as config.video).

  # --mode=batch (mf_tf/modes/batch.py): every session of a folder on Apache Beam, each with the
  # settings of config.video above (its session / videos / frames_dir / output_dir / workers aside).
  config.batch = ml_collections.ConfigDict()
  config.batch.sessions_root = ""  # Folder of session folders (<name>/videos/, calibration/).
  config.batch.output = ""  # Empty: <workdir>/batch; each session's outputs in <output>/<name>/.
  config.batch.workers = 0  # Sessions at once on the DirectRunner (one process each); 0: one per
  # CPU core (against the sessions one by one: benchmarks/beam_sessions.py, measured in BUILD.md).
  config.batch.threads = 0  # BlazePose threads per session; 0: the cores / workers (at least 1).
  config.batch.runner = "DirectRunner"  # Any Beam runner: DataflowRunner, FlinkRunner, ...
  config.batch.pipeline_options = ""  # More Beam options, "--project=p --region=r ..." (and
  # any given after `--` on the command line).


def _smoke(config):
  """`:smoke`: everything shrunk for quick local runs and CI."""
  config.heatmap_size = 32
  config.image_size = 128
  config.world.num_frames = 16
  config.world.shard_size = 8
  config.evaluate.num_frames = 8  # Smoke: a few frames and a coarse RPSM grid.
  config.evaluate.limb_frames = 50
  config.evaluate.coarse_bins = 10
  config.demo.heatmap_size = 16  # Smoke demo: tiny maps, a few steps, no export.
  config.demo.pretrain_frames = 24
  config.demo.maml.num_steps = 3
  config.demo.maml.tasks_per_step = 2
  config.demo.maml.support_size = 2
  config.demo.maml.query_size = 2
  config.demo.finetune_steps = 10
  config.demo.test_frames = 12
  config.demo.coarse_bins = 6
  config.demo.refine_iterations = 1
  config.demo.export = False
  config.demo.progress = False
  config.model.backbone = "mobilenetv2_035"  # Smoke: light backbone, few frames and steps.
  config.warmup.num_frames = 8
  config.warmup.epochs = 1
  config.precompute.num_frames = 24
  config.metatrain.num_steps = 3
  config.metatrain.inner_lr = 0.1  # The one-step alpha of 32 px (measured in BUILD.md).
  config.metatrain.support_size = 2
  config.metatrain.query_size = 2
  config.pretrain.epochs = 1
  config.finetune.shots = 10
  config.finetune.epochs = 2
