"""Where ``make cpp`` installs the C++ library's CMake package (like ``torch.utils.cmake_prefix_path``).

Put it on ``CMAKE_PREFIX_PATH`` (next to ``torch.utils.cmake_prefix_path``) and ``find_package(torch_layerlr)``
finds ``lib/cmake/torch_layerlr/torch_layerlrConfig.cmake`` under it. ``LAYERLR_CMAKE_PREFIX`` overrides it for a
package installed elsewhere (``cmake --install build/cpp --prefix DIR``).
"""

import os

__all__ = ["cmake_prefix_path"]

cmake_prefix_path: str = os.environ.get("LAYERLR_CMAKE_PREFIX") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "install")
