// Keras-era rules without a TensorFlow kernel of their arithmetic: Keras's momentum SGD
// (Nesterov too), Keras's RMSprop, Nadam (Keras 2.2.4's schedule) and Adam's AMSGrad.
//
// Each rule struct: Spec() (its inputs, see kol_kernels.h) and Run(), which updates one chunk
// of every array after the other, in the formula's arithmetic order. P, M, V... are the
// variables' slices, G the gradient's; scalars such as 1 - beta are computed once, in T, as the
// graph computes them (a scalar Sub).
#include "kol_kernels.h"

namespace kol {

// v = momentum*m - lr*g; m <- v; p <- p + v
// (Nesterov: p <- (p + momentum*v) - lr*g).
struct KerasMomentum {
  static OpSpec Spec() {
    return {{"var", "accum"},
            {{"lr", 's'}, {"grad", 't'}, {"momentum", 's'}},
            {"use_nesterov: bool = false"},
            {},
            true};
  }
  explicit KerasMomentum(OpKernelConstruction* c) {
    OP_REQUIRES_OK(c, c->GetAttr("use_nesterov", &nesterov));
  }
  bool nesterov = false;

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* p = a.var[0];
    T* m = a.var[1];
    const T lr = a.s(0), mu = a.s(2);
    const T* g = a.t(1);
    const bool nesterov = this->nesterov;
    ForChunks<T>(ctx, a.n, 3 * sizeof(T), 2 * sizeof(T), 6, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), M(m + b, e - b);
      ConstVec<T> G(g + b, e - b);
      M = M * mu - G * lr;
      if (nesterov) {
        P = P + M * mu - G * lr;
      } else {
        P = P + M;
      }
    });
  }
};
KOL_REGISTER(KerasMomentum)

// a <- rho*a + (1-rho)*g^2; p <- p - lr*g / (sqrt(a) + epsilon)   (K.sqrt's clip included)
struct KerasRMSProp : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var", "ms"},
            {{"lr", 's'}, {"rho", 's'}, {"epsilon", 's'}, {"grad", 't'}},
            {},
            {},
            true};
  }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* p = a.var[0];
    T* ms = a.var[1];
    const T lr = a.s(0), rho = a.s(1), eps = a.s(2);
    const T* g = a.t(3);
    const T one_minus_rho = T(1) - rho;
    ForChunks<T>(ctx, a.n, 3 * sizeof(T), 2 * sizeof(T), 12, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), A(ms + b, e - b);
      ConstVec<T> G(g + b, e - b);
      A = A * rho + G.square() * one_minus_rho;
      P = P - (G * lr) / (KerasSqrt(A) + eps);
    });
  }
};
KOL_REGISTER(KerasRMSProp)

// Nadam, keras_opt_legacy.Nadam._apply/_step with the per-step scalars as inputs:
//   m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g^2
//   p <- p - lr*((1-mc_t)*(g/(1-ms_new)) + mc_t1*(m/(1-ms_next))) / (sqrt(v/(1-b2^t)) + eps)
struct Nadam : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var", "m", "v"},
            {{"momentum_cache_t", 's'},
             {"momentum_cache_t_1", 's'},
             {"m_schedule_new", 's'},
             {"m_schedule_next", 's'},
             {"beta_2_power", 's'},
             {"lr", 's'},
             {"beta_1", 's'},
             {"beta_2", 's'},
             {"epsilon", 's'},
             {"grad", 't'}},
            {},
            {},
            true};
  }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* p = a.var[0];
    T* m = a.var[1];
    T* v = a.var[2];
    const T mc_t = a.s(0), mc_t1 = a.s(1), ms_new = a.s(2), ms_next = a.s(3), b2_power = a.s(4),
            lr = a.s(5), b1 = a.s(6), b2 = a.s(7), eps = a.s(8);
    const T* g = a.t(9);
    const T c1 = T(1) - b1, c2 = T(1) - b2, g_scale = T(1) - ms_new, m_scale = T(1) - ms_next,
            v_scale = T(1) - b2_power, one_minus_mc_t = T(1) - mc_t;
    ForChunks<T>(ctx, a.n, 4 * sizeof(T), 3 * sizeof(T), 30, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), M(m + b, e - b), V(v + b, e - b);
      ConstVec<T> G(g + b, e - b);
      M = M * b1 + G * c1;
      V = V * b2 + G.square() * c2;
      P = P - ((G / g_scale) * one_minus_mc_t + (M / m_scale) * mc_t1) * lr /
                  (KerasSqrt(V / v_scale) + eps);
    });
  }
};
KOL_REGISTER(Nadam)

// Adam with amsgrad (keras_opt_legacy.Adam._apply): m, v as Adam's; vhat <- max(vhat, v);
// p <- p - lr_t*m / (sqrt(vhat) + eps), lr_t = lr*sqrt(1-b2^t)/(1-b1^t) given.
struct AdamAmsgrad : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var", "m", "v", "vhat"},
            {{"lr_t", 's'}, {"beta_1", 's'}, {"beta_2", 's'}, {"epsilon", 's'}, {"grad", 't'}},
            {},
            {},
            true};
  }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* p = a.var[0];
    T* m = a.var[1];
    T* v = a.var[2];
    T* vhat = a.var[3];
    const T lr_t = a.s(0), b1 = a.s(1), b2 = a.s(2), eps = a.s(3);
    const T* g = a.t(4);
    const T c1 = T(1) - b1, c2 = T(1) - b2;
    ForChunks<T>(ctx, a.n, 5 * sizeof(T), 4 * sizeof(T), 20, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), M(m + b, e - b), V(v + b, e - b), H(vhat + b, e - b);
      ConstVec<T> G(g + b, e - b);
      M = M * b1 + G * c1;
      V = V * b2 + G.square() * c2;
      H = H.cwiseMax(V);
      P = P - (M * lr_t) / (KerasSqrt(H) + eps);
    });
  }
};
KOL_REGISTER(AdamAmsgrad)

}  // namespace kol
