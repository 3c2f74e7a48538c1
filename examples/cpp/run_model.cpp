// Runs a model that uses torch_sparse_backend's ops in a C++ program, without Python.
//
//   run_model OPS_LIBRARY torchscript MODEL.pt INPUT.pt OUTPUT.pt
//   run_model OPS_LIBRARY aoti        MODEL.pt2 INPUT.pt OUTPUT.pt
//
// OPS_LIBRARY is libtorch_sparse_backend_ops.so (torch_sparse_backend.ops_library_path()
// in Python). dlopen-ing it runs its static initializers, which register the
// ops and the TorchScript class SparseLinearPackedParams with the dispatcher;
// after that, torch::jit::load reads a scripted model saved by Python, and
// torch::inductor::AOTIModelPackageLoader runs an AOTInductor package whose
// graph calls the ops. INPUT.pt is one tensor saved by Python's torch.save;
// OUTPUT.pt receives the model's output, readable by Python's torch.load.
#include <dlfcn.h>

#include <ATen/core/grad_mode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace {

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::vector<char>& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

at::Tensor run_torchscript(const std::string& model_path, const at::Tensor& input) {
  torch::jit::Module model = torch::jit::load(model_path);
  model.eval();
  return model.forward({input}).toTensor();
}

at::Tensor run_aoti(const std::string& package_path, const at::Tensor& input) {
  torch::inductor::AOTIModelPackageLoader loader(package_path);
  std::vector<at::Tensor> outputs = loader.run({input});
  if (outputs.size() != 1) {
    throw std::runtime_error("the package returned " + std::to_string(outputs.size()) +
                             " outputs, expected 1");
  }
  return outputs[0];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6 || (std::string(argv[2]) != "torchscript" && std::string(argv[2]) != "aoti")) {
    std::cerr << "usage: " << argv[0]
              << " OPS_LIBRARY {torchscript MODEL.pt | aoti MODEL.pt2} INPUT.pt OUTPUT.pt\n";
    return 2;
  }
  const std::string ops_library = argv[1], kind = argv[2], model = argv[3], input_path = argv[4],
                    output_path = argv[5];
  // RTLD_GLOBAL: the registrations are global anyway; this also lets later
  // libraries resolve the ops library's symbols.
  if (dlopen(ops_library.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::cerr << "cannot load the ops library: " << dlerror() << "\n";
    return 1;
  }
  try {
    c10::InferenceMode inference;
    const at::Tensor input = torch::jit::pickle_load(read_file(input_path)).toTensor();
    const at::Tensor output =
        kind == "torchscript" ? run_torchscript(model, input) : run_aoti(model, input);
    write_file(output_path, torch::jit::pickle_save(output));
    std::cout << kind << " " << model << ": output " << output.sizes() << " " << output.dtype()
              << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
