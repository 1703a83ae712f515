// Host C++ stand-ins for the CUDA built-ins kernels.cu uses, so its kernels run on the CPU: the
// launchers in emulate.cpp loop over every block and thread of the grid, one thread at a time.
#pragma once
#include <math.h>

struct EfDim3 { unsigned x, y, z; };
static EfDim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__

static inline int atomicAdd(int* address, int value) { int old = *address; *address += value; return old; }
