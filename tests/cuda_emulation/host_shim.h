// Host C++ stand-ins for the CUDA built-ins kernels.cu uses, so its kernels run on the CPU: the
// launchers in emulate.cpp loop over every block and thread of the grid, one thread at a time, except
// warp-synchronous kernels (__shfl_sync), whose 32 lanes run as coroutines (ef_run_warp).
#pragma once
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <vector>

struct EfDim3 { unsigned x, y, z; };
static EfDim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__

static inline int atomicAdd(int* address, int value) { int old = *address; *address += value; return old; }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }

// The first misuse a launch found (what a GPU would turn into undefined results); emulate_error() reports it.
static char ef_error[240];
static void ef_fail(const char* message)
{
    if (!ef_error[0]) snprintf(ef_error, sizeof ef_error, "%s", message);
}

// One warp's lanes as coroutines on this thread: a lane runs until it reaches a __shfl_sync, then the next lane
// runs; when all 32 wait at the same call site the values are exchanged and the next round starts. A lane that
// has returned, or waits at another call site, while others shuffle is divergence: the launch fails with it (the
// lanes still waiting are abandoned).
enum EfLaneState { EF_RUNNABLE, EF_SHUFFLING, EF_RETURNED };

struct EfWarp {
    static const size_t stack_bytes = 128 * 1024;
    ucontext_t scheduler, context[32];
    EfLaneState state[32];
    const void* site[32];
    unsigned long long sent[32], received[32];
    int source[32];
    int lane = 0;
    std::function<void()> body;
    std::vector<char> stacks = std::vector<char>(32 * stack_bytes);
};
static EfWarp* ef_warp = nullptr;

static void ef_lane_entry()
{
    ef_warp->body();
    ef_warp->state[ef_warp->lane] = EF_RETURNED;  // then back to the scheduler (uc_link)
}

template <typename T>
__attribute__((noinline)) static T __shfl_sync(unsigned mask, T value, int src_lane)
{
    static_assert(sizeof(T) <= 8, "__shfl_sync moves at most 64 bits");
    EfWarp* warp = ef_warp;
    if (warp == nullptr || mask != 0xffffffffu) {
        ef_fail("__shfl_sync outside a full warp: launch the kernel with one warp per block (emulate_warp_*) and "
                "shuffle with the full mask");
        return value;
    }
    int lane = warp->lane;
    warp->sent[lane] = 0;
    memcpy(&warp->sent[lane], &value, sizeof value);
    warp->source[lane] = src_lane & 31;  // CUDA takes the source lane modulo the width
    warp->site[lane] = __builtin_return_address(0);
    warp->state[lane] = EF_SHUFFLING;
    swapcontext(&warp->context[lane], &warp->scheduler);
    T out;
    memcpy(&out, &warp->received[lane], sizeof out);
    return out;
}

// Run `body` as the 32 lanes of block `block` (blockDim must hold exactly 32 threads).
static void ef_run_warp(EfDim3 block, std::function<void()> body)
{
    if (blockDim.x * blockDim.y != 32) {
        ef_fail("a warp-synchronous kernel launched with blocks of other than 32 threads");
        return;
    }
    static EfWarp warp;
    ef_warp = &warp;
    warp.body = std::move(body);
    for (int l = 0; l < 32; ++l) {
        getcontext(&warp.context[l]);
        warp.context[l].uc_stack.ss_sp = &warp.stacks[l * EfWarp::stack_bytes];
        warp.context[l].uc_stack.ss_size = EfWarp::stack_bytes;
        warp.context[l].uc_link = &warp.scheduler;
        makecontext(&warp.context[l], ef_lane_entry, 0);
        warp.state[l] = EF_RUNNABLE;
    }
    for (;;) {
        for (int l = 0; l < 32; ++l) {
            if (warp.state[l] != EF_RUNNABLE) continue;
            warp.lane = l;
            blockIdx = block;
            threadIdx = {(unsigned)l % blockDim.x, (unsigned)l / blockDim.x, 0};
            swapcontext(&warp.scheduler, &warp.context[l]);
        }
        int returned = 0;
        for (int l = 0; l < 32; ++l) returned += warp.state[l] == EF_RETURNED;
        if (returned == 32) break;
        bool same_site = true;
        for (int l = 0; l < 32; ++l) same_site &= warp.state[l] == EF_SHUFFLING && warp.site[l] == warp.site[0];
        if (!same_site) {
            ef_fail(returned ? "a lane returned while the rest of its warp waited in __shfl_sync (divergence)"
                             : "the lanes of a warp waited in different __shfl_sync calls (divergence)");
            break;
        }
        for (int l = 0; l < 32; ++l) warp.received[l] = warp.sent[warp.source[l]];
        for (int l = 0; l < 32; ++l) warp.state[l] = EF_RUNNABLE;
    }
    ef_warp = nullptr;
}
