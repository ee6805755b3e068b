// CPU kernels of MetaFuse's affine warp (paper Eq. 2) and its first two derivatives.
//
// The same math as mf_tf/fusion/sampler.py's `warp_base` (the reference; see its docstring for
// the conventions): for base b = (B == 1 ? 0 : p), target row i and source pixel j = (r, c),
//
//   sx = ((t0 gx[c] + t1 gy[r]) + t2 + 1) (W - 1) / 2,   sy = ((t3 gx[c] + t4 gy[r]) + t5 + 1) (H - 1) / 2
//   warped[p, i, j] = c0 + fx c1 + fy (c2 + fx c3)
//
// with (gx, gy) the align_corners normalized grid, x0 = floor(sx), fx = sx - x0 (likewise y),
// and c0..c3 the bilinear coefficients of the 2x2 patch of the zero-padded base whose top-left
// corner is (y0, x0): c0 = p00, c1 = p01 - p00, c2 = p10 - p00, c3 = p11 - p10 - p01 + p00.
// Patches entirely outside the base have zero coefficients (so a non-finite coordinate gives
// NaN through fx, as in the reference).
//
//   MfAffineWarp          (base [B, H, W], theta [P, N, 6])            -> warped [P, N, HW]
//   MfAffineWarpGrad      (base, theta, grad [P, N, HW])               -> (d base, d theta)
//   MfAffineWarpGradGrad  (base, theta, grad, up_base, up_theta)       -> (d grad, d base, d theta)
//
// MfAffineWarpGrad is the vector-Jacobian product of MfAffineWarp; MfAffineWarpGradGrad is that
// of MfAffineWarpGrad for cotangents (up_base, up_theta) of its two outputs. With the tangent
// (tx, ty) = ((W-1)/2 (u0 gx + u1 gy + u2), (H-1)/2 (u3 gx + u4 gy + u5)) of the coordinates
// along up_theta:
//
//   d grad[p, i, j] = bilinear(up_base, s) + vx tx + vy ty         (vx = c1 + fy c3, vy = c2 + fx c3)
//   d base          = scatter of grad (tx dv_x + ty dv_y) / d coefficients
//   d theta         = sum_j grad (grad_s bilinear(up_base, s) + (c3 ty, c3 tx)) ds/dtheta
//
// (the bilinear polynomial's Hessian in s is [[0, c3], [c3, 0]]). Rows (p, i) run in parallel on
// TensorFlow's CPU worker threads; the base gradients are summed in fixed blocks of rows, each
// with its own accumulator, added in block order, so results are deterministic.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/threadpool.h"

namespace mf_tf {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::register_kernel::Name;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Shapes: base [B, H, W], theta [P, N, 6], per-row tensors [P, N, HW]. Returns false (with the
// context's status set) when they do not fit together.
struct Dims {
  int64_t bases, maps, rows, height, width, pixels;
};

// Sets an InvalidArgument status on the context and returns false when `ok` is false.
bool Require(OpKernelContext* context, bool ok, const std::string& message) {
  if (!ok) context->SetStatus(absl::InvalidArgumentError(message));
  return ok;
}

bool CheckInputs(OpKernelContext* context, const Tensor& base, const Tensor& theta, Dims* dims) {
  if (!Require(context, base.dims() == 3,
               absl::StrCat("base must be [B, H, W], got shape ", base.shape().DebugString())) ||
      !Require(context, theta.dims() == 3 && theta.dim_size(2) == 6,
               absl::StrCat("theta must be [P, N, 6], got shape ",
                            theta.shape().DebugString()))) {
    return false;
  }
  dims->bases = base.dim_size(0);
  dims->maps = theta.dim_size(0);
  dims->rows = theta.dim_size(1);
  dims->height = base.dim_size(1);
  dims->width = base.dim_size(2);
  dims->pixels = dims->height * dims->width;
  return Require(context, dims->bases == 1 || dims->bases == dims->maps,
                 absl::StrCat("base's leading dimension must be 1 or theta's (", dims->maps,
                              "), got ", dims->bases)) &&
         Require(context, dims->height >= 1 && dims->width >= 1,
                 absl::StrCat("base must have at least one pixel, got shape ",
                              base.shape().DebugString()));
}

bool CheckPerRow(OpKernelContext* context, const Tensor& tensor, const Dims& dims,
                 const char* name) {
  return Require(context,
                 tensor.dims() == 3 && tensor.dim_size(0) == dims.maps &&
                     tensor.dim_size(1) == dims.rows && tensor.dim_size(2) == dims.pixels,
                 absl::StrCat(name, " must be [", dims.maps, ", ", dims.rows, ", ", dims.pixels,
                              "], got shape ", tensor.shape().DebugString()));
}

// Padding of the base on each side in the coefficient table: a floor index clamped into
// [-2, W] addresses either its true 2x2 neighbourhood or an all-zero patch (as the reference).
constexpr int64_t kPad = 2;

// The bilinear coefficients of every 2x2 patch of the zero-padded base: patch (a, b),
// a in [0, H + 2], b in [0, W + 2], has top-left corner (a - 2, b - 2) of the base.
template <typename T>
std::vector<T> CoefficientTable(const T* base, const Dims& dims) {
  const int64_t rows = dims.height + 2 * kPad - 1, cols = dims.width + 2 * kPad - 1;
  std::vector<T> table(dims.bases * rows * cols * 4);
  for (int64_t b = 0; b < dims.bases; ++b) {
    const T* map = base + b * dims.pixels;
    auto at = [&](int64_t y, int64_t x) -> T {
      return (y < 0 || y >= dims.height || x < 0 || x >= dims.width) ? T(0)
                                                                       : map[y * dims.width + x];
    };
    T* out = table.data() + b * rows * cols * 4;
    for (int64_t a = 0; a < rows; ++a) {
      for (int64_t c = 0; c < cols; ++c) {
        const T p00 = at(a - kPad, c - kPad), p01 = at(a - kPad, c - kPad + 1);
        const T p10 = at(a - kPad + 1, c - kPad), p11 = at(a - kPad + 1, c - kPad + 1);
        T* entry = out + (a * cols + c) * 4;
        entry[0] = p00;
        entry[1] = p01 - p00;
        entry[2] = p10 - p00;
        entry[3] = (p11 - p10) - (p01 - p00);
      }
    }
  }
  return table;
}

int64_t TableSize(const Dims& dims) {
  return (dims.height + 2 * kPad - 1) * (dims.width + 2 * kPad - 1) * 4;
}

// Corner gradients of a coefficient-gradient table, added to d_base [B, H, W] (patches of the
// padding, which also collect every clamped out-of-range sample, have no corner in the base).
template <typename T>
void AddCoefficientGradients(const std::vector<double>& coefficient_grads, const Dims& dims,
                             T* d_base) {
  const int64_t rows = dims.height + 2 * kPad - 1, cols = dims.width + 2 * kPad - 1;
  for (int64_t b = 0; b < dims.bases; ++b) {
    const double* table = coefficient_grads.data() + b * rows * cols * 4;
    T* out = d_base + b * dims.pixels;
    auto add = [&](int64_t y, int64_t x, double value) {
      if (y >= 0 && y < dims.height && x >= 0 && x < dims.width) {
        out[y * dims.width + x] += static_cast<T>(value);
      }
    };
    for (int64_t a = 0; a < rows; ++a) {
      for (int64_t c = 0; c < cols; ++c) {
        const double* g = table + (a * cols + c) * 4;
        const int64_t y = a - kPad, x = c - kPad;
        if (y + 1 < 0 || y >= dims.height || x + 1 < 0 || x >= dims.width) continue;
        add(y, x, g[0] - g[1] - g[2] + g[3]);
        add(y, x + 1, g[1] - g[3]);
        add(y + 1, x, g[2] - g[3]);
        add(y + 1, x + 1, g[3]);
      }
    }
  }
}

// The normalized grid and the pixel scale.
template <typename T>
struct Grid {
  explicit Grid(const Dims& dims)
      : gx(dims.width), gy(dims.height), half_w(T(0.5) * T(dims.width - 1)),
        half_h(T(0.5) * T(dims.height - 1)), width(dims.width), height(dims.height),
        cols(dims.width + 2 * kPad - 1) {
    // As `sampler.normalized_grid`: float64 linspace, then cast.
    for (int64_t c = 0; c < dims.width; ++c) {
      gx[c] = dims.width > 1 ? static_cast<T>(-1.0 + 2.0 * c / double(dims.width - 1)) : T(0);
    }
    for (int64_t r = 0; r < dims.height; ++r) {
      gy[r] = dims.height > 1 ? static_cast<T>(-1.0 + 2.0 * r / double(dims.height - 1)) : T(0);
    }
  }
  std::vector<T> gx, gy;
  T half_w, half_h;
  int64_t width, height, cols;
};

// Floor of a coordinate clamped into [-2, size]: NaN clamps to -2 (comparisons fail). Written
// without branches or libm so that the loops over a row vectorize.
template <typename T>
inline int32_t ClampedFloor(T coordinate, int64_t size) {
  T clamped = coordinate > T(-kPad) ? coordinate : T(-kPad);
  clamped = clamped < T(size) ? clamped : T(size);
  const int32_t truncated = static_cast<int32_t>(clamped);
  return truncated - (static_cast<T>(truncated) > clamped ? 1 : 0);
}

// One source row r of one target row: sample offsets and table indices for its W pixels.
//   sx = ((t0 gx + t1 gy) + t2 + 1) (W - 1) / 2, likewise sy; fx = sx - floor (zero
//   coefficients beyond the clamp make an out-of-range offset harmless, or NaN when non-finite).
template <typename T>
inline void LocateRow(const Grid<T>& grid, const T* t, T gy, T* fx, T* fy, int32_t* index,
                      const T* tangent, T* tx, T* ty) {
  const T* gx = grid.gx.data();
  const int64_t width = grid.width;
  const T ax = t[1] * gy, ay = t[4] * gy;
  const int32_t cols = static_cast<int32_t>(grid.cols);
  for (int64_t c = 0; c < width; ++c) {
    const T sx = ((t[0] * gx[c] + ax) + t[2] + T(1)) * grid.half_w;
    const T sy = ((t[3] * gx[c] + ay) + t[5] + T(1)) * grid.half_h;
    const int32_t x0 = ClampedFloor(sx, grid.width), y0 = ClampedFloor(sy, grid.height);
    fx[c] = sx - static_cast<T>(x0);
    fy[c] = sy - static_cast<T>(y0);
    index[c] = ((y0 + static_cast<int32_t>(kPad)) * cols + x0 + static_cast<int32_t>(kPad)) * 4;
  }
  if (tangent != nullptr) {
    const T bx = tangent[1] * gy, by = tangent[4] * gy;
    for (int64_t c = 0; c < width; ++c) {
      tx[c] = ((tangent[0] * gx[c] + bx) + tangent[2]) * grid.half_w;
      ty[c] = ((tangent[3] * gx[c] + by) + tangent[5]) * grid.half_h;
    }
  }
}

// d theta of one row from its sums sum_j h_x (gx, gy, 1) and sum_j h_y (gx, gy, 1).
template <typename T>
inline void WriteThetaGradient(const Grid<T>& grid, double sx_x, double sx_y, double sx_1,
                               double sy_x, double sy_y, double sy_1, T* dt) {
  dt[0] = static_cast<T>(grid.half_w * sx_x);
  dt[1] = static_cast<T>(grid.half_w * sx_y);
  dt[2] = static_cast<T>(grid.half_w * sx_1);
  dt[3] = static_cast<T>(grid.half_h * sy_x);
  dt[4] = static_cast<T>(grid.half_h * sy_y);
  dt[5] = static_cast<T>(grid.half_h * sy_1);
}

// Runs fn(begin_row, end_row, block) over `blocks` fixed blocks of the P * N rows in parallel.
template <typename Fn>
void ForBlocks(OpKernelContext* context, int64_t total_rows, int64_t blocks, const Fn& fn) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
  const int64_t per_block = (total_rows + blocks - 1) / std::max<int64_t>(blocks, 1);
  // A huge cost per unit: every block is its own task.
  workers->ParallelFor(blocks, int64_t{1} << 40, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      const int64_t begin = block * per_block;
      const int64_t end = std::min(total_rows, begin + per_block);
      if (begin < end) fn(begin, end, block);
    }
  });
}

int64_t NumBlocks(OpKernelContext* context, int64_t total_rows) {
  const int64_t threads =
      context->device()->tensorflow_cpu_worker_threads()->workers->NumThreads();
  return std::max<int64_t>(1, std::min<int64_t>(total_rows, 2 * std::max<int64_t>(threads, 1)));
}

// Sums the blocks' coefficient gradients in block order (deterministic) into d_base.
template <typename T>
void ReduceBlocks(const std::vector<std::vector<double>>& block_grads, const Dims& dims,
                  T* d_base) {
  std::vector<double> summed(dims.bases * TableSize(dims), 0.0);
  for (const std::vector<double>& partial : block_grads) {
    for (size_t index = 0; index < partial.size(); ++index) summed[index] += partial[index];
  }
  AddCoefficientGradients(summed, dims, d_base);
}

template <typename T>
class AffineWarpOp : public OpKernel {
 public:
  explicit AffineWarpOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& base = context->input(0);
    const Tensor& theta = context->input(1);
    Dims dims;
    if (!CheckInputs(context, base, theta, &dims)) return;
    Tensor* warped = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({dims.maps, dims.rows, dims.pixels}), &warped));
    const int64_t total = dims.maps * dims.rows;
    if (total == 0) return;
    const std::vector<T> table = CoefficientTable(base.flat<T>().data(), dims);
    const Grid<T> grid(dims);
    const T* theta_data = theta.flat<T>().data();
    T* out = warped->flat<T>().data();
    const int64_t table_size = TableSize(dims);
    auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
    workers->ParallelFor(total, dims.pixels * 8, [&](int64_t begin, int64_t end) {
      std::vector<T> fx(dims.width), fy(dims.width);
      std::vector<int32_t> index(dims.width);
      for (int64_t row = begin; row < end; ++row) {
        const T* tab = table.data() + (dims.bases == 1 ? 0 : row / dims.rows) * table_size;
        const T* t = theta_data + row * 6;
        for (int64_t r = 0; r < dims.height; ++r) {
          LocateRow(grid, t, grid.gy[r], fx.data(), fy.data(), index.data(),
                    static_cast<const T*>(nullptr), static_cast<T*>(nullptr),
                    static_cast<T*>(nullptr));
          T* o = out + row * dims.pixels + r * dims.width;
          for (int64_t c = 0; c < dims.width; ++c) {
            const T* k = tab + index[c];
            o[c] = k[0] + fx[c] * k[1] + fy[c] * (k[2] + fx[c] * k[3]);
          }
        }
      }
    });
  }
};

template <typename T>
class AffineWarpGradOp : public OpKernel {
 public:
  explicit AffineWarpGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& base = context->input(0);
    const Tensor& theta = context->input(1);
    const Tensor& grad = context->input(2);
    Dims dims;
    if (!CheckInputs(context, base, theta, &dims)) return;
    if (!CheckPerRow(context, grad, dims, "grad")) return;
    Tensor* d_base = nullptr;
    Tensor* d_theta = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, base.shape(), &d_base));
    OP_REQUIRES_OK(context, context->allocate_output(1, theta.shape(), &d_theta));
    T* d_base_data = d_base->flat<T>().data();
    std::fill(d_base_data, d_base_data + d_base->NumElements(), T(0));
    const int64_t total = dims.maps * dims.rows;
    if (total == 0) return;

    const std::vector<T> table = CoefficientTable(base.flat<T>().data(), dims);
    const Grid<T> grid(dims);
    const T* theta_data = theta.flat<T>().data();
    const T* grad_data = grad.flat<T>().data();
    T* d_theta_data = d_theta->flat<T>().data();
    const int64_t table_size = TableSize(dims);
    const int64_t blocks = NumBlocks(context, total);
    std::vector<std::vector<double>> block_grads(blocks);

    ForBlocks(context, total, blocks, [&](int64_t begin, int64_t end, int64_t block) {
      std::vector<double>& coefficient_grads = block_grads[block];
      coefficient_grads.assign(dims.bases * table_size, 0.0);
      std::vector<T> fx(dims.width), fy(dims.width);
      std::vector<int32_t> index(dims.width);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = dims.bases == 1 ? 0 : row / dims.rows;
        const T* tab = table.data() + b * table_size;
        double* acc = coefficient_grads.data() + b * table_size;
        const T* t = theta_data + row * 6;
        // sum_j g v_x (gx, gy, 1) and sum_j g v_y (gx, gy, 1).
        double sx_x = 0, sx_y = 0, sx_1 = 0, sy_x = 0, sy_y = 0, sy_1 = 0;
        for (int64_t r = 0; r < dims.height; ++r) {
          const T gy = grid.gy[r];
          const T* g = grad_data + row * dims.pixels + r * dims.width;
          LocateRow(grid, t, gy, fx.data(), fy.data(), index.data(),
                    static_cast<const T*>(nullptr), static_cast<T*>(nullptr),
                    static_cast<T*>(nullptr));
          T rx_x = 0, rx_1 = 0, ry_x = 0, ry_1 = 0;
          for (int64_t c = 0; c < dims.width; ++c) {
            const T* k = tab + index[c];
            const T vx = g[c] * (k[1] + fy[c] * k[3]);
            const T vy = g[c] * (k[2] + fx[c] * k[3]);
            rx_x += vx * grid.gx[c];
            rx_1 += vx;
            ry_x += vy * grid.gx[c];
            ry_1 += vy;
          }
          for (int64_t c = 0; c < dims.width; ++c) {
            double* a = acc + index[c];
            const double gc = g[c], gfx = gc * fx[c];
            a[0] += gc;
            a[1] += gfx;
            a[2] += gc * fy[c];
            a[3] += gfx * fy[c];
          }
          sx_x += rx_x;
          sx_y += double(rx_1) * gy;
          sx_1 += rx_1;
          sy_x += ry_x;
          sy_y += double(ry_1) * gy;
          sy_1 += ry_1;
        }
        WriteThetaGradient(grid, sx_x, sx_y, sx_1, sy_x, sy_y, sy_1, d_theta_data + row * 6);
      }
    });
    ReduceBlocks(block_grads, dims, d_base_data);
  }
};

template <typename T>
class AffineWarpGradGradOp : public OpKernel {
 public:
  explicit AffineWarpGradGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& base = context->input(0);
    const Tensor& theta = context->input(1);
    const Tensor& grad = context->input(2);
    const Tensor& up_base = context->input(3);
    const Tensor& up_theta = context->input(4);
    Dims dims;
    if (!CheckInputs(context, base, theta, &dims)) return;
    if (!CheckPerRow(context, grad, dims, "grad")) return;
    OP_REQUIRES(context, up_base.shape() == base.shape(),
                absl::InvalidArgumentError(absl::StrCat(
                    "up_base must be shaped like base ", base.shape().DebugString(), ", got ",
                    up_base.shape().DebugString())));
    OP_REQUIRES(context, up_theta.shape() == theta.shape(),
                absl::InvalidArgumentError(absl::StrCat(
                    "up_theta must be shaped like theta ", theta.shape().DebugString(), ", got ",
                    up_theta.shape().DebugString())));
    Tensor* d_grad = nullptr;
    Tensor* d_base = nullptr;
    Tensor* d_theta = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, grad.shape(), &d_grad));
    OP_REQUIRES_OK(context, context->allocate_output(1, base.shape(), &d_base));
    OP_REQUIRES_OK(context, context->allocate_output(2, theta.shape(), &d_theta));
    T* d_base_data = d_base->flat<T>().data();
    std::fill(d_base_data, d_base_data + d_base->NumElements(), T(0));
    const int64_t total = dims.maps * dims.rows;
    if (total == 0) return;

    const std::vector<T> table = CoefficientTable(base.flat<T>().data(), dims);
    const std::vector<T> up_table = CoefficientTable(up_base.flat<T>().data(), dims);
    const Grid<T> grid(dims);
    const T* theta_data = theta.flat<T>().data();
    const T* up_theta_data = up_theta.flat<T>().data();
    const T* grad_data = grad.flat<T>().data();
    T* d_grad_data = d_grad->flat<T>().data();
    T* d_theta_data = d_theta->flat<T>().data();
    const int64_t table_size = TableSize(dims);
    const int64_t blocks = NumBlocks(context, total);
    std::vector<std::vector<double>> block_grads(blocks);

    ForBlocks(context, total, blocks, [&](int64_t begin, int64_t end, int64_t block) {
      std::vector<double>& coefficient_grads = block_grads[block];
      coefficient_grads.assign(dims.bases * table_size, 0.0);
      std::vector<T> fx(dims.width), fy(dims.width), tx(dims.width), ty(dims.width);
      std::vector<int32_t> index(dims.width);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = dims.bases == 1 ? 0 : row / dims.rows;
        const T* tab = table.data() + b * table_size;
        const T* up_tab = up_table.data() + b * table_size;
        double* acc = coefficient_grads.data() + b * table_size;
        const T* t = theta_data + row * 6;
        const T* u = up_theta_data + row * 6;
        double sx_x = 0, sx_y = 0, sx_1 = 0, sy_x = 0, sy_y = 0, sy_1 = 0;
        for (int64_t r = 0; r < dims.height; ++r) {
          const T gy = grid.gy[r];
          const T* g = grad_data + row * dims.pixels + r * dims.width;
          T* dg = d_grad_data + row * dims.pixels + r * dims.width;
          LocateRow(grid, t, gy, fx.data(), fy.data(), index.data(), u, tx.data(), ty.data());
          T rx_x = 0, rx_1 = 0, ry_x = 0, ry_1 = 0;
          for (int64_t c = 0; c < dims.width; ++c) {
            const T* k = tab + index[c];
            const T* q = up_tab + index[c];
            const T vx = k[1] + fy[c] * k[3];
            const T vy = k[2] + fx[c] * k[3];
            dg[c] = (q[0] + fx[c] * q[1] + fy[c] * (q[2] + fx[c] * q[3])) + vx * tx[c] +
                    vy * ty[c];
            const T hx = g[c] * ((q[1] + fy[c] * q[3]) + k[3] * ty[c]);
            const T hy = g[c] * ((q[2] + fx[c] * q[3]) + k[3] * tx[c]);
            rx_x += hx * grid.gx[c];
            rx_1 += hx;
            ry_x += hy * grid.gx[c];
            ry_1 += hy;
          }
          for (int64_t c = 0; c < dims.width; ++c) {
            double* a = acc + index[c];
            const double gc = g[c];
            a[1] += gc * tx[c];
            a[2] += gc * ty[c];
            a[3] += gc * (double(tx[c]) * fy[c] + double(ty[c]) * fx[c]);
          }
          sx_x += rx_x;
          sx_y += double(rx_1) * gy;
          sx_1 += rx_1;
          sy_x += ry_x;
          sy_y += double(ry_1) * gy;
          sy_1 += ry_1;
        }
        WriteThetaGradient(grid, sx_x, sx_y, sx_1, sy_x, sy_y, sy_1, d_theta_data + row * 6);
      }
    });
    ReduceBlocks(block_grads, dims, d_base_data);
  }
};

Status PerRowShape(InferenceContext* c, ShapeHandle base, ShapeHandle theta, ShapeHandle* out) {
  DimensionHandle pixels;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(base, 1), c->Dim(base, 2), &pixels));
  *out = c->MakeShape({c->Dim(theta, 0), c->Dim(theta, 1), pixels});
  return Status();
}

}  // namespace

REGISTER_OP("MfAffineWarp")
    .Attr("T: {float, double}")
    .Input("base: T")
    .Input("theta: T")
    .Output("warped: T")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle base, theta, out;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &base));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &theta));
      TF_RETURN_IF_ERROR(PerRowShape(c, base, theta, &out));
      c->set_output(0, out);
      return Status();
    })
    .Doc("Warps base [B, H, W] by per-row affines theta [P, N, 6]: [P, N, H * W].");

REGISTER_OP("MfAffineWarpGrad")
    .Attr("T: {float, double}")
    .Input("base: T")
    .Input("theta: T")
    .Input("grad: T")
    .Output("grad_base: T")
    .Output("grad_theta: T")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      return Status();
    })
    .Doc("Vector-Jacobian product of MfAffineWarp.");

REGISTER_OP("MfAffineWarpGradGrad")
    .Attr("T: {float, double}")
    .Input("base: T")
    .Input("theta: T")
    .Input("grad: T")
    .Input("up_base: T")
    .Input("up_theta: T")
    .Output("grad_grad: T")
    .Output("grad_base: T")
    .Output("grad_theta: T")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(2));
      c->set_output(1, c->input(0));
      c->set_output(2, c->input(1));
      return Status();
    })
    .Doc("Vector-Jacobian product of MfAffineWarpGrad.");

#define MF_TF_REGISTER(T)                                                                  \
  REGISTER_KERNEL_BUILDER(Name("MfAffineWarp").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          AffineWarpOp<T>);                                                \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("MfAffineWarpGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),                  \
      AffineWarpGradOp<T>);                                                                \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("MfAffineWarpGradGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),              \
      AffineWarpGradGradOp<T>);

MF_TF_REGISTER(float);
MF_TF_REGISTER(double);

#undef MF_TF_REGISTER

}  // namespace mf_tf
