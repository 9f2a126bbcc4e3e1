"""CT reconstruction kernels: parallel-beam FBP, fan-beam FBP and FDK cone-beam.

Pure functions, ndarray in and float32 ndarray out. Each picks its CPU (Numba)
or CUDA (numba.cuda) backprojector with ``device`` (see :mod:`kernels.device`);
importing this package never touches CUDA.
"""

from kernels.ct._warmup import warmup
from kernels.ct.cone import fdk
from kernels.ct.fan import fbp_fan
from kernels.ct.parallel import fbp_parallel

__all__ = ["fbp_fan", "fbp_parallel", "fdk", "warmup"]
