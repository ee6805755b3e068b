"""Multi-view heatmap fusion (MetaFuse paper Sec. 3-4.1).

  sampler     differentiable bilinear spatial-transformer sampler (pure TF, second order, XLA)
  warp_kernel the same warp as compiled C++ ops (kernels/affine_warp.cc, built on first use)
  ops         fusion matrices, paper Eq. 1, temperature softmax, fusion loss, top-k (pure)
  layers      Keras layers: AffineFusion, NaiveFusion, NoFusion, MaterializedFusion (thin)
  starts      the one constructor of fusion layers, by start (MetaFuse, AffineFuse, NaiveFuse,
              calibrated, self-calibrated and the residual variants)
  readout     2D joints and confidences of fused heatmaps
  settings    the fusion settings every stage shares
  calibrated  epipolar-line theta from a calibrated rig (MetaFuse^0)
  epipolar_plan    the line sampling plan of per-frame epipolar fusion
  epipolar_fusion  MetaFuse^0 for per-frame geometry (person crops) without dense matrices
"""
