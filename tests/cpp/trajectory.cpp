// Runs cases of cases.h (keys "case@anything", or "case>anything@anything") on inputs the Python side wrote
// (torch.save of {key: {"params": [...], "grads": [[...] per step], "losses": [...]}}) and writes each key's
// parameters after every step ({key: [[...] per step]}, torch::pickle_save, readable by torch.load). An input with
// "load_into" (a case) and "load_at" (a step) saves the optimizer before that step and loads the archive into a
// new optimizer of that case over the same parameters, which takes the remaining steps.
// Usage: layerlr_trajectory INPUT OUTPUT
#include <torch/serialize.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "cases.h"

namespace {

std::vector<torch::Tensor> tensors(const c10::IValue& v) {
  std::vector<torch::Tensor> out;
  for (const c10::IValue& t : v.toListRef()) out.push_back(t.toTensor());
  return out;
}

// `optimizer`'s archive loaded into a new optimizer of `factory` over the same params.
std::unique_ptr<torch_layerlr::optim::FusedOptimizer> reloaded(const torch_layerlr::optim::FusedOptimizer& optimizer,
                                                               const layerlr_test::Factory& factory,
                                                               const layerlr_test::Params& params) {
  std::stringstream buffer;
  torch::serialize::OutputArchive out;
  optimizer.save(out);
  out.save_to(buffer);
  auto target = factory(params);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  target->load(in);
  return target;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " INPUT OUTPUT\n";
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const c10::Dict<c10::IValue, c10::IValue> inputs = torch::pickle_load(bytes).toGenericDict();

  c10::Dict<std::string, c10::List<c10::List<torch::Tensor>>> outputs;
  for (const auto& entry : inputs) {
    const std::string name = entry.key().toStringRef();
    const auto data = entry.value().toGenericDict();
    std::vector<torch::Tensor> params;
    for (const torch::Tensor& p : tensors(data.at("params"))) params.push_back(p.clone().set_requires_grad(true));
    const auto& factory = layerlr_test::cases().at(name.substr(0, name.find_first_of(">@")));
    auto optimizer = factory(params);
    const auto grads = data.at("grads").toListRef();
    const auto losses = data.at("losses").toListRef();
    const int64_t load_at = data.contains("load_at") ? data.at("load_at").toInt() : -1;
    c10::List<c10::List<torch::Tensor>> trajectory;
    for (size_t k = 0; k < grads.size(); ++k) {
      if (static_cast<int64_t>(k) == load_at) {
        optimizer = reloaded(*optimizer, layerlr_test::cases().at(data.at("load_into").toStringRef()), params);
      }
      const std::vector<torch::Tensor> g = tensors(grads[k]);
      for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = g[i].clone();
      const double loss = losses[k].toDouble();
      optimizer->step([loss] { return torch::tensor(loss, torch::dtype(torch::kFloat32)); });
      c10::List<torch::Tensor> now;
      for (const torch::Tensor& p : params) now.push_back(p.detach().clone());
      trajectory.push_back(now);
    }
    outputs.insert(name, trajectory);
  }
  const std::vector<char> out = torch::pickle_save(outputs);
  std::ofstream(argv[2], std::ios::binary).write(out.data(), static_cast<std::streamsize>(out.size()));
  return 0;
}
