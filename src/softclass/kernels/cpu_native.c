/* Row loops of softclass's fused cross entropy on CPU (see softclass/kernels/cpu.py).
 *
 * Built at install time (setup.py: -O3 -march=native -fopenmp-simd) and loaded with
 * ctypes; Python splits the rows among worker threads and calls these functions on row ranges.
 * Logits rows have any int64 row stride and class stride 1; every offset is int64.
 * Element types: f32 (float), bf16 (uint16_t holding the top half of a float), f64 (double).
 * f32 and bf16 are computed in float ("real") with double row sums, f64 in double.
 *
 * Targets are class indices (int64, any stride). Per row n with logits x, L = log Σ_c exp(x_c),
 * class weights w (1 when class_weight is NULL), W = Σ_c w_c, smoothing ε, C classes and target y:
 *   kept rows (y ≠ ignore_index): loss_n = (1−ε)·w_y·(L − x_y) + (ε/C)·(W·L − Σ_c w_c x_c)
 *   ∂loss_n/∂x_c = p_c·((1−ε)·w_y + ε·W/C) − (1−ε)·w_y·[c = y] − (ε/C)·w_c,  p = exp(x − L);
 *   ignored rows: loss 0, row weight 0, gradient 0 (computed as the formula with scale 0).
 * Also softmax / log_softmax rows and their backward (softmax_forward_*, softmax_backward_*).
 *
 * The row math itself (log-sum-exp, the loss and gradient formulas, softmax and its backward, the
 * fast exp/log) lives in loss_rows.h, shared with the compiled MLP training loops
 * (softclass/training/mlp_native.c); this file holds the loops over rows: ranges, the
 * SIMD-across-rows tiles for few classes, the reductions and the target checks.
 */
#include "loss_rows.h"

#include <stdlib.h>
#ifdef _WIN32
#include <malloc.h>
#endif

/* Reused gradient blocks. The fused forward of a large batch writes a fresh gradient as large as
 * the logits (524 MB at 4096×32000 fp32) on every training step; memory that size comes from the
 * system (mmap) on each allocation and goes back on each free, and first-touching it costs one
 * page fault per 4 KiB: 160 ms of faults plus 33 ms of unmapping at 4096×32000 on the reference
 * machine, against 36 ms for the loop itself (huge pages cut the faults to ~22 ms but stalled
 * 0.2–2 s in compaction). gradient_block_* hands out such a block as a DLPack tensor (torch takes
 * it with torch.from_dlpack, softclass/kernels/native.py) whose deleter keeps it for the next
 * request instead of freeing it: one block, the last one released, reused by a request of at most
 * its size and more than half of it (anything else frees it). The block is never zeroed: the
 * gradient loops write every element. */
typedef struct {
    int32_t device_type, device_id;
} DLDevice;
typedef struct {
    uint8_t code, bits;
    uint16_t lanes;
} DLDataType;
typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape, *strides;
    uint64_t byte_offset;
} DLTensor;
typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

#define GRADIENT_BLOCK_MAX_DIMS 8
#define GRADIENT_BLOCK_ALIGNMENT 64

typedef struct {
    DLManagedTensor managed; /* first: the deleter's argument is the block itself */
    int64_t shape[GRADIENT_BLOCK_MAX_DIMS];
    void *memory;
    size_t capacity; /* bytes */
} GradientBlock;

/* The block kept for the next request (NULL: none), exchanged atomically: a deleter may run on
 * any thread. */
static GradientBlock *kept_gradient_block = NULL;

static void gradient_block_free(GradientBlock *block) {
    if (!block) return;
#ifdef _WIN32
    _aligned_free(block->memory);
#else
    free(block->memory);
#endif
    free(block);
}

/* The DLPack deleter: keep the block, free the one kept before. Also called by native.py when
 * torch refuses the capsule, so that the block is not lost. */
void gradient_block_release(DLManagedTensor *managed) {
    GradientBlock *block = (GradientBlock *)managed;
    gradient_block_free(__atomic_exchange_n(&kept_gradient_block, block, __ATOMIC_ACQ_REL));
}

/* An uninitialised contiguous tensor of shape[0..ndim) (ndim <= GRADIENT_BLOCK_MAX_DIMS) and the
 * DLPack dtype (code, bits) (float 2, bfloat 4), as a DLManagedTensor for torch.from_dlpack: the
 * kept block when it fits, else a new one. NULL when the memory cannot be had. */
DLManagedTensor *gradient_block_take(const int64_t *shape, int64_t ndim, int64_t code,
                                     int64_t bits) {
    if (ndim < 0 || ndim > GRADIENT_BLOCK_MAX_DIMS) return NULL;
    size_t bytes = (size_t)bits / 8;
    for (int64_t d = 0; d < ndim; ++d) bytes *= (size_t)shape[d];
    GradientBlock *block = __atomic_exchange_n(&kept_gradient_block, NULL, __ATOMIC_ACQ_REL);
    if (block && (block->capacity < bytes || block->capacity / 2 >= bytes)) {
        gradient_block_free(block);
        block = NULL;
    }
    if (!block) {
        block = calloc(1, sizeof *block);
        if (!block) return NULL;
        const size_t rounded = (bytes + GRADIENT_BLOCK_ALIGNMENT - 1)
                               / GRADIENT_BLOCK_ALIGNMENT * GRADIENT_BLOCK_ALIGNMENT;
#ifdef _WIN32
        block->memory = _aligned_malloc(rounded ? rounded : 1, GRADIENT_BLOCK_ALIGNMENT);
#else
        if (posix_memalign(&block->memory, GRADIENT_BLOCK_ALIGNMENT, rounded ? rounded : 1))
            block->memory = NULL;
#endif
        if (!block->memory) {
            free(block);
            return NULL;
        }
        block->capacity = rounded;
    }
    for (int64_t d = 0; d < ndim; ++d) block->shape[d] = shape[d];
    DLTensor *tensor = &block->managed.dl_tensor;
    memset(tensor, 0, sizeof *tensor);
    tensor->data = block->memory;
    tensor->device.device_type = 1; /* kDLCPU */
    tensor->ndim = (int32_t)ndim;
    tensor->dtype.code = (uint8_t)code;
    tensor->dtype.bits = (uint8_t)bits;
    tensor->dtype.lanes = 1;
    tensor->shape = block->shape;
    tensor->strides = NULL; /* contiguous */
    block->managed.manager_ctx = block;
    block->managed.deleter = gradient_block_release;
    return &block->managed;
}

/* Free the kept block (if any) now. */
void gradient_block_drop(void) {
    gradient_block_free(__atomic_exchange_n(&kept_gradient_block, NULL, __ATOMIC_ACQ_REL));
}

/* Up to TILE_MAX_CLASSES classes, rows are processed TILE_ROWS at a time, transposed into a
 * [class][row] tile so that every step (max, exp, sum, log) runs in SIMD lanes across rows: a
 * row-at-a-time loop over 3 or 10 classes is bound by the latency of its exp/log chain (~55 ns
 * per row at 256x3 against ~5 ns tiled). */
#define TILE_ROWS 16
#define TILE_MAX_CLASSES 32
/* The backward's per-class loop vectorises by itself from ~8 classes on; below, tiles win
 * (measured 8192 rows: 2–5 classes 8–12 ns/row tiled against 13–22 per row; 16 and 32 classes
 * 16 and 31 tiled against 6 and 9 per row). */
#define BACKWARD_TILE_MAX_CLASSES 7

/* W = Σ_c w_c (C when class_weight is NULL), in double. */
#define DEFINE_WEIGHT_TOTAL(SUFFIX, REAL)                                                        \
    static double weight_total_##SUFFIX(const REAL *class_weight, int64_t n_classes) {          \
        if (!class_weight) return (double)n_classes;                                            \
        double total = 0.0;                                                                     \
        for (int64_t c = 0; c < n_classes; ++c) total += class_weight[c];                       \
        return total;                                                                           \
    }

/* values[c][r] = x[row0 + r, c] for r < rows, 0 for the padding rows up to TILE_ROWS. */
#define DEFINE_LOAD_TILE(SUFFIX, TYPE, REAL)                                                     \
    static inline void load_tile_##SUFFIX(const TYPE *logits, int64_t row_stride,               \
                                          int64_t n_classes, int64_t row0, int64_t rows,        \
                                          REAL values[TILE_MAX_CLASSES][TILE_ROWS]) {           \
        for (int64_t r = 0; r < rows; ++r) {                                                    \
            const TYPE *row = logits + (row0 + r) * row_stride;                                 \
            for (int64_t c = 0; c < n_classes; ++c) values[c][r] = load_##SUFFIX(row, c);       \
        }                                                                                       \
        for (int64_t r = rows; r < TILE_ROWS; ++r)                                              \
            for (int64_t c = 0; c < n_classes; ++c) values[c][r] = 0;                           \
    }

/* The gradient scales of row n (ce_gradient_scales of loss_rows.h) for the upstream gradient
 * grad_output[n·grad_output_stride] (divided by *denominator when not NULL: 'mean'); an ignored
 * row gets scale 0. *safe_target = its target (0 for an ignored row). */
#define DEFINE_ROW_GRADIENT_SCALES(SUFFIX, REAL)                                                 \
    static inline CeGradientScales row_gradient_scales_##SUFFIX(                                \
        int64_t n, const int64_t *target, int64_t target_stride, int64_t ignore_index,          \
        const REAL *class_weight, double label_smoothing, int64_t n_classes,                    \
        double weight_total, const REAL *grad_output, int64_t grad_output_stride,               \
        const double *denominator, int64_t *safe_target) {                                      \
        const int64_t target_value = target[n * target_stride];                                 \
        const int kept = target_value != ignore_index;                                          \
        const int64_t y = kept ? target_value : 0;                                              \
        double row_scale = 0.0;                                                                 \
        if (kept) {                                                                             \
            row_scale = (double)grad_output[n * grad_output_stride];                            \
            if (denominator) row_scale /= *denominator;                                         \
        }                                                                                       \
        const double target_weight = kept && class_weight ? (double)class_weight[y] : 1.0;      \
        *safe_target = y;                                                                       \
        return ce_gradient_scales(row_scale, target_weight, label_smoothing, n_classes,         \
                                  weight_total);                                                \
    }

/* The tiled backward of rows [row0, row0 + rows): as ce_backward_* below (n_classes <=
 * BACKWARD_TILE_MAX_CLASSES <= TILE_MAX_CLASSES). The whole tile is read before any of it is written (grad may be logits). */
#define DEFINE_BACKWARD_TILE(SUFFIX, TYPE, REAL)                                                 \
    static void backward_tile_##SUFFIX(                                                         \
        const TYPE *logits, int64_t row_stride, int64_t n_classes, int64_t row0, int64_t rows,  \
        const int64_t *target, int64_t target_stride, int64_t ignore_index,                     \
        const REAL *class_weight, double label_smoothing, double weight_total,                  \
        const REAL *logsumexp, const REAL *grad_output, int64_t grad_output_stride,             \
        const double *denominator, TYPE *grad, int64_t grad_row_stride) {                       \
        REAL values[TILE_MAX_CLASSES][TILE_ROWS];                                               \
        REAL lse[TILE_ROWS], scale[TILE_ROWS], smoothing_scale[TILE_ROWS];                      \
        REAL true_class[TILE_ROWS];                                                             \
        int64_t safe_target[TILE_ROWS];                                                         \
        load_tile_##SUFFIX(logits, row_stride, n_classes, row0, rows, values);                  \
        for (int64_t r = 0; r < TILE_ROWS; ++r) {                                               \
            lse[r] = 0;                                                                         \
            scale[r] = 0;                                                                       \
            smoothing_scale[r] = 0;                                                             \
            true_class[r] = 0;                                                                  \
            safe_target[r] = 0;                                                                 \
        }                                                                                       \
        for (int64_t r = 0; r < rows; ++r) {                                                    \
            const int64_t n = row0 + r;                                                         \
            const CeGradientScales scales = row_gradient_scales_##SUFFIX(                      \
                n, target, target_stride, ignore_index, class_weight, label_smoothing,          \
                n_classes, weight_total, grad_output, grad_output_stride, denominator,          \
                &safe_target[r]);                                                               \
            lse[r] = logsumexp[n];                                                              \
            true_class[r] = (REAL)scales.true_class;                                            \
            smoothing_scale[r] = (REAL)scales.smoothing_scale;                                  \
            scale[r] = (REAL)scales.scale;                                                      \
        }                                                                                       \
        for (int64_t c = 0; c < n_classes; ++c) {                                               \
            const REAL w = class_weight ? class_weight[c] : (REAL)1;                            \
            _Pragma("omp simd")                                                                 \
            for (int64_t r = 0; r < TILE_ROWS; ++r)                                             \
                values[c][r] = ce_gradient_value_##SUFFIX(values[c][r], lse[r], scale[r],       \
                                                          smoothing_scale[r] * w);              \
        }                                                                                       \
        for (int64_t r = 0; r < rows; ++r) {                                                    \
            values[safe_target[r]][r] -= true_class[r];                                         \
            TYPE *grad_row = grad + (row0 + r) * grad_row_stride;                               \
            for (int64_t c = 0; c < n_classes; ++c) store_##SUFFIX(grad_row, c, values[c][r]);  \
        }                                                                                       \
    }

/* The tiled forward of rows [row0, row0 + rows), rows <= TILE_ROWS, n_classes <=
 * TILE_MAX_CLASSES: as ce_forward_* below, adding into *loss_sum and *weight_sum. */
#define DEFINE_FORWARD_TILE(SUFFIX, TYPE, REAL)                                                  \
    static int64_t forward_tile_##SUFFIX(                                                       \
        const TYPE *logits, int64_t row_stride, int64_t n_classes, int64_t row0, int64_t rows,  \
        const int64_t *target, int64_t target_stride, int64_t ignore_index,                     \
        const REAL *class_weight, double label_smoothing, double weight_total,                  \
        REAL *logsumexp, TYPE *row_loss, int64_t row_loss_stride, double *loss_sum,             \
        double *weight_sum) {                                                                   \
        REAL values[TILE_MAX_CLASSES][TILE_ROWS];                                               \
        REAL row_max[TILE_ROWS], shift[TILE_ROWS], total[TILE_ROWS], weighted[TILE_ROWS];       \
        double tile_logsumexp[TILE_ROWS];                                                       \
        int64_t targets[TILE_ROWS];                                                             \
        for (int64_t r = 0; r < rows; ++r) {                                                    \
            const int64_t y = target[(row0 + r) * target_stride];                               \
            if (y != ignore_index && (y < 0 || y >= n_classes)) return row0 + r;                \
            targets[r] = y;                                                                     \
        }                                                                                       \
        load_tile_##SUFFIX(logits, row_stride, n_classes, row0, rows, values);                  \
        for (int64_t r = 0; r < TILE_ROWS; ++r) {                                               \
            row_max[r] = -(REAL)__builtin_inf();                                                \
            total[r] = 0;                                                                       \
            weighted[r] = 0;                                                                    \
        }                                                                                       \
        for (int64_t c = 0; c < n_classes; ++c) {                                               \
            _Pragma("omp simd")                                                                 \
            for (int64_t r = 0; r < TILE_ROWS; ++r)                                             \
                row_max[r] = values[c][r] > row_max[r] ? values[c][r] : row_max[r];             \
        }                                                                                       \
        _Pragma("omp simd")                                                                     \
        for (int64_t r = 0; r < TILE_ROWS; ++r)                                                 \
            shift[r] = logsumexp_shift_##SUFFIX(row_max[r]);                                    \
        for (int64_t c = 0; c < n_classes; ++c) {                                               \
            _Pragma("omp simd")                                                                 \
            for (int64_t r = 0; r < TILE_ROWS; ++r)                                             \
                total[r] += exp_##SUFFIX(values[c][r] - shift[r]);                              \
        }                                                                                       \
        _Pragma("omp simd")                                                                     \
        for (int64_t r = 0; r < TILE_ROWS; ++r)                                                 \
            tile_logsumexp[r] = (double)shift[r] + log_f64((double)total[r]);                   \
        if (label_smoothing > 0.0) {                                                            \
            for (int64_t c = 0; c < n_classes; ++c) {                                           \
                const REAL w = class_weight ? class_weight[c] : (REAL)1;                        \
                _Pragma("omp simd")                                                             \
                for (int64_t r = 0; r < TILE_ROWS; ++r) weighted[r] += w * values[c][r];        \
            }                                                                                   \
        }                                                                                       \
        for (int64_t r = 0; r < rows; ++r) {                                                    \
            const int64_t n = row0 + r;                                                         \
            const double row_logsumexp = tile_logsumexp[r];                                     \
            logsumexp[n] = (REAL)row_logsumexp;                                                 \
            const int64_t y = targets[r];                                                       \
            double loss = 0.0;                                                                  \
            if (y != ignore_index) {                                                            \
                const double target_weight = class_weight ? (double)class_weight[y] : 1.0;      \
                loss = ce_row_loss(row_logsumexp, (double)values[y][r], target_weight,          \
                                   label_smoothing, n_classes, weight_total,                    \
                                   (double)weighted[r]);                                        \
                *weight_sum += target_weight;                                                   \
            }                                                                                   \
            if (row_loss) store_##SUFFIX(row_loss, n * row_loss_stride, (REAL)loss);            \
            *loss_sum += loss;                                                                  \
        }                                                                                       \
        return -1;                                                                              \
    }

/* One row n of the forward (any number of classes): returns 1 if its kept target is out of
 * range (nothing else done), else 0 after writing its outputs and adding to the sums. */
#define DEFINE_FORWARD_ROW(SUFFIX, TYPE, REAL)                                                   \
    ROW_FUNCTION int forward_row_##SUFFIX(                                                       \
        const TYPE *logits, int64_t row_stride, int64_t n_classes, int64_t n,                    \
        const int64_t *target, int64_t target_stride, int64_t ignore_index,                      \
        const REAL *class_weight, double label_smoothing, double weight_total,                   \
        REAL *logsumexp, TYPE *row_loss, int64_t row_loss_stride, double *loss_sum,              \
        double *weight_sum) {                                                                    \
        const int64_t y = target[n * target_stride];                                             \
        const int kept = y != ignore_index;                                                      \
        if (kept && (y < 0 || y >= n_classes)) return 1;                                         \
        const TYPE *row = logits + n * row_stride;                                               \
        double weighted_logits = 0.0;                                                            \
        const double row_logsumexp = logsumexp_row_##SUFFIX(                                     \
            row, n_classes, class_weight, label_smoothing > 0.0 ? &weighted_logits : NULL);      \
        logsumexp[n] = (REAL)row_logsumexp;                                                      \
        double loss = 0.0;                                                                       \
        if (kept) {                                                                              \
            const double target_weight = class_weight ? (double)class_weight[y] : 1.0;           \
            loss = ce_row_loss(row_logsumexp, (double)load_##SUFFIX(row, y), target_weight,      \
                               label_smoothing, n_classes, weight_total, weighted_logits);       \
            *weight_sum += target_weight;                                                        \
        }                                                                                        \
        if (row_loss) store_##SUFFIX(row_loss, n * row_loss_stride, (REAL)loss);                 \
        *loss_sum += loss;                                                                       \
        return 0;                                                                                \
    }

/* forward_row_* that also writes the row's gradient for a unit grad_output (divided by
 * *grad_denominator when not NULL) with one exp per logit: the exps of the log-sum-exp pass are
 * kept in the gradient row (in cache) and scaled by scale/Σ, p_c·scale = e_c·(scale/Σ), instead
 * of being computed again as exp(x_c − L). For TYPE == REAL (a bf16 row would round the exps
 * before scaling them). Returns 1 if the kept target is out of range (nothing written), else 0. */
#define DEFINE_FORWARD_GRADIENT_ROW(SUFFIX, TYPE, REAL)                                          \
    static int forward_gradient_row_##SUFFIX(                                                   \
        const TYPE *logits, int64_t row_stride, int64_t n_classes, int64_t n,                   \
        const int64_t *target, int64_t target_stride, int64_t ignore_index,                     \
        const REAL *class_weight, double label_smoothing, double weight_total,                  \
        REAL *logsumexp, TYPE *row_loss, int64_t row_loss_stride, double *loss_sum,             \
        double *weight_sum, TYPE *grad, int64_t grad_row_stride,                                \
        const double *grad_denominator) {                                                       \
        const int64_t target_value = target[n * target_stride];                                 \
        const int kept = target_value != ignore_index;                                          \
        if (kept && (target_value < 0 || target_value >= n_classes)) return 1;                  \
        const TYPE *row = logits + n * row_stride;                                              \
        TYPE *grad_row = grad + n * grad_row_stride;                                            \
        REAL max_value = -(REAL)__builtin_inf();                                                \
        _Pragma("omp simd reduction(max : max_value)")                                          \
        for (int64_t c = 0; c < n_classes; ++c) {                                               \
            const REAL value = load_##SUFFIX(row, c);                                           \
            max_value = value > max_value ? value : max_value;                                  \
        }                                                                                       \
        const REAL shift = logsumexp_shift_##SUFFIX(max_value);                                 \
        double total = 0.0;                                                                     \
        for (int64_t chunk = 0; chunk < n_classes; chunk += SUM_CHUNK) {                        \
            const int64_t chunk_end = chunk + SUM_CHUNK < n_classes ? chunk + SUM_CHUNK         \
                                                                    : n_classes;                \
            REAL partial = 0;                                                                   \
            _Pragma("omp simd reduction(+ : partial)")                                          \
            for (int64_t c = chunk; c < chunk_end; ++c) {                                       \
                const REAL e = exp_##SUFFIX(load_##SUFFIX(row, c) - shift);                     \
                store_##SUFFIX(grad_row, c, e);                                                 \
                partial += e;                                                                   \
            }                                                                                   \
            total += partial;                                                                   \
        }                                                                                       \
        double weighted_logits = 0.0; /* Σ_c w_c·x_c, summed as logsumexp_row_* does */       \
        for (int64_t chunk = 0; label_smoothing > 0.0 && chunk < n_classes; chunk += SUM_CHUNK) { \
            const int64_t chunk_end = chunk + SUM_CHUNK < n_classes ? chunk + SUM_CHUNK         \
                                                                    : n_classes;                \
            REAL weighted_partial = 0;                                                          \
            _Pragma("omp simd reduction(+ : weighted_partial)")                                 \
            for (int64_t c = chunk; c < chunk_end; ++c)                                         \
                weighted_partial +=                                                             \
                    (class_weight ? class_weight[c] : (REAL)1) * load_##SUFFIX(row, c);         \
            weighted_logits += weighted_partial;                                                \
        }                                                                                       \
        const double row_logsumexp = (double)shift + log(total);                                \
        logsumexp[n] = (REAL)row_logsumexp;                                                     \
        const REAL unit = 1;                                                                    \
        int64_t y;                                                                              \
        const CeGradientScales scales = row_gradient_scales_##SUFFIX(                          \
            n, target, target_stride, ignore_index, class_weight, label_smoothing, n_classes,   \
            weight_total, &unit, 0, grad_denominator, &y);                                      \
        double loss = 0.0;                                                                      \
        if (kept) {                                                                             \
            const double target_weight = class_weight ? (double)class_weight[y] : 1.0;          \
            loss = ce_row_loss(row_logsumexp, (double)load_##SUFFIX(row, y), target_weight,     \
                               label_smoothing, n_classes, weight_total, weighted_logits);      \
            *weight_sum += target_weight;                                                       \
        }                                                                                       \
        if (row_loss) store_##SUFFIX(row_loss, n * row_loss_stride, (REAL)loss);                \
        *loss_sum += loss;                                                                      \
        const REAL factor = (REAL)(scales.scale / total);                                       \
        const REAL smoothing_scale = (REAL)scales.smoothing_scale;                              \
        const REAL target_smoothing = label_smoothing > 0.0                                     \
            ? smoothing_scale * (class_weight ? class_weight[y] : (REAL)1) : (REAL)0;           \
        const REAL uniform_smoothing = label_smoothing > 0.0 ? smoothing_scale : (REAL)0;       \
        const REAL true_value = (load_##SUFFIX(grad_row, y) * factor - (REAL)scales.true_class) \
                                - target_smoothing;                                             \
        if (label_smoothing > 0.0 && class_weight) {                                            \
            _Pragma("omp simd")                                                                 \
            for (int64_t c = 0; c < n_classes; ++c)                                             \
                store_##SUFFIX(grad_row, c, load_##SUFFIX(grad_row, c) * factor                 \
                                                - smoothing_scale * class_weight[c]);           \
        } else {                                                                                \
            _Pragma("omp simd")                                                                 \
            for (int64_t c = 0; c < n_classes; ++c)                                             \
                store_##SUFFIX(grad_row, c,                                                     \
                               load_##SUFFIX(grad_row, c) * factor - uniform_smoothing);        \
        }                                                                                       \
        store_##SUFFIX(grad_row, y, true_value);                                                \
        return 0;                                                                               \
    }

/* Forward over rows [row_begin, row_end): logsumexp[n] = L_n; row_loss[n·row_loss_stride] =
 * loss_n in the logits' type (when row_loss is not NULL); sums[0] = Σ loss_n and
 * sums[1] = Σ w_y over kept rows of the range, in double. When loss is not NULL (a call that
 * covers every row), also reduces the sums as ce_finish_* does. When grad is not NULL, also writes
 * the gradient of the reduced loss for a unit grad_output (divided by *grad_denominator when that
 * is not NULL: 'mean'), row by row while each row is in cache. Returns −1, or the first row whose
 * kept target lies outside [0, C) (nothing is read through it; the outputs are then incomplete). */
#define DEFINE_FORWARD(SUFFIX, TYPE, REAL)                                                       \
    int64_t ce_forward_##SUFFIX(const TYPE *logits, int64_t row_stride, int64_t n_classes,      \
                                int64_t row_begin, int64_t row_end, const int64_t *target,      \
                                int64_t target_stride, int64_t ignore_index,                    \
                                const REAL *class_weight, double label_smoothing,               \
                                REAL *logsumexp, TYPE *row_loss, int64_t row_loss_stride,       \
                                double *sums, int64_t mean, TYPE *loss, double *denominator,    \
                                TYPE *grad, int64_t grad_row_stride,                            \
                                const double *grad_denominator) {                               \
        const REAL unit = 1;                                                                    \
        const int smoothing = label_smoothing > 0.0;                                            \
        const double weight_total =                                                             \
            smoothing ? weight_total_##SUFFIX(class_weight, n_classes) : 0.0;                   \
        double loss_sum = 0.0;                                                                  \
        double weight_sum = 0.0;                                                                \
        if (n_classes <= TILE_MAX_CLASSES) {                                                    \
            for (int64_t row0 = row_begin; row0 < row_end; row0 += TILE_ROWS) {                 \
                const int64_t rows =                                                            \
                    row_end - row0 < TILE_ROWS ? row_end - row0 : TILE_ROWS;                    \
                const int64_t bad = forward_tile_##SUFFIX(                                      \
                    logits, row_stride, n_classes, row0, rows, target, target_stride,           \
                    ignore_index, class_weight, label_smoothing, weight_total, logsumexp,       \
                    row_loss, row_loss_stride, &loss_sum, &weight_sum);                         \
                if (bad >= 0) return bad;                                                       \
                if (grad)                                                                       \
                    backward_rows_##SUFFIX(logits, row_stride, n_classes, row0, row0 + rows,    \
                                           target, target_stride, ignore_index, class_weight,   \
                                           label_smoothing, weight_total, logsumexp, &unit, 0,  \
                                           grad_denominator, grad, grad_row_stride);            \
            }                                                                                   \
        } else {                                                                                \
            for (int64_t n = row_begin; n < row_end; ++n) {                                     \
                if (grad && sizeof(TYPE) == sizeof(REAL)) {                                     \
                    if (forward_gradient_row_##SUFFIX(                                          \
                            logits, row_stride, n_classes, n, target, target_stride,            \
                            ignore_index, class_weight, label_smoothing, weight_total,          \
                            logsumexp, row_loss, row_loss_stride, &loss_sum, &weight_sum, grad, \
                            grad_row_stride, grad_denominator))                                 \
                        return n;                                                               \
                    continue;                                                                   \
                }                                                                               \
                if (forward_row_##SUFFIX(logits, row_stride, n_classes, n, target, target_stride, \
                                         ignore_index, class_weight, label_smoothing,           \
                                         weight_total, logsumexp, row_loss, row_loss_stride,    \
                                         &loss_sum, &weight_sum))                               \
                    return n;                                                                   \
                /* the row is still in cache: its gradient costs one write, not a re-read */    \
                if (grad)                                                                       \
                    backward_rows_##SUFFIX(logits, row_stride, n_classes, n, n + 1, target,     \
                                           target_stride, ignore_index, class_weight,           \
                                           label_smoothing, weight_total, logsumexp, &unit, 0,  \
                                           grad_denominator, grad, grad_row_stride);            \
            }                                                                                   \
        }                                                                                       \
        sums[0] = loss_sum;                                                                     \
        sums[1] = weight_sum;                                                                   \
        if (loss) ce_finish_##SUFFIX(sums, 1, mean, loss, denominator);                         \
        return -1;                                                                              \
    }

/* Reduce the per-range sums (n_parts pairs) of the forward: *loss = Σ loss (mean != 0: divided
 * by Σ w_y, NaN when no row is kept) in the logits' type; *denominator = Σ w_y. */
#define DEFINE_FINISH(SUFFIX, TYPE, REAL)                                                        \
    void ce_finish_##SUFFIX(const double *sums, int64_t n_parts, int64_t mean, TYPE *loss,      \
                            double *denominator) {                                              \
        double loss_sum = 0.0;                                                                  \
        double weight_sum = 0.0;                                                                \
        for (int64_t part = 0; part < n_parts; ++part) {                                        \
            loss_sum += sums[2 * part];                                                         \
            weight_sum += sums[2 * part + 1];                                                   \
        }                                                                                       \
        store_##SUFFIX(loss, 0, (REAL)(mean ? loss_sum / weight_sum : loss_sum));               \
        *denominator = weight_sum;                                                              \
    }

/* Backward over rows [row_begin, row_end): grad[n, c] = ∂output/∂x[n, c] with
 * ∂output/∂loss_n = grad_output[n·grad_output_stride] (stride 0 for a 0-d grad_output), divided
 * by *denominator when it is not NULL ('mean'). grad may be the logits buffer itself (each element
 * is read before it is written). The true-class element is recomputed and rounded once. */
#define DEFINE_BACKWARD(SUFFIX, TYPE, REAL)                                                      \
    static void backward_rows_##SUFFIX(                                                         \
        const TYPE *logits, int64_t row_stride, int64_t n_classes, int64_t row_begin,           \
        int64_t row_end, const int64_t *target, int64_t target_stride, int64_t ignore_index,    \
        const REAL *class_weight, double label_smoothing, double weight_total,                  \
        const REAL *logsumexp, const REAL *grad_output, int64_t grad_output_stride,             \
        const double *denominator, TYPE *grad, int64_t grad_row_stride) {                       \
        const int smoothing = label_smoothing > 0.0;                                            \
        if (n_classes <= BACKWARD_TILE_MAX_CLASSES) {                                           \
            for (int64_t row0 = row_begin; row0 < row_end; row0 += TILE_ROWS)                   \
                backward_tile_##SUFFIX(                                                         \
                    logits, row_stride, n_classes, row0,                                        \
                    row_end - row0 < TILE_ROWS ? row_end - row0 : TILE_ROWS, target,            \
                    target_stride, ignore_index, class_weight, label_smoothing, weight_total,   \
                    logsumexp, grad_output, grad_output_stride, denominator, grad,              \
                    grad_row_stride);                                                           \
            return;                                                                             \
        }                                                                                       \
        for (int64_t n = row_begin; n < row_end; ++n) {                                         \
            int64_t y;                                                                          \
            const CeGradientScales scales = row_gradient_scales_##SUFFIX(                      \
                n, target, target_stride, ignore_index, class_weight, label_smoothing,          \
                n_classes, weight_total, grad_output, grad_output_stride, denominator, &y);     \
            ce_gradient_row_##SUFFIX(logits + n * row_stride, n_classes, logsumexp[n], y,      \
                                     scales, smoothing, class_weight,                           \
                                     grad + n * grad_row_stride);                               \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    void ce_backward_##SUFFIX(const TYPE *logits, int64_t row_stride, int64_t n_classes,        \
                              int64_t row_begin, int64_t row_end, const int64_t *target,        \
                              int64_t target_stride, int64_t ignore_index,                      \
                              const REAL *class_weight, double label_smoothing,                 \
                              const REAL *logsumexp, const REAL *grad_output,                   \
                              int64_t grad_output_stride, const double *denominator,            \
                              TYPE *grad, int64_t grad_row_stride) {                            \
        const double weight_total = label_smoothing > 0.0                                       \
            ? weight_total_##SUFFIX(class_weight, n_classes) : 0.0;                             \
        backward_rows_##SUFFIX(logits, row_stride, n_classes, row_begin, row_end, target,       \
                               target_stride, ignore_index, class_weight, label_smoothing,      \
                               weight_total, logsumexp, grad_output, grad_output_stride,        \
                               denominator, grad, grad_row_stride);                             \
    }                                                                                           \
                                                                                                \
    /* grad[n, c] *= *factor for rows [row_begin, row_end) (nothing to do when it is 1). */     \
    void ce_scale_##SUFFIX(TYPE *grad, int64_t grad_row_stride, int64_t n_classes,              \
                           int64_t row_begin, int64_t row_end, const REAL *factor) {            \
        const REAL value = *factor;                                                             \
        if (value == (REAL)1) return;                                                           \
        for (int64_t n = row_begin; n < row_end; ++n) {                                         \
            TYPE *grad_row = grad + n * grad_row_stride;                                        \
            _Pragma("omp simd")                                                                 \
            for (int64_t c = 0; c < n_classes; ++c)                                             \
                store_##SUFFIX(grad_row, c, load_##SUFFIX(grad_row, c) * value);                \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* *out = Σ w_y over rows whose target is kept and in [0, C) (the 'mean' denominator). */   \
    void ce_kept_weight_sum_##SUFFIX(const int64_t *target, int64_t target_stride,              \
                                     int64_t n_rows, int64_t ignore_index, int64_t n_classes,   \
                                     const REAL *class_weight, double *out) {                   \
        double total = 0.0;                                                                     \
        for (int64_t n = 0; n < n_rows; ++n) {                                                  \
            const int64_t y = target[n * target_stride];                                        \
            if (y != ignore_index && y >= 0 && y < n_classes)                                   \
                total += class_weight ? (double)class_weight[y] : 1.0;                          \
        }                                                                                       \
        *out = total;                                                                           \
    }

/* softmax / log_softmax of rows [row_begin, row_end) along the (stride-1) class dimension:
 * out_n = exp(x_n − m − log Σ exp(x_n − m)) with m the row max (log_output: the exponent itself).
 * A row whose max is ±inf (a +inf, or all −inf) is NaN throughout, as torch computes it.
 * Up to TILE_MAX_CLASSES classes, TILE_ROWS rows at a time across SIMD lanes (each exp computed
 * once); else softmax_row_* of loss_rows.h row by row. */
#define DEFINE_SOFTMAX_FORWARD(SUFFIX, TYPE, REAL)                                               \
    static void softmax_tile_##SUFFIX(const TYPE *input, int64_t row_stride, int64_t n_classes,  \
                                      int64_t row0, int64_t rows, TYPE *out,                     \
                                      int64_t out_row_stride, int64_t log_output) {              \
        REAL values[TILE_MAX_CLASSES][TILE_ROWS];                                                \
        REAL exps[TILE_MAX_CLASSES][TILE_ROWS];                                                  \
        REAL row_max[TILE_ROWS], total[TILE_ROWS], factor[TILE_ROWS];                            \
        load_tile_##SUFFIX(input, row_stride, n_classes, row0, rows, values);                    \
        for (int64_t r = 0; r < TILE_ROWS; ++r) {                                                \
            row_max[r] = -(REAL)__builtin_inf();                                                 \
            total[r] = 0;                                                                        \
        }                                                                                        \
        for (int64_t c = 0; c < n_classes; ++c) {                                                \
            _Pragma("omp simd")                                                                  \
            for (int64_t r = 0; r < TILE_ROWS; ++r)                                              \
                row_max[r] = values[c][r] > row_max[r] ? values[c][r] : row_max[r];              \
        }                                                                                        \
        for (int64_t c = 0; c < n_classes; ++c) {                                                \
            _Pragma("omp simd")                                                                  \
            for (int64_t r = 0; r < TILE_ROWS; ++r) {                                            \
                exps[c][r] = exp_##SUFFIX(values[c][r] - row_max[r]);                            \
                total[r] += exps[c][r];                                                          \
            }                                                                                    \
        }                                                                                        \
        for (int64_t r = 0; r < TILE_ROWS; ++r)                                                  \
            factor[r] = log_output ? (REAL)log((double)total[r]) : (REAL)(1.0 / (double)total[r]); \
        for (int64_t r = 0; r < rows; ++r) {                                                     \
            TYPE *out_row = out + (row0 + r) * out_row_stride;                                   \
            if (row_max[r] == (REAL)__builtin_inf() || row_max[r] == -(REAL)__builtin_inf()) {   \
                for (int64_t c = 0; c < n_classes; ++c)                                          \
                    store_##SUFFIX(out_row, c, (REAL)__builtin_nan(""));                         \
            } else if (log_output) {                                                             \
                for (int64_t c = 0; c < n_classes; ++c)                                          \
                    store_##SUFFIX(out_row, c, (values[c][r] - row_max[r]) - factor[r]);         \
            } else {                                                                             \
                for (int64_t c = 0; c < n_classes; ++c)                                          \
                    store_##SUFFIX(out_row, c, exps[c][r] * factor[r]);                          \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
                                                                                                 \
    void softmax_forward_##SUFFIX(const TYPE *input, int64_t row_stride, int64_t n_classes,     \
                                  int64_t row_begin, int64_t row_end, TYPE *out,                 \
                                  int64_t out_row_stride, int64_t log_output) {                  \
        if (n_classes <= TILE_MAX_CLASSES) {                                                     \
            for (int64_t row0 = row_begin; row0 < row_end; row0 += TILE_ROWS)                    \
                softmax_tile_##SUFFIX(input, row_stride, n_classes, row0,                        \
                                      row_end - row0 < TILE_ROWS ? row_end - row0 : TILE_ROWS,   \
                                      out, out_row_stride, log_output);                          \
            return;                                                                              \
        }                                                                                        \
        for (int64_t n = row_begin; n < row_end; ++n)                                            \
            softmax_row_##SUFFIX(input + n * row_stride, n_classes, out + n * out_row_stride,    \
                                 (int)log_output);                                               \
    }

/* Their backward for rows [row_begin, row_end) of the gradient g and the forward's output y:
 * softmax: y·(g − Σ g·y); log_softmax: g − exp(y)·Σ g. */
#define DEFINE_SOFTMAX_BACKWARD(SUFFIX, TYPE, REAL)                                              \
    void softmax_backward_##SUFFIX(const TYPE *grad, int64_t grad_row_stride,                   \
                                   const TYPE *output, int64_t output_row_stride,                \
                                   int64_t n_classes, int64_t row_begin, int64_t row_end,        \
                                   TYPE *result, int64_t result_row_stride,                      \
                                   int64_t log_output) {                                         \
        for (int64_t n = row_begin; n < row_end; ++n)                                            \
            softmax_backward_row_##SUFFIX(grad + n * grad_row_stride,                            \
                                          output + n * output_row_stride, n_classes,             \
                                          result + n * result_row_stride, (int)log_output);      \
    }

#define DEFINE_KERNELS(SUFFIX, TYPE, REAL)                                                       \
    DEFINE_LOSS_ROWS(SUFFIX, TYPE, REAL)                                                         \
    DEFINE_WEIGHT_TOTAL(SUFFIX, REAL)                                                            \
    DEFINE_ROW_GRADIENT_SCALES(SUFFIX, REAL)                                                     \
    DEFINE_LOAD_TILE(SUFFIX, TYPE, REAL)                                                         \
    DEFINE_BACKWARD_TILE(SUFFIX, TYPE, REAL)                                                     \
    DEFINE_FORWARD_TILE(SUFFIX, TYPE, REAL)                                                      \
    DEFINE_FORWARD_ROW(SUFFIX, TYPE, REAL)                                                       \
    DEFINE_FORWARD_GRADIENT_ROW(SUFFIX, TYPE, REAL)                                              \
    DEFINE_FINISH(SUFFIX, TYPE, REAL)                                                            \
    DEFINE_BACKWARD(SUFFIX, TYPE, REAL)                                                          \
    DEFINE_FORWARD(SUFFIX, TYPE, REAL)                                                           \
    DEFINE_SOFTMAX_FORWARD(SUFFIX, TYPE, REAL)                                                   \
    DEFINE_SOFTMAX_BACKWARD(SUFFIX, TYPE, REAL)

DEFINE_KERNELS(f32, float, float)
DEFINE_KERNELS(bf16, uint16_t, float)
DEFINE_KERNELS(f64, double, double)
#include "spatial_loops.h"
