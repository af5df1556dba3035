"""The installed C++ package from outside: a CMake project in a temporary directory finds it with
``find_package(torch_layerlr REQUIRED)``, links ``torch_layerlr::torch_layerlr``, runs two LAMB steps and prints the
parameters, which must be the numbers the Python LAMB gives for the same inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

import torch_layerlr
from torch_layerlr.optim import LAMB

sys.path.insert(0, str(Path(__file__).parent / "cpp"))
from cpp_build import build_cpp  # noqa: E402

CMAKE_LISTS = """\
cmake_minimum_required(VERSION 3.18)
project(outside LANGUAGES CXX)
find_package(torch_layerlr REQUIRED)
add_executable(app main.cpp)
target_link_libraries(app PRIVATE torch_layerlr::torch_layerlr)
set_target_properties(app PROPERTIES CXX_STANDARD 20)
"""

# w = (i - 2.5) / 4 and g_k = sin(i + k) for i = 0..5 as a 2x3 float32 tensor; LAMB lr 0.1, weight decay 0.01.
MAIN_CPP = """\
#include <torch_layerlr/optim.h>
#include <cstdio>
int main() {
  torch::Tensor w = ((torch::arange(6, torch::kFloat32) - 2.5) / 4).reshape({2, 3}).set_requires_grad(true);
  torch_layerlr::optim::LAMB lamb({w}, torch_layerlr::optim::LAMBOptions(0.1).weight_decay(0.01));
  for (int k = 0; k < 2; ++k) {
    w.mutable_grad() = torch::sin(torch::arange(6, torch::kFloat32) + k).reshape({2, 3});
    lamb.step();
  }
  const torch::Tensor flat = w.detach().flatten();
  for (int64_t i = 0; i < flat.numel(); ++i) std::printf("%.9g\\n", static_cast<double>(flat[i].item<float>()));
}
"""


def python_numbers() -> list[str]:
    w = ((torch.arange(6, dtype=torch.float32) - 2.5) / 4).reshape(2, 3).requires_grad_(True)
    lamb = LAMB([w], lr=0.1, weight_decay=0.01)
    for k in range(2):
        w.grad = torch.sin(torch.arange(6, dtype=torch.float32) + k).reshape(2, 3)
        lamb.step()
    return [f"{float(x):.9g}" for x in w.detach().flatten()]


def test_outside_project_finds_links_and_matches_python(tmp_path):
    build_cpp()
    (tmp_path / "CMakeLists.txt").write_text(CMAKE_LISTS)
    (tmp_path / "main.cpp").write_text(MAIN_CPP)
    prefix = f"{torch_layerlr.cmake_prefix_path};{torch.utils.cmake_prefix_path}"
    build = tmp_path / "build"
    for cmd in (["cmake", "-S", str(tmp_path), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}",
                 "-DCMAKE_BUILD_TYPE=Release"],
                ["cmake", "--build", str(build), "-j2"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    out = subprocess.run([str(build / "app")], capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert out == python_numbers()
    start = [f"{float(x):.9g}" for x in (torch.arange(6, dtype=torch.float32) - 2.5) / 4]
    assert out != start  # the step moved the parameters
