"""Build softclass's C code at install time, as setuptools extensions beside the Python modules.

Three shared libraries, loaded with ctypes (they call no Python API):

- ``softclass/kernels/_cpu_native*.so`` from ``kernels/cpu_native.c`` (+ ``loss_rows.h``): the
  fused cross-entropy and softmax row loops (:mod:`softclass.kernels.native_loops`, ``.softmax``);
- ``softclass/training/_mlp_native*.so`` from ``training/mlp_native.c`` (which includes both): the
  compiled training loops of :mod:`softclass.training.ensemble`;
- ``softclass/training/_mlp_step*.so`` from ``training/mlp_step.c`` (which includes
  ``mlp_native.c``): the same loops with a batch's products through a BLAS gemm whose address
  it receives at run time (:mod:`softclass.training.blas`: no BLAS is linked at build time).

- ``softclass/kernels/_cross_entropy_op_torch<version>*.so`` from ``kernels/cross_entropy_op.cpp``
  and ``cpu_native.c``: cross entropy as a C++ operator registered with torch
  (TORCH_LIBRARY, a C++ autograd kernel), the eager road of small calls
  (:mod:`softclass.kernels.cross_entropy_op`). Built only when torch is importable at build time,
  against that torch: the file name carries its version, and softclass loads it (with
  ``torch.ops.load_library``) only under the same version. pip's isolated build environment
  has no torch (``[build-system] requires`` does not list it: that would install a second torch,
  from PyPI a CUDA build, on every install, and ``-c constraints.txt`` does not reach it), so the
  README's install line installs torch first and builds with ``--no-build-isolation``; a plain
  ``pip install .`` builds the rest and softclass says once at run time what is slower.

All four are optional: without a C compiler the install still succeeds and softclass runs the same
math on torch ops (one warning at run time says what is slower). ``pip install -e .`` builds them
in place (``src/softclass/...``), so checkouts used through ``PYTHONPATH=src`` find them too;
after editing a C file, ``python setup.py build_ext --inplace`` rebuilds what changed.

``-march=native`` tunes the code for the building machine (a local install). Set
``SOFTCLASS_PORTABLE_BUILD=1`` to build a wheel for other machines of the same architecture.
"""

import compileall
import os
import platform
import re

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = "src/softclass/kernels"
TRAINING = "src/softclass/training"
# No -ffast-math: the loops must round like torch's elementwise ops. -fopenmp-simd: the row
# functions of loss_rows.h vectorise their reductions.
COMPILE_ARGS = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"]
if os.environ.get("SOFTCLASS_PORTABLE_BUILD", "0") != "1" and platform.machine() in (
    "x86_64",
    "AMD64",
    "aarch64",
    "arm64",
):
    COMPILE_ARGS.append("-march=native")
LIBRARIES = [] if platform.system() == "Windows" else ["m"]
ROW_MATH = [f"{KERNELS}/loss_rows.h", f"{KERNELS}/spatial_loops.h"]
STEP_INCLUDES = [f"{TRAINING}/small_gemm.c", f"{TRAINING}/mlp_native.c", f"{KERNELS}/cpu_native.c"]


def native_library(name: str, source: str, depends: list[str]) -> Extension:
    """One optional C library; ``depends``: the files it includes (a change rebuilds it)."""
    return Extension(
        name,
        sources=[source],
        depends=depends,
        include_dirs=[KERNELS],
        extra_compile_args=COMPILE_ARGS,
        libraries=LIBRARIES,
        optional=True,
    )


def torch_tag(version: str) -> str:
    """A torch version as a file-name part (``2.13.0+cpu`` -> ``2_13_0_cpu``); the loader
    (softclass/kernels/cross_entropy_op.py) computes the same from the running torch."""
    return re.sub(r"[^0-9A-Za-z]", "_", version)


def torch_operator() -> list[Extension]:
    """The C++ cross-entropy operator, built against the torch importable now (none without)."""
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        return []
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    # at::parallel_for (the spatial loops on torch's intra-op threads) is OpenMP pragmas in
    # torch's headers: without -fopenmp it runs on the calling thread only. Linked as torch's
    # own libgomp (the same soname, found first in torch's library directory, already loaded
    # by torch): one OpenMP runtime and thread pool in the process. GCC on Linux, as torch's
    # own builds there; the C code's machine code is the same with or without the flag.
    openmp = ["-fopenmp"] if platform.system() == "Linux" and torch._C.has_openmp else []
    return [
        Extension(
            f"softclass.kernels._cross_entropy_op_torch{torch_tag(torch.__version__)}",
            # cpu_native.c compiled as C, as in _cpu_native: the same numbers on both roads
            sources=[f"{KERNELS}/cpu_native.c", f"{KERNELS}/cross_entropy_op.cpp"],
            depends=ROW_MATH,
            include_dirs=[KERNELS, *cpp_extension.include_paths()],
            library_dirs=cpp_extension.library_paths(),
            libraries=["c10", "torch", "torch_cpu"],
            runtime_library_dirs=cpp_extension.library_paths(),
            extra_compile_args=[
                *COMPILE_ARGS,
                # GNU dialect: contracts a·b + c into FMAs as the C build does (ISO C++ does
                # not), so both compiled roads give the same numbers
                "-std=gnu++20",
                "-g0",
                f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
                "-fvisibility=hidden",
                *openmp,
            ],
            extra_link_args=openmp,
            language="c++",
            optional=True,
        )
    ]


class BuildInPlace(build_ext):
    """``build_ext`` that, when it builds in place (``pip install -e .``), also writes the bytecode
    of the package's modules, as a regular install does: the first command after the install then
    starts as fast as the next (it would otherwise compile ~20,000 lines of Python)."""

    def run(self) -> None:
        super().run()
        if self.inplace:
            compileall.compile_dir("src/softclass", quiet=1)


setup(
    cmdclass={"build_ext": BuildInPlace},
    ext_modules=[
        native_library("softclass.kernels._cpu_native", f"{KERNELS}/cpu_native.c", ROW_MATH),
        native_library(
            "softclass.training._mlp_native",
            f"{TRAINING}/mlp_native.c",
            [f"{KERNELS}/cpu_native.c", *ROW_MATH],
        ),
        native_library(
            "softclass.training._mlp_step",
            f"{TRAINING}/mlp_step.c",
            [*STEP_INCLUDES, *ROW_MATH],
        ),
        *torch_operator(),
    ],
)
