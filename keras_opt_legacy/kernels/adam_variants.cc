// The Adam variants of keras_opt_legacy.rules: RAdam, AdaBound/AMSBound, Yogi, AdaBelief
// (plain and rectified). Each op is one pass over the elements; the scalars that depend on the
// step (bias corrections, RAdam's rectification, AdaBound's bounds) are inputs, computed in the
// graph as the rule's `_step_values` computes them. See keras_rules.cc for the conventions.
#include "kol_kernels.h"

namespace kol {

namespace {

// The Adam moments, as the rules write them: m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2.
template <typename T>
inline void Moments(Vec<T>& M, Vec<T>& V, const ConstVec<T>& G, T b1, T c1, T b2, T c2) {
  M = M * b1 + G * c1;
  V = V * b2 + G.square() * c2;
}

}  // namespace

// RAdam: Adam's m, v; p <- p - (rectified ? adaptive_rate*m/(sqrt(v)+eps) : momentum_rate*m)
// with adaptive_rate = lr_t*r_t, momentum_rate = lr/(1-b1^t), rectified = rho_t >= 5 given.
struct RAdam : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var", "m", "v"},
            {{"adaptive_rate", 's'},
             {"momentum_rate", 's'},
             {"rectified", 'b'},
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
    const T adaptive = a.s(0), momentum = a.s(1), b1 = a.s(3), b2 = a.s(4), eps = a.s(5);
    const bool rectified = a.b(2);
    const T* g = a.t(6);
    const T c1 = T(1) - b1, c2 = T(1) - b2;
    ForChunks<T>(ctx, a.n, 4 * sizeof(T), 3 * sizeof(T), 20, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), M(m + b, e - b), V(v + b, e - b);
      ConstVec<T> G(g + b, e - b);
      Moments(M, V, G, b1, c1, b2, c2);
      if (rectified) {
        P = P - (M * adaptive) / (KerasSqrt(V) + eps);
      } else {
        P = P - M * momentum;
      }
    });
  }
};
KOL_REGISTER(RAdam)

// AdaBound: Adam's m, v; size = clip_by_value(lr_t/(sqrt(v)+eps), lower, upper)
// (Minimum(_, upper), then Maximum(_, lower)); p <- p - size*m.
// AMSBound: the same with vhat <- max(vhat, v) in place of v in the step size.
template <bool amsbound>
struct Bound : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    std::vector<const char*> variables = {"var", "m", "v"};
    if (amsbound) variables.push_back("vhat");
    return {variables,
            {{"lr_t", 's'},
             {"lower", 's'},
             {"upper", 's'},
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
    T* vhat = amsbound ? a.var[3] : nullptr;
    const T lr_t = a.s(0), lower = a.s(1), upper = a.s(2), b1 = a.s(3), b2 = a.s(4),
            eps = a.s(5);
    const T* g = a.t(6);
    const T c1 = T(1) - b1, c2 = T(1) - b2;
    ForChunks<T>(ctx, a.n, (4 + amsbound) * sizeof(T), (3 + amsbound) * sizeof(T), 24,
                 [=](int64 b, int64 e) {
                   Vec<T> P(p + b, e - b), M(m + b, e - b), V(v + b, e - b);
                   ConstVec<T> G(g + b, e - b);
                   Moments(M, V, G, b1, c1, b2, c2);
                   if (amsbound) {
                     Vec<T> H(vhat + b, e - b);
                     H = H.cwiseMax(V);
                     P = P - (H.constant(lr_t) / (KerasSqrt(H) + eps))
                                     .cwiseMin(upper)
                                     .cwiseMax(lower) *
                                 M;
                   } else {
                     P = P - (V.constant(lr_t) / (KerasSqrt(V) + eps))
                                     .cwiseMin(upper)
                                     .cwiseMax(lower) *
                                 M;
                   }
                 });
  }
};
using AdaBound = Bound<false>;
using AmsBound = Bound<true>;
KOL_REGISTER(AdaBound)
KOL_REGISTER(AmsBound)

// Yogi: v <- v - ((1-b2)*sign(v - g^2))*g^2; m <- b1*m + (1-b1)*g;
// p <- p - lr_t*m/(sqrt(v)+eps).
struct Yogi : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var", "m", "v"},
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
    const T lr_t = a.s(0), b1 = a.s(1), b2 = a.s(2), eps = a.s(3);
    const T* g = a.t(4);
    const T c1 = T(1) - b1, c2 = T(1) - b2;
    ForChunks<T>(ctx, a.n, 4 * sizeof(T), 3 * sizeof(T), 24, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), M(m + b, e - b), V(v + b, e - b);
      ConstVec<T> G(g + b, e - b);
      V = V - (Sign(V - G.square()) * c2) * G.square();
      M = M * b1 + G * c1;
      P = P - (M * lr_t) / (KerasSqrt(V) + eps);
    });
  }
};
KOL_REGISTER(Yogi)

// Yogi with beta_1 = 0 (no m slot: m = g): p <- p - lr_t*g/(sqrt(v)+eps).
struct YogiNoMomentum : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var", "v"},
            {{"lr_t", 's'}, {"beta_2", 's'}, {"epsilon", 's'}, {"grad", 't'}},
            {},
            {},
            true};
  }

  template <typename T>
  void Run(OpKernelContext* ctx, const Args<T>& a) const {
    T* p = a.var[0];
    T* v = a.var[1];
    const T lr_t = a.s(0), b2 = a.s(1), eps = a.s(2);
    const T* g = a.t(3);
    const T c2 = T(1) - b2;
    ForChunks<T>(ctx, a.n, 3 * sizeof(T), 2 * sizeof(T), 20, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), V(v + b, e - b);
      ConstVec<T> G(g + b, e - b);
      V = V - (Sign(V - G.square()) * c2) * G.square();
      P = P - (G * lr_t) / (KerasSqrt(V) + eps);
    });
  }
};
KOL_REGISTER(YogiNoMomentum)

// AdaBelief (not rectified): m <- b1*m + (1-b1)*g; s <- b2*s + ((1-b2)*(g-m)^2 + eps);
// p <- p - momentum_rate*m / (sqrt(s)/bias_correction_2 + eps), with momentum_rate =
// lr/(1-b1^t) and bias_correction_2 = sqrt(1-b2^t) given. The rule writes
// s <- (b2*s + (1-b2)*(g-m)^2) + eps, but the graph runs b2*s + ((1-b2)*(g-m)^2 + eps):
// grappler's constant folding pushes the constant eps down the Add tree (ConstantPushDown,
// also with the arithmetic optimizer off), which rounds differently in float64.
struct AdaBelief : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var", "m", "s"},
            {{"momentum_rate", 's'},
             {"bias_correction_2", 's'},
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
    T* s = a.var[2];
    const T rate = a.s(0), correction = a.s(1), b1 = a.s(2), b2 = a.s(3), eps = a.s(4);
    const T* g = a.t(5);
    const T c1 = T(1) - b1, c2 = T(1) - b2;
    ForChunks<T>(ctx, a.n, 4 * sizeof(T), 3 * sizeof(T), 24, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), M(m + b, e - b), S(s + b, e - b);
      ConstVec<T> G(g + b, e - b);
      M = M * b1 + G * c1;
      S = S * b2 + ((G - M).square() * c2 + eps);  // as grappler runs it, see above
      P = P - (M * rate) / (KerasSqrt(S) / correction + eps);
    });
  }
};
KOL_REGISTER(AdaBelief)

// AdaBelief with rectify=True: m, s as AdaBelief's;
// p <- p - (rectified ? adaptive_rate*m/(sqrt(s)+eps) : momentum_rate*m).
struct AdaBeliefRectified : NoAttrs {
  using NoAttrs::NoAttrs;
  static OpSpec Spec() {
    return {{"var", "m", "s"},
            {{"adaptive_rate", 's'},
             {"momentum_rate", 's'},
             {"rectified", 'b'},
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
    T* s = a.var[2];
    const T adaptive = a.s(0), momentum = a.s(1), b1 = a.s(3), b2 = a.s(4), eps = a.s(5);
    const bool rectified = a.b(2);
    const T* g = a.t(6);
    const T c1 = T(1) - b1, c2 = T(1) - b2;
    ForChunks<T>(ctx, a.n, 4 * sizeof(T), 3 * sizeof(T), 24, [=](int64 b, int64 e) {
      Vec<T> P(p + b, e - b), M(m + b, e - b), S(s + b, e - b);
      ConstVec<T> G(g + b, e - b);
      M = M * b1 + G * c1;
      S = S * b2 + ((G - M).square() * c2 + eps);  // as grappler runs it, see above
      if (rectified) {
        P = P - (M * adaptive) / (KerasSqrt(S) + eps);
      } else {
        P = P - M * momentum;
      }
    });
  }
};
KOL_REGISTER(AdaBeliefRectified)

}  // namespace kol
