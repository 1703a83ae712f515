// edgeface CUDA kernels: pre-processing, anchor decoding with scoring and compaction, and bitmask NMS.
// NumPy references: edgeface/backends/cuda/reference.py. The kernels use no shared memory and no block
// barriers (the NMS reduction is one warp exchanging registers with __shfl_sync), so the same source also
// compiles as host C++ (tests/cuda_emulation/) and runs every thread of the grid on the CPU for the tests.

#define EF_MAX_NMS_WORDS 80  // top-K <= 5120 boxes (the specs' pre_nms_top_k is 5000)
#define EF_NMS_LANE_WORDS ((EF_MAX_NMS_WORDS + 31) / 32)  // suppression words per lane of the reducing warp
#define EF_MAX_LOG_SIZE 10.0f  // decoded sizes grow at most e^10 the anchor (edgeface/core/boxes.py)

// The selection state (ints): a 256-bin histogram, then the rank still to place, whether every candidate is
// kept, the 64-bit key prefix chosen so far (low, high word) and the count of selected candidates.
#define EF_SEL_REMAINING 256
#define EF_SEL_ALL 257
#define EF_SEL_PREFIX_LO 258
#define EF_SEL_PREFIX_HI 259
#define EF_SEL_COUNT 260
#define EF_SEL_INTS 264

// float -> IEEE half bits, rounding to nearest even (subnormals, overflow to inf, NaN kept). Written out
// rather than taken from cuda_fp16.h, so NVRTC needs no include path and the host emulation runs it too.
static __device__ inline unsigned short ef_half_bits(float value)
{
    union { float f; unsigned int u; } v;
    v.f = value;
    unsigned int sign = (v.u >> 16) & 0x8000u, mant = v.u & 0x7fffffu;
    int exp = (int)((v.u >> 23) & 0xffu);
    if (exp == 255) return (unsigned short)(sign | 0x7c00u | (mant ? 0x200u : 0u));
    exp += 15 - 127;
    if (exp >= 31) return (unsigned short)(sign | 0x7c00u);
    unsigned int half, rem, mid;
    if (exp <= 0) {  // a half subnormal (or zero)
        if (exp < -10) return (unsigned short)sign;
        mant |= 0x800000u;
        int shift = 14 - exp;
        half = mant >> shift, rem = mant & ((1u << shift) - 1u), mid = 1u << (shift - 1);
    } else {
        half = ((unsigned int)exp << 10) | (mant >> 13), rem = mant & 0x1fffu, mid = 0x1000u;
    }
    if (rem > mid || (rem == mid && (half & 1u))) ++half;  // a carry into the exponent is the right result
    return (unsigned short)(sign | half);
}

// uint8 frame (BGR, BGRx or RGB; pitched rows) -> letterbox (bilinear, half-pixel centres as OpenCV)
// -> (x - mean) / std -> CHW float32 (or float16 when dst_half) in the network's channel order.
// One thread per output pixel.
extern "C" __global__ void ef_preprocess(
    const unsigned char* src, int src_w, int src_h, int src_pitch, int src_channels, int src_is_rgb,
    void* dst, int dst_half, int dst_w, int dst_h, int new_w, int new_h, int pad_x, int pad_y, int out_rgb,
    float mean0, float mean1, float mean2, float inv_std0, float inv_std1, float inv_std2)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;
    float rgb[3];
    int ix = x - pad_x, iy = y - pad_y;
    bool inside = ix >= 0 && iy >= 0 && ix < new_w && iy < new_h;
    if (inside) {
        float sx = (ix + 0.5f) * ((float)src_w / (float)new_w) - 0.5f;
        float sy = (iy + 0.5f) * ((float)src_h / (float)new_h) - 0.5f;
        sx = fminf(fmaxf(sx, 0.0f), (float)(src_w - 1));
        sy = fminf(fmaxf(sy, 0.0f), (float)(src_h - 1));
        int x0 = (int)sx, y0 = (int)sy;
        int x1 = x0 + 1 < src_w ? x0 + 1 : x0, y1 = y0 + 1 < src_h ? y0 + 1 : y0;
        float fx = sx - x0, fy = sy - y0;
        const unsigned char* r0 = src + (long)y0 * src_pitch;
        const unsigned char* r1 = src + (long)y1 * src_pitch;
        for (int c = 0; c < 3; ++c) {
            float top = r0[x0 * src_channels + c] * (1.0f - fx) + r0[x1 * src_channels + c] * fx;
            float bottom = r1[x0 * src_channels + c] * (1.0f - fx) + r1[x1 * src_channels + c] * fx;
            rgb[src_is_rgb ? c : 2 - c] = top * (1.0f - fy) + bottom * fy;
        }
    }
    float mean[3] = {mean0, mean1, mean2};
    float inv_std[3] = {inv_std0, inv_std1, inv_std2};
    long plane = (long)dst_w * dst_h;
    for (int c = 0; c < 3; ++c) {
        float value = inside ? (rgb[out_rgb ? c : 2 - c] - mean[c]) * inv_std[c] : 0.0f;  // pad = mean
        long at = c * plane + (long)y * dst_w + x;
        if (dst_half) ((unsigned short*)dst)[at] = ef_half_bits(value);
        else ((float*)dst)[at] = value;
    }
}

// Face score (softmax of background/face logits), threshold, SSD decode of the survivors, compacted
// with an atomic counter (order is arbitrary; ef_rank restores a deterministic one). One thread per anchor.
extern "C" __global__ void ef_decode(
    const float* loc, const float* conf, const float* anchors, int num_anchors, float threshold,
    float variance0, float variance1, float down, int capacity,
    float* out_boxes, float* out_scores, int* out_anchor, int* out_count)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= num_anchors) return;
    float score = 1.0f / (1.0f + expf(conf[2 * i] - conf[2 * i + 1]));
    if (!(score > threshold)) return;
    int k = atomicAdd(out_count, 1);
    if (k >= capacity) return;
    const float* a = anchors + 4 * i;
    const float* d = loc + 4 * i;
    float cx = a[0] + d[0] * variance0 * a[2], cy = a[1] + d[1] * variance0 * a[3];
    float w = a[2] * expf(fminf(d[2] * variance1, EF_MAX_LOG_SIZE));
    float h = a[3] * expf(fminf(d[3] * variance1, EF_MAX_LOG_SIZE));
    cy += down * h;  // the spec's box_down: the boxes in another dataset's convention
    out_boxes[4 * k + 0] = cx - 0.5f * w;
    out_boxes[4 * k + 1] = cy - 0.5f * h;
    out_boxes[4 * k + 2] = cx + 0.5f * w;
    out_boxes[4 * k + 3] = cy + 0.5f * h;
    out_scores[k] = score;
    out_anchor[k] = i;
}

// Exact top-K selection in O(n) per pass, before ranking (whose cost is quadratic in what it ranks): radix select
// over unique 64-bit keys, the score's bits then the anchor index reversed (a higher score first, ties to the
// lower anchor, as ef_rank orders them), 8 bits per pass from the most significant. ef_select_histogram counts
// the candidates that match the prefix chosen so far by their next byte; ef_select_pick (one thread) chooses the
// byte of the K-th key and clears the histogram; after 8 passes the prefix is the K-th key itself and
// ef_select_compact keeps the candidates whose key is at least that: exactly K (all of them when n <= K).
static __device__ inline unsigned long long ef_key(const float* scores, const int* anchor, int i)
{
    union { float f; unsigned int u; } s;
    s.f = scores[i];  // scores are positive: their bits order as the values do
    return ((unsigned long long)s.u << 32) | (unsigned long long)(0xffffffffu - (unsigned int)anchor[i]);
}

static __device__ inline unsigned long long ef_prefix(const int* state)
{
    return ((unsigned long long)(unsigned int)state[EF_SEL_PREFIX_HI] << 32) | (unsigned int)state[EF_SEL_PREFIX_LO];
}

extern "C" __global__ void ef_select_histogram(const float* scores, const int* anchor, const int* count,
                                               int capacity, int pass, int* state)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int n = *count < capacity ? *count : capacity;
    if (i >= n || state[EF_SEL_ALL]) return;
    unsigned long long key = ef_key(scores, anchor, i);
    int shift = 56 - 8 * pass;
    if (pass > 0 && (key >> (shift + 8)) != (ef_prefix(state) >> (shift + 8))) return;
    atomicAdd(&state[(int)((key >> shift) & 255ULL)], 1);
}

extern "C" __global__ void ef_select_pick(const int* count, int capacity, int k, int pass, int* state)
{
    if (blockIdx.x * blockDim.x + threadIdx.x != 0) return;
    int n = *count < capacity ? *count : capacity;
    if (pass == 0) {
        state[EF_SEL_REMAINING] = k;
        state[EF_SEL_ALL] = n <= k;
    }
    if (!state[EF_SEL_ALL]) {
        int remaining = state[EF_SEL_REMAINING];
        int b = 255;
        for (; b > 0 && state[b] < remaining; --b) remaining -= state[b];
        unsigned long long prefix = ef_prefix(state) | ((unsigned long long)b << (56 - 8 * pass));
        state[EF_SEL_PREFIX_LO] = (int)(unsigned int)(prefix & 0xffffffffULL);
        state[EF_SEL_PREFIX_HI] = (int)(unsigned int)(prefix >> 32);
        state[EF_SEL_REMAINING] = remaining;
    }
    for (int b = 0; b < 256; ++b) state[b] = 0;
}

extern "C" __global__ void ef_select_compact(const float* boxes, const float* scores, const int* anchor,
                                             const int* count, int capacity, int* state, float* out_boxes,
                                             float* out_scores, int* out_anchor)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int n = *count < capacity ? *count : capacity;
    if (i >= n) return;
    if (!state[EF_SEL_ALL] && ef_key(scores, anchor, i) < ef_prefix(state)) return;
    int j = atomicAdd(&state[EF_SEL_COUNT], 1);
    for (int c = 0; c < 4; ++c) out_boxes[4 * j + c] = boxes[4 * i + c];
    out_scores[j] = scores[i];
    out_anchor[j] = anchor[i];
}

// Top-K by rank: a candidate's rank is the number ranked before it (higher score, or equal score and
// lower anchor index); candidates of rank < k are scattered to their place. The candidate count is read
// from device memory (ef_decode's counter), so nothing waits on the host between kernels and the whole
// sequence can be captured in a CUDA graph. One thread per possible candidate (`capacity`).
extern "C" __global__ void ef_rank(
    const float* boxes, const float* scores, const int* anchor, const int* count, int capacity, int k,
    float* sorted_boxes, float* sorted_scores, int* sorted_anchor, int* num_sorted)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int n = *count < capacity ? *count : capacity;
    if (i == 0) *num_sorted = n < k ? n : k;
    if (i >= n) return;
    float s = scores[i];
    int rank = 0;
    for (int j = 0; j < n; ++j)
        rank += scores[j] > s || (scores[j] == s && anchor[j] < anchor[i]);
    if (rank >= k) return;
    for (int c = 0; c < 4; ++c) sorted_boxes[4 * rank + c] = boxes[4 * i + c];
    sorted_scores[rank] = s;
    sorted_anchor[rank] = anchor[i];
}

// Bitmask NMS, step 1: bit b of mask[row][word] says box (64 * word + b) overlaps `row` by more than
// the threshold (only later boxes). `*num` boxes (<= 5120), rows of ceil(*num / 64) words. Grid: x over
// rows, y over 64-box words, both sized for the largest `*num`.
extern "C" __global__ void ef_nms_mask(const float* boxes, const int* num, float iou_threshold,
                                       unsigned long long* mask)
{
    int n = *num;
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    int word = blockIdx.y;
    int words = (n + 63) / 64;
    if (row >= n || word >= words) return;
    const float* a = boxes + 4 * row;
    float area_a = fmaxf(a[2] - a[0], 0.0f) * fmaxf(a[3] - a[1], 0.0f);
    unsigned long long bits = 0;
    for (int b = 0; b < 64; ++b) {
        int col = word * 64 + b;
        if (col >= n) break;
        if (col <= row) continue;
        const float* c = boxes + 4 * col;
        float iw = fmaxf(fminf(a[2], c[2]) - fmaxf(a[0], c[0]), 0.0f);
        float ih = fmaxf(fminf(a[3], c[3]) - fmaxf(a[1], c[1]), 0.0f);
        float inter = iw * ih;
        float uni = area_a + fmaxf(c[2] - c[0], 0.0f) * fmaxf(c[3] - c[1], 0.0f) - inter;
        if (uni > 0.0f && inter > iou_threshold * uni) bits |= 1ULL << b;
    }
    mask[(long)row * words + word] = bits;
}

// Bitmask NMS, step 2, and the final reduction, on the GPU so only the kept boxes travel back. One warp (launch
// one block of 32 threads) walks the boxes in score order, a 64-box word at a time; lane l holds the suppression
// bits of words l, l + 32 and l + 64 in registers. Within a word the boxes are decided in turn from the word's bits,
// each kept box adding its own row's bits for the word (shuffled from the lane that loaded them, so no memory
// access is in that chain); then each lane ORs the kept boxes' rows into its later words, and the kept boxes are
// written out as rows (x1, y1, x2, y2, score), at most `max_keep`, with their count in *num_keep.
extern "C" __global__ void ef_nms_reduce(const unsigned long long* mask, const float* sorted_boxes,
                                         const float* sorted_scores, const int* num, int max_keep,
                                         int* num_keep, float* kept)
{
    const unsigned full = 0xffffffffu;
    int lane = threadIdx.x;
    int n = *num < EF_MAX_NMS_WORDS * 64 ? *num : EF_MAX_NMS_WORDS * 64;
    int words = (n + 63) / 64;
    unsigned long long removed[EF_NMS_LANE_WORDS];
    for (int r = 0; r < EF_NMS_LANE_WORDS; ++r) removed[r] = 0;
    int count = 0;
    for (int word = 0; word < words && count < max_keep; ++word) {
        unsigned long long held = 0;
        for (int r = 0; r < EF_NMS_LANE_WORDS; ++r)  // unrolled: `removed` stays in registers
            if (r == word / 32) held = removed[r];
        unsigned long long suppressed = __shfl_sync(full, held, word % 32);
        int first = 64 * word, in_word = n - first < 64 ? n - first : 64;
        unsigned long long own_low = lane < in_word ? mask[(long)(first + lane) * words + word] : 0ULL;
        unsigned long long own_high = lane + 32 < in_word ? mask[(long)(first + lane + 32) * words + word] : 0ULL;
        unsigned long long keep = 0;
        for (int b = 0; b < in_word && count < max_keep; ++b) {
            if ((suppressed >> b) & 1ULL) continue;
            suppressed |= __shfl_sync(full, b < 32 ? own_low : own_high, b % 32);
            keep |= 1ULL << b;
            ++count;
        }
        int before = count - __popcll(keep);
        for (int half = 0; half < 2; ++half) {
            int b = lane + 32 * half;
            if (!((keep >> b) & 1ULL)) continue;
            int at = before + __popcll(keep & ((1ULL << b) - 1ULL));
            for (int c = 0; c < 4; ++c) kept[5 * at + c] = sorted_boxes[4 * (first + b) + c];
            kept[5 * at + 4] = sorted_scores[first + b];
        }
        for (unsigned long long rest = keep; rest; rest &= rest - 1ULL) {
            long row = (long)(first + __ffsll((long long)rest) - 1) * words;
            for (int r = 0; r < EF_NMS_LANE_WORDS; ++r) {
                int w = lane + 32 * r;
                if (w > word && w < words) removed[r] |= mask[row + w];
            }
        }
    }
    if (lane == 0) *num_keep = count;
}
