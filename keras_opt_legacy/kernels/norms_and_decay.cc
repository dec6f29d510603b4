// Lion; the two passes of LAMB and LARS's fused momentum step (with KolNorms, the norms in one
// pass); the in-place steps of weight averaging and decoupled weight decay (EMA, decay, and
// decay fused with Adam's step). See keras_rules.cc for the conventions.
#include "kol_kernels.h"

namespace kol {

// Lion: c = b1*m + (1-b1)*g; p <- p - lr*(sign(c) [+ wd*p when wd > 0]);
// m <- b2*m + (1-b2)*g (from the old m). The complements 1-b1, 1-b2 are inputs: Lion's betas
// are Python floats, and its formula's `1. - beta` a constant rounded from double.
struct Lion : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var", "m"},
            {{"lr", 's'},
             {"beta_1", 's'},
             {"one_minus_beta_1", 's'},
             {"beta_2", 's'},
             {"one_minus_beta_2", 's'},
             {"weight_decay", 's'},
             {"grad", 't'}},
            {},
            {},
            true};
  }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* p = a.var[0];
    T* m = a.var[1];
    const T lr = a.s(0), b1 = a.s(1), c1 = a.s(2), b2 = a.s(3), c2 = a.s(4), wd = a.s(5);
    const T* g = a.t(6);
    const bool decays = wd > T(0);
    ForChunks<T>(ctx, a.n, 3 * sizeof(T), 2 * sizeof(T), 16, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), M(m + b, e - b);
      ConstVec<T> G(g + b, e - b);
      if (decays) {
        P = P - (Sign(M * b1 + G * c1) + P * wd) * lr;
      } else {
        P = P - Sign(M * b1 + G * c1) * lr;
      }
      M = M * b2 + G * c2;
    });
  }
};
KOL_REGISTER(Lion)

// LAMB, pass 1 of 2: m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2 (written);
// r = (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) [+ wd*p when wd > 0], the formula's r, as the
// output `update`; and the norms ||p||, ||r|| (sums of squares in double, chunk by chunk in a
// fixed order: deterministic). `var` is only read. The graph computes the trust ratio from
// the norms for pass 2, KolApplyLambUpdate. (Equal to the formula graph to float rounding:
// the formula's norms are TF's float sums, in another order.)
// `update` goes into the gradient's buffer when TF can forward it, else into a scratch
// buffer this kernel keeps and reuses step after step (a fresh one only while something still
// holds the last one): a new tensor of the parameter's size every step would cost page faults
// (the allocator hands large blocks back to the OS). So LAMB holds one more array per
// parameter (as the formula graph's temporaries do while it runs).
struct LambMoments : NoAttrs {
  using NoAttrs::NoAttrs;
  ::tensorflow::mutex mu;
  ::tensorflow::PersistentTensor scratch;  // GUARDED_BY(mu)

  static OpSpec Spec() {
    return {{"var", "m", "v"},
            {{"beta_1_power", 's'},
             {"beta_2_power", 's'},
             {"beta_1", 's'},
             {"beta_2", 's'},
             {"epsilon", 's'},
             {"weight_decay", 's'},
             {"grad", 't'}},
            {},
            {{"w_norm", 's'}, {"r_norm", 's'}, {"update", 't'}},
            false,
            0x1};  // var is only read
  }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) {
    const T* p = a.var[0];
    T* m = a.var[1];
    T* v = a.var[2];
    const T b1 = a.s(2), b2 = a.s(3), eps = a.s(4), wd = a.s(5);
    const T m_scale = T(1) - a.s(0), v_scale = T(1) - a.s(1);
    const T* g = a.t(6);
    const T c1 = T(1) - b1, c2 = T(1) - b2;
    const bool decays = wd > T(0);
    const int grad_input = 3 + 6;
    Tensor update;
    std::unique_ptr<Tensor> forwarded = ctx->forward_input(
        grad_input, 2, DataTypeToEnum<T>::v(), ctx->input(grad_input).shape(),
        ::tensorflow::DEVICE_MEMORY, ctx->output_alloc_attr(2));
    if (forwarded != nullptr) {
      update = *forwarded;
    } else {
      mutex_lock lock(mu);
      Tensor* held = scratch.IsInitialized() ? scratch.AccessTensor(ctx) : nullptr;
      if (held == nullptr || !held->shape().IsSameSize(ctx->input(grad_input).shape()) ||
          !SoleOwner(held)) {
        OP_REQUIRES_OK(ctx, ctx->allocate_persistent(DataTypeToEnum<T>::v(),
                                                     ctx->input(grad_input).shape(), &scratch,
                                                     &held));
      }
      update = *held;
    }
    ctx->set_output(2, update);
    T* r = update.flat<T>().data();  // may be g's buffer: each chunk reads g before writing r
    double totals[2];
    ReduceChunks<T>(
        ctx, a.n, 4 * sizeof(T), 3 * sizeof(T), 30, 2,
        [=](int64 b, int64 e, double* sums) {
          ConstVec<T> P(p + b, e - b), G(g + b, e - b);
          Vec<T> M(m + b, e - b), V(v + b, e - b);
          M = M * b1 + G * c1;
          V = V * b2 + G.square() * c2;
          Vec<T> R(r + b, e - b);
          if (decays) {
            R = (M / m_scale) / (KerasSqrt(V / v_scale) + eps) + P * wd;
          } else {
            R = (M / m_scale) / (KerasSqrt(V / v_scale) + eps);
          }
          sums[0] = SumOfSquares<T>(P);
          sums[1] = SumOfSquares<T>(R);
        },
        totals);
    for (int k = 0; k < 2; ++k) {
      Tensor* out;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(k, {}, &out));
      out->scalar<T>()() = static_cast<T>(std::sqrt(totals[k]));
    }
  }
};
KOL_REGISTER(LambMoments)

// LAMB, pass 2 of 2: p <- p - (lr*ratio)*update, `update` the r of pass 1. For a parameter
// without layer adaptation, ratio = 1 (lr*1 = lr exactly).
struct LambUpdate : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var"}, {{"lr", 's'}, {"ratio", 's'}, {"update", 't'}}, {}, {}, true};
  }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* p = a.var[0];
    const T rate = a.s(0) * a.s(1);
    const T* r = a.t(2);
    ForChunks<T>(ctx, a.n, 2 * sizeof(T), sizeof(T), 2, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b);
      ConstVec<T> R(r + b, e - b);
      P = P - R * rate;
    });
  }
};
KOL_REGISTER(LambUpdate)

// LARS's step (tf.contrib's LARSOptimizer on TF's ApplyMomentum, lr = 1): with the rate
// lr*trust given, scaled = (g [+ wd*p when wd != 0]) * rate; accum <- accum*momentum + scaled;
// p <- p - accum (Nesterov: p <- p - (scaled + accum*momentum)).
struct LarsMomentum {
  static OpSpec Spec() {
    return {{"var", "accum"},
            {{"lr", 's'}, {"grad", 't'}, {"momentum", 's'}, {"weight_decay", 's'}},
            {"use_nesterov: bool = false"},
            {},
            true};
  }
  explicit LarsMomentum(OpKernelConstruction* c) {
    OP_REQUIRES_OK(c, c->GetAttr("use_nesterov", &nesterov));
  }
  bool nesterov = false;

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* p = a.var[0];
    T* acc = a.var[1];
    const T rate = a.s(0), mu = a.s(2), wd = a.s(3);
    const T* g = a.t(1);
    const bool decays = wd != T(0), nesterov = this->nesterov;
    ForChunks<T>(ctx, a.n, 3 * sizeof(T), 2 * sizeof(T), 10, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), A(acc + b, e - b);
      ConstVec<T> G(g + b, e - b);
      if (decays) {
        A = A * mu + (G + P * wd) * rate;
        if (nesterov) {
          P = P - ((G + P * wd) * rate + A * mu);
        } else {
          P = P - A;
        }
      } else {
        A = A * mu + G * rate;
        if (nesterov) {
          P = P - (G * rate + A * mu);
        } else {
          P = P - A;
        }
      }
    });
  }
};
KOL_REGISTER(LarsMomentum)

// Exponential moving average in place: avg <- avg*decay + value*(1-decay) (the rounding of
// keras_opt_legacy.ops.average_in_place and of the formula decay*avg + (1-decay)*value).
struct Ema : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() { return {{"var"}, {{"decay", 's'}, {"value", 't'}}, {}, {}, true}; }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* avg = a.var[0];
    const T decay = a.s(0);
    const T* x = a.t(1);
    const T rest = T(1) - decay;
    ForChunks<T>(ctx, a.n, 2 * sizeof(T), sizeof(T), 3, [=](int64 b, int64 e) {
      Vec<T> A(avg + b, e - b);
      ConstVec<T> X(x + b, e - b);
      A = A * decay + X * rest;
    });
  }
};
KOL_REGISTER(Ema)

// Decoupled weight decay in place: p <- p - p*coefficient (TF's ApplyGradientDescent(p, c, p)).
struct Decay : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() { return {{"var"}, {{"coefficient", 's'}}, {}, {}, true}; }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* p = a.var[0];
    const T c = a.s(0);
    ForChunks<T>(ctx, a.n, sizeof(T), sizeof(T), 2, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b);
      P = P - P * c;
    });
  }
};
KOL_REGISTER(Decay)

// Decay, then TF's Adam step, in one pass: p <- p - p*coefficient, then ApplyAdam's arithmetic
// m += (g - m)*(1-b1); v += (g^2 - v)*(1-b2); p -= (m*alpha)/(sqrt(v) + eps) with
// alpha = lr*sqrt(1-b2^t)/(1-b1^t). Cut in shards exactly as TF 1.15's ApplyAdam (its
// parallelFor, packet units, cost), so that each element takes the same vectorized or scalar
// path as there: bitwise KolApplyDecay (or ApplyGradientDescent(p, c, p)) then ApplyAdam.
struct AdamW : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var", "m", "v"},
            {{"beta1_power", 's'},
             {"beta2_power", 's'},
             {"lr", 's'},
             {"beta1", 's'},
             {"beta2", 's'},
             {"epsilon", 's'},
             {"grad", 't'},
             {"coefficient", 's'}},
            {},
            {},
            true};
  }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* var_ptr = a.var[0];
    T* m_ptr = a.var[1];
    T* v_ptr = a.var[2];
    const T beta1_power = a.s(0), beta2_power = a.s(1), lr = a.s(2), beta1 = a.s(3),
            beta2 = a.s(4), epsilon = a.s(5), c = a.s(7);
    const T* g_ptr = a.t(6);
    // ApplyAdamNonCuda, from here on.
    Index length = a.n;
    Index packet_size = Eigen::internal::packet_traits<T>::size;
    if (length % packet_size == 0) {
      length = length / packet_size;
    } else {
      packet_size = 1;
    }
    const T alpha =
        lr * Eigen::numext::sqrt(T(1) - beta2_power) / (T(1) - beta1_power);
    auto shard = [=](Index begin, Index end) {
      const Index t_size = (end - begin) * packet_size;
      begin = begin * packet_size;
      const Index stop = begin + t_size;
      for (Index b = begin; b < stop; b += ChunkSize<T>()) {
        const Index n = std::min<Index>(ChunkSize<T>(), stop - b);
        Vec<T> var(var_ptr + b, n), m(m_ptr + b, n), v(v_ptr + b, n);
        ConstVec<T> g(g_ptr + b, n);
        var = var - var * c;
        m += (g - m) * (T(1) - beta1);
        v += (g.square() - v) * (T(1) - beta2);
        var -= (m * alpha) / (v.sqrt() + epsilon);
      }
    };
    // ApplyAdam's cost (its int arithmetic included), so the same shards.
    const int input_bytes = length * packet_size * sizeof(T) * 4;
    const int output_bytes = length * packet_size * sizeof(T) * 3;
    const int compute_cycles =
        (Eigen::TensorOpCost::AddCost<int>() * 5 + Eigen::TensorOpCost::MulCost<int>() * 2 +
         Eigen::TensorOpCost::AddCost<T>() * 10 + Eigen::TensorOpCost::MulCost<T>() * 6 +
         Eigen::TensorOpCost::DivCost<T>()) *
        length;
    const Eigen::TensorOpCost cost(input_bytes, output_bytes, compute_cycles);
    ctx->eigen_device<CPUDevice>().parallelFor(length, cost, shard);
  }
};
KOL_REGISTER(AdamW)

// ---- KolNorms: two Euclidean norms in one pass ------------------------------------------

// x_norm = ||x||, y_norm = ||y||: sums of squares in double, chunk by chunk in a fixed order
// (deterministic), over both arrays in the same pass (LARS: ||w|| and ||g||).
template <typename T>
class NormsOp : public OpKernel {
 public:
  explicit NormsOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& y = ctx->input(1);
    const T* xp = x.flat<T>().data();
    const T* yp = y.flat<T>().data();
    const int64 nx = x.NumElements(), ny = y.NumElements();
    double totals[2];
    ReduceChunks<T>(ctx, std::max(nx, ny), 2 * sizeof(T), 0, 4, 2,
                    [=](int64 b, int64 e, double* sums) {
                      sums[0] = b < nx ? SumOfSquares<T>(ConstVec<T>(
                                             xp + b, std::min<int64>(e, nx) - b))
                                       : 0.;
                      sums[1] = b < ny ? SumOfSquares<T>(ConstVec<T>(
                                             yp + b, std::min<int64>(e, ny) - b))
                                       : 0.;
                    },
                    totals);
    for (int k = 0; k < 2; ++k) {
      Tensor* out;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(k, {}, &out));
      out->scalar<T>()() = static_cast<T>(std::sqrt(totals[k]));
    }
  }
};

REGISTER_OP("KolNorms")
    .Input("x: T")
    .Input("y: T")
    .Output("x_norm: T")
    .Output("y_norm: T")
    .Attr("T: {half, float, double}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      return Status::OK();
    });

KOL_REGISTER_COMPUTE(KolNorms, NormsOp)

}  // namespace kol
