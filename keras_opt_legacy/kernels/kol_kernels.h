// keras_opt_legacy's training kernels: the shared templates.
//
// Every op updates variables in place in one pass over their elements: the elements are cut in
// chunks of kChunkBytes per array (a multiple of the SIMD packet), the chunks spread over TF's
// CPU thread pool (Eigen's parallelFor, as TF's own ApplyAdam), and each chunk runs the rule's
// Eigen expressions one after the other while its slices of every array are in L1 cache: main
// memory sees each element read once and written once. The rule's arithmetic is the Keras
// formula's, in its order and with TensorFlow's own Eigen functors (the same `psqrt` packet
// code as TF's Sqrt op, so results equal the formula graph bitwise where the operations are the
// same); the scalars that depend on the iteration are inputs, computed in the graph.
//
// Each rule is a struct (see keras_rules.cc) that says which inputs are variables, which are
// scalars or gradient-shaped tensors, and what a chunk computes; KOL_REGISTER(Rule) registers
// two ops for it, as TensorFlow has ApplyAdam and ResourceApplyAdam:
//   KolApply<Rule>          variables as `Ref(T)` inputs (Keras 2.2's tf.Variable), output
//                           `out: Ref(T)` (the first variable), like ApplyAdam;
//   KolResourceApply<Rule>  variables as `resource` handles (Keras 2.3), no variable output,
//                           with TF's copy-on-write of a variable whose buffer a read aliases.
// for T in {half, float, double}, CPU only.
//
// The resource helpers of TF's training_ops (training_op_helpers.h: MaybeLockVariableInput-
// MutexesInOrder, PrepareToUpdateVariable) are not among the headers TF installs, so their
// logic is reimplemented here from what is installed: resource_mgr.h (LookupResource),
// resource_var.h (Var) and DMAHelper (the buffer's reference count, as
// Tensor::RefCountIsOne computes it).
#ifndef KERAS_OPT_LEGACY_KERNELS_KOL_KERNELS_H_
#define KERAS_OPT_LEGACY_KERNELS_KOL_KERNELS_H_

#define EIGEN_USE_THREADS

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "tensorflow/core/common_runtime/dma_helper.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_types.h"
#include "tensorflow/core/lib/core/errors.h"
#include "tensorflow/core/lib/core/refcount.h"
#include "tensorflow/core/platform/mutex.h"
#include "third_party/eigen3/unsupported/Eigen/CXX11/Tensor"

namespace kol {

using ::tensorflow::DataTypeToEnum;
using ::tensorflow::DT_RESOURCE;
using ::tensorflow::int64;
using ::tensorflow::mutex;
using ::tensorflow::mutex_lock;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShapeUtils;
using ::tensorflow::tf_shared_lock;
using ::tensorflow::Var;
namespace errors = ::tensorflow::errors;

typedef Eigen::ThreadPoolDevice CPUDevice;
typedef Eigen::DenseIndex Index;

// A slice of an array, as TF's TTypes<T>::UnalignedFlat.
template <typename T>
using Vec = Eigen::TensorMap<Eigen::Tensor<T, 1, Eigen::RowMajor, Index>, Eigen::Unaligned>;
template <typename T>
using ConstVec =
    Eigen::TensorMap<Eigen::Tensor<const T, 1, Eigen::RowMajor, Index>, Eigen::Unaligned>;

// Bytes of each array a chunk covers: with up to 5 arrays, a chunk's slices stay in L1/L2.
#ifndef KOL_CHUNK_BYTES
#define KOL_CHUNK_BYTES 4096
#endif
constexpr int64 kChunkBytes = KOL_CHUNK_BYTES;

template <typename T>
constexpr int64 ChunkSize() {
  return kChunkBytes / sizeof(T);  // a multiple of every packet size (4 to 16 elements)
}

// Keras's K.sqrt: tf.sqrt(tf.clip_by_value(x, 0, inf)), i.e. Minimum(x, inf), then
// Maximum(_, 0), then Sqrt, with the same Eigen functors in the same operand order.
template <typename X>
auto KerasSqrt(const X& x) {
  typedef typename X::Scalar T;
  return x.cwiseMin(T(std::numeric_limits<float>::infinity())).cwiseMax(T(0)).sqrt();
}

// Sign, vectorized: TF's Sign op and Eigen's scalar_sign_op (this Eigen has no packet sign,
// so an expression holding it runs element by element) give Scalar((a > 0) - (a < 0)); the
// packet form (0 < a) & 1 - (a < 0) & 1 gives the same bits (+0 for +-0 and NaN).
template <typename T>
struct SignOp {
  EIGEN_EMPTY_STRUCT_CTOR(SignOp)
  EIGEN_STRONG_INLINE const T operator()(const T& a) const {
    return Eigen::internal::scalar_sign_op<T>()(a);
  }
  template <typename Packet>
  EIGEN_STRONG_INLINE Packet packetOp(const Packet& a) const {
    using namespace Eigen::internal;
    const Packet zero = pzero(a), one = pset1<Packet>(T(1));
    return psub(pand(pcmp_lt(zero, a), one), pand(pcmp_lt(a, zero), one));
  }
};

template <typename X>
auto Sign(const X& x) {
  return x.unaryExpr(SignOp<typename X::Scalar>());
}

// Sum of squares of the expression `x` (a chunk), as a double: accumulated in T packet by
// packet (Eigen's full reduction over the chunk), in float for half.
template <typename T>
struct SumSquares {
  template <typename X>
  static double Of(const X& x) {
    T result;
    Eigen::TensorMap<Eigen::Tensor<T, 0, Eigen::RowMajor, Index>, Eigen::Unaligned> out(&result);
    out = x.square().sum();
    return static_cast<double>(result);
  }
};
template <>
struct SumSquares<Eigen::half> {
  template <typename X>
  static double Of(const X& x) {
    float result;
    Eigen::TensorMap<Eigen::Tensor<float, 0, Eigen::RowMajor, Index>, Eigen::Unaligned> out(
        &result);
    out = x.template cast<float>().square().sum();
    return static_cast<double>(result);
  }
};

template <typename T, typename X>
double SumOfSquares(const X& x) {
  return SumSquares<T>::Of(x);
}

// Runs f(begin, end) over [0, n) in chunks of ChunkSize<T>() elements, the chunks in blocks over
// TF's CPU thread pool. Chunk boundaries are multiples of the packet size, so the vectorized
// elements and the scalar tail (the last n % packet elements) are those of one Eigen
// expression over the whole array, as in TF's element-wise ops. Costs are per element.
template <typename T, typename F>
void ForChunks(OpKernelContext* ctx, int64 n, double bytes_loaded, double bytes_stored,
               double cycles, const F& f) {
  const int64 chunk = ChunkSize<T>();
  const int64 chunks = (n + chunk - 1) / chunk;
  if (chunks == 0) return;
  if (chunks == 1) {
    f(0, n);
    return;
  }
  const Eigen::TensorOpCost cost(bytes_loaded * chunk, bytes_stored * chunk, cycles * chunk);
  ctx->eigen_device<CPUDevice>().parallelFor(chunks, cost, [&f, n, chunk](Index first,
                                                                          Index last) {
    for (Index c = first; c < last; ++c) f(c * chunk, std::min<int64>(n, (c + 1) * chunk));
  });
}

// Like ForChunks, but f(begin, end, sums) also writes the chunk's `sums` numbers (sums of
// squares, say), and totals[k] is the sum of the chunks' k-th numbers in chunk order: the same
// number whatever the number of threads or their timing (deterministic across runs and
// processes).
template <typename T, typename F>
void ReduceChunks(OpKernelContext* ctx, int64 n, double bytes_loaded, double bytes_stored,
                  double cycles, int sums, const F& f, double* totals) {
  const int64 chunk = ChunkSize<T>();
  const int64 chunks = (n + chunk - 1) / chunk;
  std::vector<double> partial(chunks * sums, 0.);
  auto run = [&f, &partial, n, chunk, sums](Index first, Index last) {
    for (Index c = first; c < last; ++c)
      f(c * chunk, std::min<int64>(n, (c + 1) * chunk), &partial[c * sums]);
  };
  if (chunks <= 1) {
    run(0, chunks);
  } else {
    const Eigen::TensorOpCost cost(bytes_loaded * chunk, bytes_stored * chunk,
                                   cycles * chunk);
    ctx->eigen_device<CPUDevice>().parallelFor(chunks, cost, run);
  }
  for (int s = 0; s < sums; ++s) totals[s] = 0.;
  for (int64 c = 0; c < chunks; ++c)
    for (int s = 0; s < sums; ++s) totals[s] += partial[c * sums + s];
}

// ---- variables ------------------------------------------------------------------------------

// The Var of resource input `i` (a reference the caller must drop); a variable never
// assigned (no Var yet) is an uninitialized variable.
inline Status LookupVariable(OpKernelContext* ctx, int i, Var** var) {
  Status status = ::tensorflow::LookupResource(ctx, ::tensorflow::HandleFromInput(ctx, i), var);
  if (::tensorflow::errors::IsNotFound(status)) {
    return errors::FailedPrecondition("Attempting to use uninitialized variables: ",
                                      ctx->op_kernel().requested_input(i), " (",
                                      status.error_message(), ")");
  }
  return status;
}

// The mutex of variable input `i`; for a resource variable also the Var, with a reference
// the caller must drop (TF's GetTrainingVariableMutex).
inline Status VariableMutex(OpKernelContext* ctx, int i, Var** var, mutex** mu) {
  *var = nullptr;
  if (ctx->input_dtype(i) == DT_RESOURCE) {
    TF_RETURN_IF_ERROR(LookupVariable(ctx, i, var));
    *mu = (*var)->mu();
  } else {
    *mu = ctx->input_ref_mutex(i);
  }
  return Status::OK();
}

// The variables' mutexes, held while the op runs (TF's MaybeLockVariableInputMutexesInOrder):
// each distinct mutex once, in address order (TF's own training ops use that order, so the
// two cannot deadlock). With `exclusive` (use_locking) exclusive locks; otherwise resource
// variables take shared locks and ref variables none, as TF's training ops.
class VariableLocks {
 public:
  Status Lock(OpKernelContext* ctx, int n, bool exclusive) {
    bool any_resource = false;
    for (int i = 0; i < n; ++i) any_resource |= ctx->input_dtype(i) == DT_RESOURCE;
    if (!exclusive && !any_resource) return Status::OK();
    std::vector<mutex*> mutexes;
    for (int i = 0; i < n; ++i) {
      Var* var;
      mutex* mu;
      TF_RETURN_IF_ERROR(VariableMutex(ctx, i, &var, &mu));
      if (var != nullptr) vars_.push_back(var);
      if (mu != nullptr && std::find(mutexes.begin(), mutexes.end(), mu) == mutexes.end())
        mutexes.push_back(mu);
    }
    std::sort(mutexes.begin(), mutexes.end());
    for (mutex* mu : mutexes) {
      if (exclusive) {
        exclusive_.emplace_back(new mutex_lock{*mu});
      } else {
        shared_.emplace_back(new tf_shared_lock{*mu});
      }
    }
    return Status::OK();
  }

  ~VariableLocks() {
    shared_.clear();
    exclusive_.clear();
    for (Var* var : vars_) var->Unref();
  }

 private:
  std::vector<Var*> vars_;
  std::vector<std::unique_ptr<mutex_lock>> exclusive_;
  std::vector<std::unique_ptr<tf_shared_lock>> shared_;
};

// Whether `tensor` is the only reference to its buffer (Tensor::RefCountIsOne, which is
// private, through DMAHelper).
inline bool SoleOwner(Tensor* tensor) {
  ::tensorflow::TensorBuffer* buffer = ::tensorflow::DMAHelper::buffer(tensor);
  return buffer != nullptr && buffer->RefCountIsOne() && buffer->root_buffer()->RefCountIsOne() &&
         buffer->OwnsMemory();
}

// TF's PrepareToUpdateVariable: before writing a resource variable's buffer in place, copy it
// if a read still aliases it (reference count above one: Tensor::RefCountIsOne's test, through
// DMAHelper) or the variable is in copy-on-read mode.
template <typename T>
Status PrepareToUpdate(OpKernelContext* ctx, Tensor* tensor, bool copy_on_read_mode) {
  if (copy_on_read_mode || !SoleOwner(tensor)) {
    ::tensorflow::PersistentTensor unused;
    Tensor* copy;
    ::tensorflow::AllocatorAttributes attr;
    attr.set_gpu_compatible(true);
    attr.set_nic_compatible(true);
    TF_RETURN_IF_ERROR(
        ctx->allocate_persistent(tensor->dtype(), tensor->shape(), &unused, &copy, attr));
    copy->flat<T>().device(ctx->eigen_device<CPUDevice>()) =
        const_cast<const Tensor*>(tensor)->flat<T>();
    *tensor = *copy;
  }
  return Status::OK();
}

// The tensor of variable input `i`, ready to be written in place if `writes` (TF's
// GetInputTensorFromVariable, dense case).
template <typename T>
Status VariableTensor(OpKernelContext* ctx, int i, bool lock_held, bool writes, Tensor* out) {
  if (ctx->input_dtype(i) == DT_RESOURCE) {
    Var* var;
    TF_RETURN_IF_ERROR(LookupVariable(ctx, i, &var));
    ::tensorflow::core::ScopedUnref unref(var);
    if (!var->tensor()->IsInitialized()) {
      return errors::FailedPrecondition("Attempting to use uninitialized variables: ",
                                        ctx->op_kernel().requested_input(i));
    }
    if (var->tensor()->dtype() != DataTypeToEnum<T>::v()) {
      return errors::InvalidArgument("variable ", ctx->op_kernel().requested_input(i), " is ",
                                     ::tensorflow::DataTypeString(var->tensor()->dtype()),
                                     ", the op's T is ",
                                     ::tensorflow::DataTypeString(DataTypeToEnum<T>::v()));
    }
    if (writes) {
      TF_RETURN_IF_ERROR(
          PrepareToUpdate<T>(ctx, var->tensor(), var->copy_on_read_mode.load()));
    }
    *out = *var->tensor();
    return Status::OK();
  }
  *out = ctx->mutable_input(i, lock_held);
  if (!out->IsInitialized()) {
    return errors::FailedPrecondition("Attempting to use uninitialized variables: ",
                                      ctx->op_kernel().requested_input(i));
  }
  return Status::OK();
}

// ---- op definitions -------------------------------------------------------------------------

// An input after the variables: 's' a scalar of type T, 'b' a bool scalar, 't' a tensor of the
// variables' shape (the gradient), 'a' a tensor of T of any shape (the rule checks it).
struct Input {
  const char* name;
  char kind;
};

struct OpSpec {
  std::vector<const char*> variables;  // names of the variable inputs (first, in order)
  std::vector<Input> inputs;           // then these
  std::vector<const char*> attrs;      // besides T and use_locking ("use_nesterov: bool = false")
  std::vector<Input> outputs;          // outputs of type T (besides a ref op's `out`): 's' a
                                       // scalar, 't' shaped like the variables
  bool ref_output;                     // KolApplyX outputs `out: Ref(T)`, the first variable
  unsigned read_only = 0;              // bit i: variable i is only read (no copy-on-write)
  unsigned own_shape = 0;              // bit i: variable i need not have variable 0's shape
                                       // (the rule checks it: Adafactor's factored moments)
};

::tensorflow::shape_inference::ShapeHandle VariableShape(
    ::tensorflow::shape_inference::InferenceContext* c, int i, bool resource);

// Registers KolApply<name> and KolResourceApply<name>; returns true (for a static).
bool RegisterOps(const char* name, const OpSpec& spec);

// A variable op of `Rule`, for element type T, ref or resource (by its input types).
template <typename T>
struct Args {
  int64 n = 0;          // elements of each variable (of variable 0)
  T* var[5] = {};       // the variables' data, written in place
  ::tensorflow::TensorShape shape[5];  // the variables' shapes
  std::vector<const Tensor*> in;  // the inputs after the variables, in order

  T s(int k) const { return in[k]->scalar<T>()(); }
  bool b(int k) const { return in[k]->scalar<bool>()(); }
  const T* t(int k) const { return in[k]->flat<T>().data(); }
};

template <typename T, typename Rule>
class ApplyOp : public OpKernel {
 public:
  explicit ApplyOp(OpKernelConstruction* c) : OpKernel(c), rule_(c), spec_(Rule::Spec()) {
    OP_REQUIRES_OK(c, c->GetAttr("use_locking", &use_locking_));
  }

  void Compute(OpKernelContext* ctx) override {
    const int n_vars = static_cast<int>(spec_.variables.size());
    VariableLocks locks;
    OP_REQUIRES_OK(ctx, locks.Lock(ctx, n_vars, use_locking_));
    Tensor vars[5];
    Args<T> a;
    for (int i = 0; i < n_vars; ++i) {
      const bool writes = !(spec_.read_only & (1u << i));
      OP_REQUIRES_OK(ctx, VariableTensor<T>(ctx, i, use_locking_, writes, &vars[i]));
      const bool own_shape = spec_.own_shape & (1u << i);
      OP_REQUIRES(ctx, own_shape || vars[i].shape().IsSameSize(vars[0].shape()),
                  errors::InvalidArgument(spec_.variables[i], " and ", spec_.variables[0],
                                          " do not have the same shape: ",
                                          vars[i].shape().DebugString(), " ",
                                          vars[0].shape().DebugString()));
      a.var[i] = vars[i].flat<T>().data();
      a.shape[i] = vars[i].shape();
    }
    for (size_t k = 0; k < spec_.inputs.size(); ++k) {
      const Tensor& x = ctx->input(n_vars + static_cast<int>(k));
      const Input& input = spec_.inputs[k];
      if (input.kind == 's' || input.kind == 'b') {
        OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(x.shape()),
                    errors::InvalidArgument(input.name, " is not a scalar: ",
                                            x.shape().DebugString()));
      } else if (input.kind == 't') {
        OP_REQUIRES(ctx, x.shape().IsSameSize(vars[0].shape()),
                    errors::InvalidArgument(spec_.variables[0], " and ", input.name,
                                            " do not have the same shape: ",
                                            vars[0].shape().DebugString(), " ",
                                            x.shape().DebugString()));
      }
      a.in.push_back(&x);
    }
    a.n = vars[0].NumElements();
    rule_.Run(ctx, a);
    if (!ctx->status().ok()) return;
    if (spec_.ref_output && ::tensorflow::IsRefType(ctx->input_dtype(0))) {
      ctx->forward_ref_input_to_ref_output(0, 0);
    }
  }

 private:
  Rule rule_;
  OpSpec spec_;
  bool use_locking_ = false;
};

// A rule without attributes of its own.
struct NoAttrs {
  explicit NoAttrs(OpKernelConstruction*) {}
};

}  // namespace kol

namespace Eigen {
namespace internal {
template <typename T>
struct functor_traits<kol::SignOp<T>> {
  enum {
    Cost = 3 * NumTraits<T>::AddCost,
    PacketAccess = std::is_same<T, float>::value || std::is_same<T, double>::value
  };
};
}  // namespace internal
}  // namespace Eigen

#define KOL_REGISTER_KERNELS_FOR(NAME, TYPE)                                              \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("KolApply" #NAME).Device(::tensorflow::DEVICE_CPU).TypeConstraint<TYPE>("T"),  \
      ::kol::ApplyOp<TYPE, ::kol::NAME>);                                                 \
  REGISTER_KERNEL_BUILDER(Name("KolResourceApply" #NAME)                                  \
                              .Device(::tensorflow::DEVICE_CPU)                           \
                              .TypeConstraint<TYPE>("T"),                                 \
                          ::kol::ApplyOp<TYPE, ::kol::NAME>);

// The ops KolApply<NAME> and KolResourceApply<NAME>, and their kernels for half, float, double.
#define KOL_REGISTER(NAME)                                                                \
  static const bool kol_registered_##NAME TF_ATTRIBUTE_UNUSED =                           \
      ::kol::RegisterOps(#NAME, ::kol::NAME::Spec());                                     \
  KOL_REGISTER_KERNELS_FOR(NAME, Eigen::half)                                             \
  KOL_REGISTER_KERNELS_FOR(NAME, float)                                                   \
  KOL_REGISTER_KERNELS_FOR(NAME, double)

// The CPU kernels of an op without variables, OP (registered with REGISTER_OP), computed by
// kol::CLASS<T> for half, float, double.
#define KOL_REGISTER_COMPUTE_FOR(OP, CLASS, TYPE)                                          \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name(#OP).Device(::tensorflow::DEVICE_CPU).TypeConstraint<TYPE>("T"),               \
      ::kol::CLASS<TYPE>);
#define KOL_REGISTER_COMPUTE(OP, CLASS)                                                   \
  KOL_REGISTER_COMPUTE_FOR(OP, CLASS, Eigen::half)                                        \
  KOL_REGISTER_COMPUTE_FOR(OP, CLASS, float)                                              \
  KOL_REGISTER_COMPUTE_FOR(OP, CLASS, double)

#endif  // KERAS_OPT_LEGACY_KERNELS_KOL_KERNELS_H_
