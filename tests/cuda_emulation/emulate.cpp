// CPU emulation of the grids of edgeface's CUDA kernels: the kernels themselves, compiled as C++. Each
// emulate_<kernel>(grid x, grid y, block x, block y, <the kernel's own parameters>) runs every thread
// of the grid, one at a time (a warp-synchronous kernel's blocks as one warp each: EF_WARP_GRID);
// tests/cuda_emulation/runtime.py launches them like the CUDA runtime does and reads emulate_error() after each.
#include "host_shim.h"
#include "../../edgeface/backends/cuda/kernels.cu"

#define EF_GRID(gx, gy, bx, by, CALL)                                                     \
    gridDim = {(unsigned)(gx), (unsigned)(gy), 1};                                        \
    blockDim = {(unsigned)(bx), (unsigned)(by), 1};                                       \
    for (unsigned by_ = 0; by_ < gridDim.y; ++by_)                                        \
        for (unsigned bx_ = 0; bx_ < gridDim.x; ++bx_)                                    \
            for (unsigned ty_ = 0; ty_ < blockDim.y; ++ty_)                               \
                for (unsigned tx_ = 0; tx_ < blockDim.x; ++tx_) {                         \
                    blockIdx = {bx_, by_, 0};                                             \
                    threadIdx = {tx_, ty_, 0};                                            \
                    CALL;                                                                 \
                }

#define EF_WARP_GRID(gx, gy, bx, by, CALL)                                                \
    gridDim = {(unsigned)(gx), (unsigned)(gy), 1};                                        \
    blockDim = {(unsigned)(bx), (unsigned)(by), 1};                                       \
    for (unsigned by_ = 0; by_ < gridDim.y; ++by_)                                        \
        for (unsigned bx_ = 0; bx_ < gridDim.x; ++bx_)                                    \
            ef_run_warp({bx_, by_, 0}, [&] { CALL; });

extern "C" const char* emulate_error()
{
    static char last[sizeof ef_error];
    memcpy(last, ef_error, sizeof last);
    ef_error[0] = 0;
    return last;
}

extern "C" void emulate_ef_preprocess(int gx, int gy, int bx, int by, const unsigned char* src, int src_w, int src_h,
                                      int src_pitch, int src_channels, int src_is_rgb, void* dst, int dst_half,
                                      int dst_w, int dst_h, int new_w, int new_h, int pad_x, int pad_y, int out_rgb,
                                      float m0, float m1, float m2, float s0, float s1, float s2) {
    EF_GRID(gx, gy, bx, by, ef_preprocess(src, src_w, src_h, src_pitch, src_channels, src_is_rgb, dst, dst_half,
                                          dst_w, dst_h, new_w, new_h, pad_x, pad_y, out_rgb, m0, m1, m2, s0, s1, s2))
}

extern "C" void emulate_ef_decode(int gx, int gy, int bx, int by, const float* loc, const float* conf,
                                  const float* anchors, int n, float threshold, float v0, float v1, float down,
                                  int capacity, float* boxes, float* scores, int* anchor, int* count) {
    EF_GRID(gx, gy, bx, by,
            ef_decode(loc, conf, anchors, n, threshold, v0, v1, down, capacity, boxes, scores, anchor, count))
}

extern "C" void emulate_ef_select_histogram(int gx, int gy, int bx, int by, const float* scores, const int* anchor,
                                            const int* count, int capacity, int pass, int* state) {
    EF_GRID(gx, gy, bx, by, ef_select_histogram(scores, anchor, count, capacity, pass, state))
}

extern "C" void emulate_ef_select_pick(int gx, int gy, int bx, int by, const int* count, int capacity, int k, int pass,
                                       int* state) {
    EF_GRID(gx, gy, bx, by, ef_select_pick(count, capacity, k, pass, state))
}

extern "C" void emulate_ef_select_compact(int gx, int gy, int bx, int by, const float* boxes, const float* scores,
                                          const int* anchor, const int* count, int capacity, int* state,
                                          float* out_boxes, float* out_scores, int* out_anchor) {
    EF_GRID(gx, gy, bx, by, ef_select_compact(boxes, scores, anchor, count, capacity, state, out_boxes, out_scores,
                                              out_anchor))
}

extern "C" void emulate_ef_rank(int gx, int gy, int bx, int by, const float* boxes, const float* scores,
                                const int* anchor, const int* count, int capacity, int k, float* sorted_boxes,
                                float* sorted_scores, int* sorted_anchor, int* num_sorted) {
    EF_GRID(gx, gy, bx, by, ef_rank(boxes, scores, anchor, count, capacity, k, sorted_boxes, sorted_scores,
                                    sorted_anchor, num_sorted))
}

extern "C" void emulate_ef_nms_mask(int gx, int gy, int bx, int by, const float* boxes, const int* num, float iou,
                                    unsigned long long* mask) {
    EF_GRID(gx, gy, bx, by, ef_nms_mask(boxes, num, iou, mask))
}

extern "C" void emulate_ef_nms_reduce(int gx, int gy, int bx, int by, const unsigned long long* mask,
                                      const float* sorted_boxes, const float* sorted_scores, const int* num,
                                      int max_keep, int* num_keep, float* kept) {
    EF_WARP_GRID(gx, gy, bx, by, ef_nms_reduce(mask, sorted_boxes, sorted_scores, num, max_keep, num_keep, kept))
}

extern "C" void emulate_half_bits(const float* values, unsigned short* out, int n) {
    for (int i = 0; i < n; ++i) out[i] = ef_half_bits(values[i]);
}

// For the emulation's own tests: warps that shuffle correctly (each lane gets lane `source`'s value plus its own)
// and that diverge (lane `early` returns before the shuffle, or shuffles at another call site).
extern "C" void emulate_test_shuffle(int source, int early, int other_site, int* out) {
    gridDim = {1, 1, 1};
    blockDim = {32, 1, 1};
    ef_run_warp({0, 0, 0}, [&] {
        int lane = (int)threadIdx.x;
        if (lane == early) return;
        // two instantiations, so the compiler cannot merge the two call sites into one
        int got = lane == other_site ? (int)__shfl_sync(0xffffffffu, (unsigned)lane, source)
                                     : __shfl_sync(0xffffffffu, lane, source);
        out[lane] = got + lane;
    });
}
