// Python entry points for the linear ops, without torch.ops' per-call overhead.
//
// Calling torch.ops.torch_sparse_backend.qlinear(x, packed, ...) spends more
// time in torch's Python op binding, before the dispatcher is reached, than a
// small layer's whole product takes: the binding looks up __torch_function__
// on every argument, including the packed-params ScriptObject, whose attribute
// lookup raises and catches C++ exceptions, and scans the arguments for fake
// script objects. The functions here take the
// arguments torch.ops would receive in eager mode, convert them directly, and
// call the same op through the c10 dispatcher (a cached typed handle), so every
// registered kernel and dispatch key (autograd, Python modes, fake/meta
// kernels, ...) still applies. Errors from the op become the same Python
// exceptions with the same messages as through torch.ops (torch's own
// translation, torch::translate_exception_to_python), and C++ warnings
// (TORCH_WARN) go where they go through torch.ops: to c10's warning handler,
// not to Python's warnings module, because torch.ops installs no Python
// warning handler around the call (torch's HANDLE_TH_ERRORS would).
//
// Arguments the fast path does not handle exactly as torch.ops would (tensor
// subclasses, other Python types, other ScriptObjects, an active
// TorchFunctionMode or JIT tracer, wrong argument counts) raise
// UnsupportedArgumentError, a TypeError subclass: torch_sparse_backend.functional
// catches it and calls torch.ops instead, so those cases keep torch.ops'
// behaviour and messages.
//
// This is the only translation unit that includes torch's Python headers, and
// the Python extension module's only source: the ops it calls live in the ops
// library (every other source; no Python), which the module links. The kernel
// core stays free of torch headers. It includes only the headers it
// uses, not <torch/extension.h> (the whole C++ frontend), because it is the
// slowest file of the build to compile and every header adds to that.
#include <pybind11/pybind11.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/api/object.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include "packed_params.h"

namespace tsb {
namespace {

namespace py = pybind11;
using Packed = c10::intrusive_ptr<SparseLinearPackedParams>;

using StaticSig = at::Tensor(const at::Tensor&, const Packed&, double, int64_t);
using StaticUint8Sig = at::Tensor(const at::Tensor&, double, int64_t, const Packed&, double,
                                  int64_t);
using DynamicSig = at::Tensor(const at::Tensor&, const Packed&);

// Set once at module initialization (under the GIL), read-only afterwards.
PyObject* unsupported_error = nullptr;       // UnsupportedArgumentError
PyTypeObject* script_object_type = nullptr;  // torch._C.ScriptObject
const py::detail::type_info* script_object_info = nullptr;

[[noreturn]] void unsupported(const char* op, const char* what) {
  PyErr_Format(unsupported_error, "%s fast path: %s", op, what);
  throw python_error();
}

// False when `o`, an instance of torch._C.ScriptObject or of a subclass, was
// created by ScriptObject.__new__ and never initialized: its C++ object was
// never constructed, and torch.ops dereferences its garbage and crashes, so
// callers must refuse it.
bool initialized(PyObject* o) {
  auto* inst = reinterpret_cast<py::detail::instance*>(o);
  // The first (here: only) C++ part of the instance, whatever its pybind11 type.
  const py::detail::value_and_holder vh =
      inst->get_value_and_holder(/*find_type=*/nullptr, /*throw_if_missing=*/false);
  return vh.inst != nullptr && vh.holder_constructed() && vh.value_ptr() != nullptr;
}

[[noreturn]] void uninitialized(const char* op) {
  PyErr_Format(PyExc_ValueError,
               "%s: W_prepack is an uninitialized torch.ScriptObject (created by "
               "torch.ScriptObject.__new__ without __setstate__)",
               op);
  throw python_error();
}

const c10::ClassType* packed_class_type() {
  static const c10::ClassType* type = c10::getCustomClassType<Packed>().get();
  return type;
}

// The SparseLinearPackedParams held by `o`, which must be exactly a
// torch.ScriptObject of that class.
Packed packed_arg(PyObject* o, const char* op) {
  if (Py_TYPE(o) != script_object_type) {
    unsupported(op, "W_prepack is not a torch.ScriptObject");
  }
  if (!initialized(o)) uninitialized(op);
  const auto* obj = reinterpret_cast<py::detail::instance*>(o)
                        ->get_value_and_holder(script_object_info)
                        .value_ptr<torch::jit::Object>();
  const c10::intrusive_ptr<c10::ivalue::Object> ivalue = obj->_ivalue();
  if (ivalue->type().get() != packed_class_type()) {
    unsupported(op, "W_prepack is not a SparseLinearPackedParams");
  }
  if (ivalue->slots().size() != 1 || !ivalue->getSlot(0).isCapsule()) {
    unsupported(op, "W_prepack holds no SparseLinearPackedParams");
  }
  return c10::static_intrusive_pointer_cast<SparseLinearPackedParams>(
      ivalue->getSlot(0).toCapsule());
}

const at::Tensor& tensor_arg(PyObject* o, const char* op) {
  // Exactly torch.Tensor (or nn.Parameter, which torch treats as a plain
  // tensor): subclasses may override __torch_function__.
  if (!THPVariable_CheckExact(o)) unsupported(op, "an argument is not exactly a torch.Tensor");
  return THPVariable_Unpack(o);
}

// A schema `float`: Python float, or int (converted as torch.ops does).
double float_arg(PyObject* o, const char* op) {
  if (PyFloat_CheckExact(o)) return PyFloat_AS_DOUBLE(o);
  if (PyLong_CheckExact(o)) {
    const double v = PyLong_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();
      unsupported(op, "an int argument does not fit a double");
    }
    return v;
  }
  unsupported(op, "a float argument is not a Python float or int");
}

// A schema `int`: Python int (not bool) that fits int64.
int64_t int_arg(PyObject* o, const char* op) {
  if (PyLong_CheckExact(o)) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      unsupported(op, "an int argument does not fit int64");
    }
    return static_cast<int64_t>(v);
  }
  unsupported(op, "an int argument is not a Python int");
}

void check_call(Py_ssize_t nargs, Py_ssize_t expected, const char* op) {
  if (nargs != expected) unsupported(op, "wrong number of arguments");
  // torch.ops hands the call to the mode's __torch_function__; the tracer
  // needs torch.ops' Python-side bookkeeping of the arguments.
  if (at::impl::torch_function_mode_enabled()) unsupported(op, "a TorchFunctionMode is active");
  if (torch::jit::tracer::isTracing()) unsupported(op, "the JIT tracer is active");
}

// Every C++ exception becomes the Python exception torch.ops would raise for
// it; a Python error already set (UnsupportedArgumentError, ...) stays set.
#define TSB_TRY try {
#define TSB_CATCH                                                     \
  }                                                                   \
  catch (...) {                                                       \
    torch::translate_exception_to_python(std::current_exception()); \
    return nullptr;                                                   \
  }

template <class Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

PyObject* wrap(at::Tensor&& y) { return THPVariable_Wrap(std::move(y)); }

// X, W_prepack, Y_scale, Y_zero_point
PyObject* call_static(const char* name, const c10::TypedOperatorHandle<StaticSig>& op,
                      PyObject* const* args, Py_ssize_t nargs) {
  check_call(nargs, 4, name);
  const Packed packed = packed_arg(args[1], name);
  const at::Tensor& x = tensor_arg(args[0], name);
  const double y_scale = float_arg(args[2], name);
  const int64_t y_zero_point = int_arg(args[3], name);
  at::Tensor y;
  {
    py::gil_scoped_release no_gil;
    y = op.call(x, packed, y_scale, y_zero_point);
  }
  return wrap(std::move(y));
}

// X, X_scale, X_zero_point, W_prepack, Y_scale, Y_zero_point
PyObject* call_static_uint8(const char* name, const c10::TypedOperatorHandle<StaticUint8Sig>& op,
                            PyObject* const* args, Py_ssize_t nargs) {
  check_call(nargs, 6, name);
  const Packed packed = packed_arg(args[3], name);
  const at::Tensor& x = tensor_arg(args[0], name);
  const double x_scale = float_arg(args[1], name);
  const int64_t x_zero_point = int_arg(args[2], name);
  const double y_scale = float_arg(args[4], name);
  const int64_t y_zero_point = int_arg(args[5], name);
  at::Tensor y;
  {
    py::gil_scoped_release no_gil;
    y = op.call(x, x_scale, x_zero_point, packed, y_scale, y_zero_point);
  }
  return wrap(std::move(y));
}

// X, W_prepack
PyObject* call_dynamic(const char* name, const c10::TypedOperatorHandle<DynamicSig>& op,
                       PyObject* const* args, Py_ssize_t nargs) {
  check_call(nargs, 2, name);
  const Packed packed = packed_arg(args[1], name);
  const at::Tensor& x = tensor_arg(args[0], name);
  at::Tensor y;
  {
    py::gil_scoped_release no_gil;
    y = op.call(x, packed);
  }
  return wrap(std::move(y));
}

// One METH_FASTCALL function per op: no pybind11 overload resolution per call.
#define TSB_FAST_OP(fn, caller, Sig)                                             \
  PyObject* fn(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) { \
    TSB_TRY                                                                      \
    static const auto op = find_op<Sig>("torch_sparse_backend::" #fn);           \
    return caller("torch_sparse_backend::" #fn, op, args, nargs);                \
    TSB_CATCH                                                                    \
  }

TSB_FAST_OP(qlinear, call_static, StaticSig)
TSB_FAST_OP(qlinear_relu, call_static, StaticSig)
TSB_FAST_OP(qlinear_uint8, call_static_uint8, StaticUint8Sig)
TSB_FAST_OP(qlinear_relu_uint8, call_static_uint8, StaticUint8Sig)
TSB_FAST_OP(qlinear_dynamic, call_dynamic, DynamicSig)
TSB_FAST_OP(qlinear_relu_dynamic, call_dynamic, DynamicSig)
#undef TSB_FAST_OP

// Raises ValueError for an uninitialized ScriptObject (see initialized());
// anything else passes. The Python side calls it before falling back to
// torch.ops, which would crash on such an object.
PyObject* check_params_object(PyObject* /*module*/, PyObject* obj) {
  TSB_TRY
  if (PyObject_TypeCheck(obj, script_object_type) && !initialized(obj)) {
    uninitialized("torch_sparse_backend");
  }
  Py_RETURN_NONE;
  TSB_CATCH
}

PyMethodDef methods[] = {
    {"qlinear", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(qlinear)),
     METH_FASTCALL, "qlinear(X, W_prepack, Y_scale, Y_zero_point) through the dispatcher"},
    {"qlinear_relu", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(qlinear_relu)),
     METH_FASTCALL, "qlinear_relu(X, W_prepack, Y_scale, Y_zero_point) through the dispatcher"},
    {"qlinear_uint8", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(qlinear_uint8)),
     METH_FASTCALL,
     "qlinear_uint8(X, X_scale, X_zero_point, W_prepack, Y_scale, Y_zero_point) through the "
     "dispatcher"},
    {"qlinear_relu_uint8",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(qlinear_relu_uint8)),
     METH_FASTCALL,
     "qlinear_relu_uint8(X, X_scale, X_zero_point, W_prepack, Y_scale, Y_zero_point) through "
     "the dispatcher"},
    {"qlinear_dynamic",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(qlinear_dynamic)), METH_FASTCALL,
     "qlinear_dynamic(X, W_prepack) through the dispatcher"},
    {"qlinear_relu_dynamic",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(qlinear_relu_dynamic)),
     METH_FASTCALL, "qlinear_relu_dynamic(X, W_prepack) through the dispatcher"},
    {"check_params_object", check_params_object, METH_O,
     "Raises ValueError if the argument is an uninitialized torch.ScriptObject."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace
}  // namespace tsb

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "torch_sparse_backend's C++ extension: the ops (registered with the dispatcher on "
            "load) and their direct Python entry points";
  // torch._C.ScriptObject is the pybind11 class of torch::jit::Object; its
  // type info is shared with this module because the extension is built with
  // torch's pybind11 ABI flags.
  py::module_::import("torch");
  tsb::script_object_info = py::detail::get_type_info(typeid(torch::jit::Object));
  if (tsb::script_object_info == nullptr) {
    throw std::runtime_error(
        "torch_sparse_backend: torch._C.ScriptObject's pybind11 type is not visible from the "
        "extension (pybind11 ABI mismatch with torch)");
  }
  tsb::script_object_type = tsb::script_object_info->type;
  tsb::unsupported_error = PyErr_NewExceptionWithDoc(
      "torch_sparse_backend.functional.UnsupportedArgumentError",
      "Arguments the direct entry points do not handle exactly like torch.ops; "
      "torch_sparse_backend.functional then calls torch.ops.",
      PyExc_TypeError, nullptr);
  if (tsb::unsupported_error == nullptr) throw py::error_already_set();
  m.add_object("UnsupportedArgumentError", py::handle(tsb::unsupported_error));
  if (PyModule_AddFunctions(m.ptr(), tsb::methods) != 0) throw py::error_already_set();
}
