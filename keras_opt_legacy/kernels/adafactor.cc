// Adafactor (keras_opt_legacy.rules.Adafactor: tensor2tensor's rule) in passes over the
// gradient, each reading every element once; the small arrays (the factored moments and their
// factors) and the scalars between the passes are computed in the graph. See keras_rules.cc for
// the conventions.
//
// A factored parameter [..., n, m] (moments vr [..., n], vc [..., m]), 24 bytes per float
// parameter where the formula graph moves several times that:
//   1. KolApplyAdafactorFactoredMoments: vr <- d*vr + (1-d)*mean(g^2 + 1e-30, rows),
//      vc <- d*vc + (1-d)*mean(g^2 + 1e-30, columns), and RMS(p) (reads g, p);
//   2. KolAdafactorFactoredRms: RMS(x), x = (g*r)*c with the factors r = rsqrt(vr/mean(vr)),
//      c = rsqrt(vc) the graph computes from the new moments (reads g; only with clipping);
//   3. KolApplyAdafactorFactored: p <- p - ((x/divisor)*scale) (with beta_1: m <- b1*m +
//      (1-b1)*((x/divisor)*scale), p <- p - m) (reads g, p, writes p).
// Otherwise (a full v):
//   1. KolApplyAdafactorMoments: v <- d*v + (1-d)*(g^2 + 1e-30), RMS(g*rsqrt(v)), RMS(p);
//   2. KolApplyAdafactor: p <- p - (((g*rsqrt(v))/divisor)*scale) (with beta_1 as above).
// The sums are in double (per row in T, float for half), cut in blocks of whole rows that do not
// depend on the threads, and added in block order: deterministic. The means are those sums
// divided by the count, where TF's Mean sums in float in its own order: equal to the formula
// graph to float rounding.
#include "kol_kernels.h"

namespace kol {

namespace {

using ::tensorflow::TensorShape;

// The type a row's sum is accumulated in: T, float for half.
template <typename T>
struct AccumulatorOf {
  typedef T type;
};
template <>
struct AccumulatorOf<Eigen::half> {
  typedef float type;
};

// The rule's g^2 + 1e-30, in T (as the formula: 0 in half).
template <typename T>
T Tiny() {
  return static_cast<T>(1e-30);
}

// sum(x) of the expression `x`, accumulated in A.
template <typename A, typename X>
A SumOf(const X& x) {
  A result;
  Eigen::TensorMap<Eigen::Tensor<A, 0, Eigen::RowMajor, Index>, Eigen::Unaligned> out(&result);
  out = x.template cast<A>().sum();
  return result;
}

// The rows of a [..., n, m] array: `matrices` of n rows of m. Blocks of whole rows of one matrix
// (about kBlockElements elements, at least a row): the blocks, not the threads, fix the order
// of the sums.
struct Rows {
  static constexpr int64 kBlockElements = 1 << 16;
  int64 matrices, n, m, rows_per_block, blocks_per_matrix;

  Rows(const TensorShape& shape)
      : matrices(1),
        n(shape.dim_size(shape.dims() - 2)),
        m(shape.dim_size(shape.dims() - 1)) {
    for (int k = 0; k < shape.dims() - 2; ++k) matrices *= shape.dim_size(k);
    rows_per_block = std::max<int64>(1, kBlockElements / std::max<int64>(1, m));
    blocks_per_matrix = (n + rows_per_block - 1) / rows_per_block;
  }
  int64 blocks() const { return matrices * blocks_per_matrix; }

  // f(block, matrix, first_row, end_row) for every block, over TF's CPU thread pool; the rows
  // are numbered within their matrix. Costs are per element.
  template <typename F>
  void ForBlocks(OpKernelContext* ctx, double bytes_loaded, double bytes_stored, double cycles,
                 const F& f) const {
    const double elements = static_cast<double>(rows_per_block * m);
    const Eigen::TensorOpCost cost(bytes_loaded * elements, bytes_stored * elements,
                                   cycles * elements);
    auto run = [this, &f](Index first, Index last) {
      for (Index k = first; k < last; ++k) {
        const int64 matrix = k / blocks_per_matrix;
        const int64 begin = (k % blocks_per_matrix) * rows_per_block;
        f(k, matrix, begin, std::min(n, begin + rows_per_block));
      }
    };
    if (blocks() <= 1) {
      run(0, blocks());
    } else {
      ctx->eigen_device<CPUDevice>().parallelFor(blocks(), cost, run);
    }
  }

  // The sum of f(block, matrix, first_row, end_row), a double per block, added in block order
  // whatever the threads did (deterministic).
  template <typename F>
  double SumBlocks(OpKernelContext* ctx, double bytes_loaded, double bytes_stored, double cycles,
                   const F& f) const {
    std::vector<double> sums(blocks(), 0.);
    ForBlocks(ctx, bytes_loaded, bytes_stored, cycles,
              [&](int64 k, int64 matrix, int64 begin, int64 end) {
                sums[k] = f(k, matrix, begin, end);
              });
    double total = 0.;
    for (double s : sums) total += s;
    return total;
  }
};

// The checks of a factored parameter's shape and of its row and column arrays.
Status CheckFactored(const TensorShape& shape, const TensorShape& rows,
                     const TensorShape& columns, const char* rows_name,
                     const char* columns_name) {
  if (shape.dims() < 2) {
    return errors::InvalidArgument("a factored parameter has 2 dimensions or more: ",
                                   shape.DebugString());
  }
  TensorShape expected_rows = shape, expected_columns = shape;
  expected_rows.RemoveDim(shape.dims() - 1);
  expected_columns.RemoveDim(shape.dims() - 2);
  if (!rows.IsSameSize(expected_rows)) {
    return errors::InvalidArgument(rows_name, " is ", rows.DebugString(), ", not ",
                                   expected_rows.DebugString(), " for a parameter ",
                                   shape.DebugString());
  }
  if (!columns.IsSameSize(expected_columns)) {
    return errors::InvalidArgument(columns_name, " is ", columns.DebugString(), ", not ",
                                   expected_columns.DebugString(), " for a parameter ",
                                   shape.DebugString());
  }
  return Status::OK();
}

// The step u applied: p <- p - u, or with momentum (`m` not null) m <- b1*m + u*(1-b1),
// p <- p - m.
template <typename T, typename U>
void Descend(Vec<T>* P, T* m, const U& u, T b1, T c1) {
  if (m != nullptr) {
    Vec<T> M(m, P->size());
    M = M * b1 + u * c1;
    *P = *P - M;
  } else {
    *P = *P - u;
  }
}

// sqrt(total / count) as T (an empty array: 0/0, NaN, as TF's mean).
template <typename T>
void SetRms(OpKernelContext* ctx, int output, double total, int64 count) {
  Tensor* out;
  OP_REQUIRES_OK(ctx, ctx->allocate_output(output, {}, &out));
  out->scalar<T>()() = static_cast<T>(std::sqrt(total / static_cast<double>(count)));
}

}  // namespace

// Pass 1 of a factored parameter: the moments of rows and columns in place, and RMS(p)
// (0 without `parameter_scale`: p is not read).
struct AdafactorFactoredMoments {
  static OpSpec Spec() {
    return {{"var", "vr", "vc"},
            {{"decay", 's'}, {"grad", 't'}},
            {"parameter_scale: bool = true"},
            {{"var_rms", 's'}},
            false,
            0x1,   // var is only read
            0x6};  // vr, vc: shaped [..., n] and [..., m]
  }
  explicit AdafactorFactoredMoments(OpKernelConstruction* c) {
    OP_REQUIRES_OK(c, c->GetAttr("parameter_scale", &parameter_scale));
  }
  bool parameter_scale = true;

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    typedef typename AccumulatorOf<T>::type A;
    OP_REQUIRES_OK(ctx, CheckFactored(a.shape[0], a.shape[1], a.shape[2], "vr", "vc"));
    const Rows rows(a.shape[0]);
    const int64 n = rows.n, m = rows.m;
    const T* p = a.var[0];
    T* vr = a.var[1];
    T* vc = a.var[2];
    const T d = a.s(0), rest = T(1) - d, tiny = Tiny<T>();
    const T* g = a.t(1);
    const bool scale = parameter_scale;
    std::vector<A> column_sums(rows.blocks() * m);  // each block's, then added in order
    const double p_total = rows.SumBlocks(
        ctx, (scale ? 2 : 1) * sizeof(T), 0, 8, [&](int64 k, int64 matrix, int64 begin, int64 end) {
          Vec<A> columns(column_sums.data() + k * m, m);
          columns.setZero();
          double p_sum = 0.;
          for (int64 i = begin; i < end; ++i) {
            const int64 row = matrix * n + i;
            ConstVec<T> G(g + row * m, m);
            columns += (G.square() + tiny).template cast<A>();
            const A mean = SumOf<A>(G.square() + tiny) / static_cast<A>(m);
            vr[row] = d * vr[row] + rest * static_cast<T>(mean);
            if (scale) p_sum += SumOfSquares<T>(ConstVec<T>(p + row * m, m));
          }
          return p_sum;
        });
    std::vector<A> totals(m);
    Vec<A> total(totals.data(), m);
    for (int64 matrix = 0; matrix < rows.matrices; ++matrix) {
      total.setZero();
      for (int64 b = 0; b < rows.blocks_per_matrix; ++b)
        total += Vec<A>(column_sums.data() + (matrix * rows.blocks_per_matrix + b) * m, m);
      Vec<T> C(vc + matrix * m, m);
      C = C * d + (total / static_cast<A>(n)).template cast<T>() * rest;
    }
    SetRms<T>(ctx, 0, scale ? p_total : 0., a.n);
  }
};
KOL_REGISTER(AdafactorFactoredMoments)

// Pass 2 of a factored parameter: RMS((g*r)*c), r [..., n] and c [..., m] the factors.
template <typename T>
class FactoredRmsOp : public OpKernel {
 public:
  explicit FactoredRmsOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& r = ctx->input(1);
    const Tensor& c = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckFactored(grad.shape(), r.shape(), c.shape(), "row_factor",
                                      "col_factor"));
    const Rows rows(grad.shape());
    const int64 n = rows.n, m = rows.m;
    const T* g = grad.flat<T>().data();
    const T* rp = r.flat<T>().data();
    const T* cp = c.flat<T>().data();
    const double total =
        rows.SumBlocks(ctx, sizeof(T), 0, 6, [&](int64, int64 matrix, int64 begin, int64 end) {
          ConstVec<T> C(cp + matrix * m, m);
          double sum = 0.;
          for (int64 i = begin; i < end; ++i) {
            const int64 row = matrix * n + i;
            sum += SumOfSquares<T>((ConstVec<T>(g + row * m, m) * rp[row]) * C);
          }
          return sum;
        });
    SetRms<T>(ctx, 0, total, grad.NumElements());
  }
};

REGISTER_OP("KolAdafactorFactoredRms")
    .Input("grad: T")
    .Input("row_factor: T")
    .Input("col_factor: T")
    .Output("x_rms: T")
    .Attr("T: {half, float, double}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return Status::OK();
    });

KOL_REGISTER_COMPUTE(KolAdafactorFactoredRms, FactoredRmsOp)

// Pass 3 of a factored parameter: the step u = (((g*r)*c)/divisor)*scale; p <- p - u, or with
// momentum m <- b1*m + u*(1-b1), p <- p - m. (The formula's `1. - beta_1` is a constant rounded
// from a Python float: an input.)
template <bool momentum>
struct FactoredStep : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    std::vector<Input> inputs = {{"row_factor", 'a'}, {"col_factor", 'a'}, {"scale", 's'},
                                 {"divisor", 's'}};
    if (momentum) inputs.insert(inputs.end(), {{"beta_1", 's'}, {"one_minus_beta_1", 's'}});
    inputs.push_back({"grad", 't'});
    return {momentum ? std::vector<const char*>{"var", "m"} : std::vector<const char*>{"var"},
            inputs, {}, {}, true};
  }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    const Tensor& r = *a.in[0];
    const Tensor& c = *a.in[1];
    OP_REQUIRES_OK(ctx, CheckFactored(a.shape[0], r.shape(), c.shape(), "row_factor",
                                      "col_factor"));
    const Rows rows(a.shape[0]);
    const int64 n = rows.n, m = rows.m;
    T* p = a.var[0];
    T* mom = momentum ? a.var[1] : nullptr;
    const T* rp = a.t(0);
    const T* cp = a.t(1);
    const T scale = a.s(2), divisor = a.s(3);
    const T b1 = momentum ? a.s(4) : T(0), c1 = momentum ? a.s(5) : T(0);
    const T* g = a.t(momentum ? 6 : 4);
    rows.ForBlocks(ctx, (momentum ? 3 : 2) * sizeof(T), (momentum ? 2 : 1) * sizeof(T), 6,
                   [&](int64, int64 matrix, int64 begin, int64 end) {
                     ConstVec<T> C(cp + matrix * m, m);
                     for (int64 i = begin; i < end; ++i) {
                       const int64 row = matrix * n + i;
                       Vec<T> P(p + row * m, m);
                       ConstVec<T> G(g + row * m, m);
                       Descend(&P, momentum ? mom + row * m : nullptr,
                               (((G * rp[row]) * C) / divisor) * scale, b1, c1);
                     }
                   });
  }
};
using AdafactorFactored = FactoredStep<false>;
using AdafactorFactoredMomentum = FactoredStep<true>;
KOL_REGISTER(AdafactorFactored)
KOL_REGISTER(AdafactorFactoredMomentum)

// Pass 1 of a parameter with a full v: v <- d*v + (1-d)*(g^2 + 1e-30) in place; RMS(g*rsqrt(v))
// and RMS(p) (0 without `parameter_scale`: p is not read).
struct AdafactorMoments {
  static OpSpec Spec() {
    return {{"var", "v"},
            {{"decay", 's'}, {"grad", 't'}},
            {"parameter_scale: bool = true"},
            {{"x_rms", 's'}, {"var_rms", 's'}},
            false,
            0x1};  // var is only read
  }
  explicit AdafactorMoments(OpKernelConstruction* c) {
    OP_REQUIRES_OK(c, c->GetAttr("parameter_scale", &parameter_scale));
  }
  bool parameter_scale = true;

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    const T* p = a.var[0];
    T* v = a.var[1];
    const T d = a.s(0), rest = T(1) - d, tiny = Tiny<T>();
    const T* g = a.t(1);
    const bool scale = parameter_scale;
    double totals[2];
    ReduceChunks<T>(ctx, a.n, (scale ? 3 : 2) * sizeof(T), sizeof(T), 12, 2,
                    [=](int64 b, int64 e, double* sums) {
                      Vec<T> V(v + b, e - b);
                      ConstVec<T> G(g + b, e - b);
                      V = V * d + (G.square() + tiny) * rest;
                      sums[0] = SumOfSquares<T>(G * V.rsqrt());
                      sums[1] = scale ? SumOfSquares<T>(ConstVec<T>(p + b, e - b)) : 0.;
                    },
                    totals);
    SetRms<T>(ctx, 0, totals[0], a.n);
    SetRms<T>(ctx, 1, totals[1], a.n);
  }
};
KOL_REGISTER(AdafactorMoments)

// Pass 2 of a parameter with a full v: u = ((g*rsqrt(v))/divisor)*scale; p <- p - u, or with
// momentum m <- b1*m + u*(1-b1), p <- p - m. v is only read.
template <bool momentum>
struct FullStep : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    std::vector<Input> inputs = {{"scale", 's'}, {"divisor", 's'}};
    if (momentum) inputs.insert(inputs.end(), {{"beta_1", 's'}, {"one_minus_beta_1", 's'}});
    inputs.push_back({"grad", 't'});
    return {momentum ? std::vector<const char*>{"var", "m", "v"}
                     : std::vector<const char*>{"var", "v"},
            inputs, {}, {}, true, momentum ? 0x4u : 0x2u};  // v is only read
  }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* p = a.var[0];
    T* mom = momentum ? a.var[1] : nullptr;
    const T* v = a.var[momentum ? 2 : 1];
    const T scale = a.s(0), divisor = a.s(1);
    const T b1 = momentum ? a.s(2) : T(0), c1 = momentum ? a.s(3) : T(0);
    const T* g = a.t(momentum ? 4 : 2);
    ForChunks<T>(ctx, a.n, (momentum ? 4 : 3) * sizeof(T), (momentum ? 2 : 1) * sizeof(T), 12,
                 [=](int64 b, int64 e) {
                   Vec<T> P(p + b, e - b);
                   ConstVec<T> G(g + b, e - b), V(v + b, e - b);
                   Descend(&P, momentum ? mom + b : nullptr,
                           ((G * V.rsqrt()) / divisor) * scale, b1, c1);
                 });
  }
};
using Adafactor = FullStep<false>;
using AdafactorMomentum = FullStep<true>;
KOL_REGISTER(Adafactor)
KOL_REGISTER(AdafactorMomentum)

}  // namespace kol
