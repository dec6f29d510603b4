// Op registration for keras_opt_legacy's kernels (see kol_kernels.h).
#include "kol_kernels.h"

namespace kol {

using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

ShapeHandle VariableShape(InferenceContext* c, int i, bool resource) {
  if (!resource) return c->input(i);
  // A resource handle carries its variable's shape when the graph knows it.
  const auto* handle = c->input_handle_shapes_and_types(i);
  if (handle != nullptr && handle->size() == 1) return (*handle)[0].shape;
  return c->UnknownShape();
}

bool RegisterOps(const char* name, const OpSpec& spec) {
  for (bool resource : {false, true}) {
    const std::string op = std::string(resource ? "KolResourceApply" : "KolApply") + name;
    ::tensorflow::OpDefBuilder b(op);
    for (const char* v : spec.variables)
      b.Input(std::string(v) + (resource ? ": resource" : ": Ref(T)"));
    for (const Input& in : spec.inputs)
      b.Input(std::string(in.name) + (in.kind == 'b' ? ": bool" : ": T"));
    if (!resource && spec.ref_output) b.Output("out: Ref(T)");
    for (const Input& out : spec.outputs) b.Output(std::string(out.name) + ": T");
    b.Attr("T: {half, float, double}");
    b.Attr("use_locking: bool = false");
    for (const char* attr : spec.attrs) b.Attr(attr);
    b.SetIsStateful();  // it writes variables: never folded, merged or pruned
    b.SetShapeFn([spec, resource](InferenceContext* c) -> Status {
      const int n_vars = static_cast<int>(spec.variables.size());
      ShapeHandle s = VariableShape(c, 0, resource);
      for (int i = 1; i < n_vars; ++i) {
        if (!(spec.own_shape & (1u << i)))
          TF_RETURN_IF_ERROR(c->Merge(s, VariableShape(c, i, resource), &s));
      }
      ShapeHandle unused;
      for (size_t k = 0; k < spec.inputs.size(); ++k) {
        const int index = n_vars + static_cast<int>(k);
        const char kind = spec.inputs[k].kind;
        if (kind == 's' || kind == 'b') {
          TF_RETURN_IF_ERROR(c->WithRank(c->input(index), 0, &unused));
        } else if (kind == 't') {
          TF_RETURN_IF_ERROR(c->Merge(s, c->input(index), &s));
        }
      }
      int out = 0;
      if (!resource && spec.ref_output) c->set_output(out++, s);
      for (const Input& output : spec.outputs)
        c->set_output(out++, output.kind == 't' ? s : c->Scalar());
      return Status::OK();
    });
    ::tensorflow::OpRegistry::Global()->Register(
        [b](::tensorflow::OpRegistrationData* data) -> Status { return b.Finalize(data); });
  }
  return true;
}

}  // namespace kol
