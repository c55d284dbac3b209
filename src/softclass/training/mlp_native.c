/* Whole training runs of small MLPs: the compiled backend of softclass.training.ensemble (see
 * mlp_native.py).
 *
 * One call trains members [member_begin, member_end) of a stacked ensemble for n_epochs epochs:
 * every batch of every epoch (forward, the design's loss and hand-written gradient, backward,
 * optimizer update), then, when validation rows are given, each member's design loss and accuracy
 * on them after every epoch. Members are independent, so each is trained from start to finish
 * before the next (its parameters stay in cache). The arithmetic is that of
 * the registries (softclass.mlp.activations, designs, optimizers: torch.optim's SGD, Adam,
 * AdamW), row by row; only the order of the sums differs from torch's matmuls. Each design's loss
 * and its gradient with respect to the logits come from the compiled kernels of
 * softclass.functional themselves: softclass/kernels/cpu_native.c (fused cross entropy, softmax
 * and their backward, on a whole batch of logits) is compiled into this library, and the
 * probability losses of designs C and D are the row functions of softclass/kernels/loss_rows.h
 * (the float64 parity tests of tests/training/test_engine.py hold every branch to autograd through
 * softclass.functional).
 *
 * Built at install time (setup.py) and loaded with ctypes. The body below is compiled
 * twice, for float (suffix f32) and double (f64): the file includes itself with REAL defined, and
 * <tgmath.h> picks expf/exp, tanhf/tanh, ... from the argument's type.
 */
#ifndef REAL

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_native.c" /* the fused CE and softmax kernels, with loss_rows.h */

#include <tgmath.h>

enum { ACTIVATION_TANH, ACTIVATION_RELU, ACTIVATION_SIGMOID, ACTIVATION_GELU, ACTIVATION_IDENTITY,
       N_ACTIVATIONS };
enum { LOSS_CROSS_ENTROPY, LOSS_SQUARED_ERROR, LOSS_MCEE, LOSS_NLL_LOG_SOFTMAX, N_LOSSES };
enum { OPTIMIZER_SGD, OPTIMIZER_ADAM, OPTIMIZER_ADAMW, N_OPTIMIZERS };
/* The enums' values are the registries' native_code fields (softclass.mlp.activations, designs,
 * optimizers): a new entry gets its branch here and its code there. */
enum { KIND_ACTIVATION, KIND_LOSS, KIND_OPTIMIZER };

/* 1 when this file implements entry `code` of registry `kind` (KIND_*), else 0: mlp_native.py
 * refuses a registry entry whose native_code is not implemented here. */
int64_t mlp_implements(int64_t kind, int64_t code) {
    const int64_t count = kind == KIND_ACTIVATION ? N_ACTIVATIONS
                          : kind == KIND_LOSS     ? N_LOSSES
                          : kind == KIND_OPTIMIZER ? N_OPTIMIZERS
                                                   : 0;
    return code >= 0 && code < count;
}

/* Rows of a batch whose targets are all kept: no class index equals it. */
#define NO_IGNORED_TARGET INT64_MIN

/* Hyper-parameters an optimizer branch may read (mlp_native.py's MAX_OPTIMIZER_PARAMS). */
#define MAX_OPTIMIZER_PARAMS 8

/* Parameters a loss branch may read per member (softclass.mlp.designs.MAX_NATIVE_PARAMS). */
#define MAX_DESIGN_PARAMS 2

/* Shapes and hyper-parameters of one call (mirrored by mlp_native.py's RunSettings). */
typedef struct {
    int64_t n_layers;        /* linear layers: hidden layers + 1 */
    const int64_t *widths;   /* n_layers + 1 widths: features, hidden..., classes */
    int64_t activation;      /* ACTIVATION_* of the hidden layers */
    int64_t optimizer;       /* OPTIMIZER_* */
    /* The optimizer's hyper-parameters, in the order its registry entry lists them
     * (Optimizer.native_params): every branch starts with the learning rate and the weight
     * decay (L2 term added to the gradient; decoupled for AdamW); then SGD: momentum (dampening
     * 0), nesterov (1 or 0); Adam, AdamW: beta1, beta2, eps. */
    double optimizer_params[MAX_OPTIMIZER_PARAMS];
    double tiny;             /* smallest normal of the element type: design D's clamp */
    int64_t batch_size;
    int64_t n_rows;          /* training rows */
    int64_t n_columns;       /* table columns: features, class index, [row weight] */
    int64_t weighted;        /* 1 when the last table column holds row weights */
    int64_t n_epochs;        /* epochs run by this call */
    int64_t step_count;      /* optimizer steps every member took before this call */
    int64_t n_val_rows;      /* 0: no validation */
    int64_t n_raw;           /* binned values a row has (raw, val_raw); 0: no expansion */
} RunSettings;

/* Tensors of one call (mirrored by mlp_native.py's RunBuffers); all contiguous. */
typedef struct {
    void *const *parameters;     /* 2·n_layers stacked tensors: W_k (M, out, in), b_k (M, out) */
    void *const *first_moments;  /* same shapes: SGD momentum buffers / Adam first moments */
    void *const *second_moments; /* same shapes: Adam second moments (unused by SGD) */
    const void *table;           /* (n_rows, n_columns) training rows */
    const int64_t *orders;       /* (n_orders, n_epochs, n_rows): row indices, batch by batch */
    const int64_t *order_of_member; /* (M,): which of the orders each member follows */
    const int64_t *loss_of_member;  /* (M,): LOSS_* */
    /* (M, MAX_DESIGN_PARAMS): each member's design parameters (Design.native_params, zeros
     * after them); every loss branch reads the first as its label smoothing. */
    const double *design_params_of_member;
    const void *val_features;    /* (n_val_rows, table's feature columns) */
    const int64_t *val_targets;  /* (n_val_rows,) class indices */
    double *train_loss;          /* (M, n_epochs) out: batch losses averaged over the epoch */
    double *train_accuracy;      /* (M, n_epochs) out: share of rows classified right in training */
    double *val_loss;            /* (M, n_epochs) out: design loss on the validation rows */
    double *val_accuracy;        /* (M, n_epochs) out */
    /* (M,): each member's slot in snapshots, -1 for none; NULL: no snapshots taken. */
    const int64_t *snapshot_of_member;
    /* (slots, n_epochs, one member's parameter count) out: its weights and biases after each
     * epoch, W_0, b_0, W_1, b_1, ... flattened (what the agreement probe compares). */
    void *snapshots;
    /* The inputs' expansion (see row_inputs), NULL when the table's feature columns (n_columns -
     * 1 - weighted) are the network's inputs; each (widths[0],). */
    const int64_t *input_sources;
    const double *input_lower, *input_width;
    const double *raw;            /* (n_rows, n_raw) binned values of the training rows */
    const double *val_raw;        /* (n_val_rows, n_raw) binned values of the validation rows */
    const double *input_bound;    /* (widths[0],) 0: a bin; inf: a scaled value; c: clipped */
} RunBuffers;

/* tanh in float, inlined and branch-free (glibc's tanhf is an out-of-line call per unit):
 * tanh|x| = e / (e + 2) with e = expm1(2|x|) = 2^k·expm1(r) + (2^k − 1), 2|x| = k·ln2 + r,
 * |r| <= ln2/2, expm1(r) by its degree-8 Taylor polynomial (relative error < 3e-9). Measured
 * against double-precision tanh on 2^24 points of [-10, 10]: at most 3 ulp. |x| >= 9 gives ±1
 * (float's tanh rounds to ±1 from 9.01); NaN stays NaN. */
static inline float tanh_float(float x) {
    const float magnitude = __builtin_fabsf(x) < 9.0f ? __builtin_fabsf(x) : 9.0f;
    const float y = magnitude + magnitude;
    const float k = __builtin_floorf(y * 1.44269504088896341f + 0.5f);
    const float r = (y - k * 0.693359375f) + k * 2.12194440e-4f;
    float p = 1.0f / 40320.0f;
    p = p * r + 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r;
    const int32_t exponent_bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &exponent_bits, sizeof scale);
    const float e = scale * p + (scale - 1.0f);
    const float t = __builtin_copysignf(e / (e + 2.0f), x);
    return x != x ? x : t;
}

#define REAL float
#define SUFFIX f32
#define TANH tanh_float
#include "mlp_native.c" /* this file, once per element type */
#undef REAL
#undef SUFFIX
#undef TANH

#define REAL double
#define SUFFIX f64
#define TANH tanh
#include "mlp_native.c" /* this file, once per element type */
#undef REAL
#undef SUFFIX
#undef TANH

#else /* the body, once per element type */

#define CONCAT_(a, b) a##_##b
#define CONCAT(a, b) CONCAT_(a, b)
#define NAME(base) CONCAT(base, SUFFIX)

/* Hidden activation of a pre-activation value. */
static inline REAL NAME(activate)(int64_t activation, REAL pre) {
    switch (activation) {
    case ACTIVATION_TANH:
        return TANH(pre);
    case ACTIVATION_RELU:
        return pre > (REAL)0 ? pre : (REAL)0;
    case ACTIVATION_SIGMOID:
        return (REAL)1 / ((REAL)1 + exp(-pre));
    case ACTIVATION_GELU:
        return (REAL)0.5 * pre * ((REAL)1 + erf(pre * (REAL)0.70710678118654752440));
    case ACTIVATION_IDENTITY:
        return pre;
    default: /* unreachable: mlp_native.py refuses activations without a code */
        return (REAL)NAN;
    }
}

/* d loss / d pre-activation from d loss / d output, in terms of the output where possible (as
 * the backward of softclass.mlp.activations). */
static inline REAL NAME(activation_backward)(int64_t activation, REAL grad, REAL pre, REAL out) {
    switch (activation) {
    case ACTIVATION_TANH:
        return grad - grad * (out * out);
    case ACTIVATION_RELU:
        return out > (REAL)0 ? grad : (REAL)0;
    case ACTIVATION_SIGMOID:
        return grad * (out * ((REAL)1 - out));
    case ACTIVATION_GELU: {
        const REAL cdf = (REAL)0.5 * ((REAL)1 + erf(pre * (REAL)0.70710678118654752440));
        const REAL pdf = exp((REAL)-0.5 * pre * pre) * (REAL)0.39894228040143267794;
        return grad * (cdf + pre * pdf);
    }
    case ACTIVATION_IDENTITY:
        return grad;
    default:
        return (REAL)NAN;
    }
}

/* The network's widths[0] inputs of one row into `inputs`: `features` copied, or (input_sources)
 * input j is column input_sources[j] when >= 0, else made from binned value k = -1 - source:
 * v = (raw[k] - lower[j]) / width[j] in double; a bin clip(v, 0, 1) when input_bound[j] is 0, a
 * scaled value v when inf, else v / sqrt(1 + (v / c)^2), c = input_bound[j]; rounded to float:
 * InputExpansion.expand bit for bit (the square stored first: no fused multiply-add). */
static void NAME(row_inputs)(const RunSettings *settings, const RunBuffers *buffers,
                             const REAL *features, const double *raw, REAL *inputs) {
    const int64_t n_inputs = settings->widths[0];
    if (buffers->input_sources == NULL) {
        memcpy(inputs, features, (size_t)n_inputs * sizeof(REAL));
        return;
    }
    for (int64_t j = 0; j < n_inputs; ++j) {
        const int64_t k = -1 - buffers->input_sources[j];
        const double bound = buffers->input_bound[j];
        double value = k < 0 ? 0.0 : (raw[k] - buffers->input_lower[j]) / buffers->input_width[j];
        if (bound == 0.0) {
            value = value > 1.0 ? 1.0 : value < 0.0 ? 0.0 : value; /* keeps -0.0, as clamp */
        } else if (bound != INFINITY) {
            volatile double square = (value / bound) * (value / bound);
            value = value / sqrt(1.0 + square);
        }
        inputs[j] = k < 0 ? features[-1 - k] : (REAL)(float)value;
    }
}

/* Forward pass of one row: level l of the row lives at act[l] (level 0: the input, copied there
 * by the caller) and, for l >= 1, its pre-activation at pre[l]; the logits land at act[n_layers]
 * (equal to pre[n_layers]). weights[k], biases[k] are this member's layer k. */
static void NAME(network_forward_row)(const RunSettings *settings, REAL *const *weights,
                              REAL *const *biases, REAL *const *act, REAL *const *pre) {
    const int64_t n_layers = settings->n_layers;
    for (int64_t k = 0; k < n_layers; ++k) {
        const int64_t n_in = settings->widths[k], n_out = settings->widths[k + 1];
        const REAL *input = act[k];
        for (int64_t j = 0; j < n_out; ++j) {
            const REAL *row = weights[k] + j * n_in;
            REAL sum = (REAL)0;
            for (int64_t i = 0; i < n_in; ++i) sum += row[i] * input[i];
            pre[k + 1][j] = sum + biases[k][j];
        }
        for (int64_t j = 0; j < n_out; ++j)
            act[k + 1][j] = k + 1 < n_layers ? NAME(activate)(settings->activation, pre[k + 1][j])
                                             : pre[k + 1][j];
    }
}

/* One row of design C (squared error), D (MCEE) or B (NLL) against the label-smoothed target
 * q_c = (1−ε)·[c = y] + ε/C (softclass.mlp.designs: the entries' losses with label_smoothing=ε):
 * C Σ_c (p_c − q_c)², D −Σ_c q_c·log max(p_c, tiny), B −Σ_c q_c·log_p_c; with grad_row not NULL
 * also ∂(scale·loss)/∂output_c: 2·scale·(p_c − q_c), −scale·q_c / max(p_c, tiny) (0 where
 * p_c < tiny), −scale·q_c. */
static REAL NAME(smoothed_row)(int64_t loss_kind, const REAL *output, int64_t n_classes,
                               int64_t y, double label_smoothing, REAL tiny, REAL scale,
                               REAL *grad_row) {
    const REAL off = (REAL)(label_smoothing / (double)n_classes);
    const REAL on = (REAL)(1.0 - label_smoothing) + off;
    double loss = 0.0;
    for (int64_t c = 0; c < n_classes; ++c) {
        const REAL target = c == y ? on : off;
        const REAL value = output[c];
        REAL gradient;
        if (loss_kind == LOSS_SQUARED_ERROR) {
            const REAL residual = value - target;
            loss += residual * residual;
            gradient = scale * (residual + residual);
        } else if (loss_kind == LOSS_MCEE) {
            const REAL clamped = value > tiny ? value : tiny;
            loss -= target * log(clamped);
            gradient = value < tiny ? (REAL)0 : -scale * target / clamped;
        } else {
            loss -= target * value;
            gradient = -scale * target;
        }
        if (grad_row) grad_row[c] = gradient;
    }
    return (REAL)loss;
}

/* The design's losses of a batch of rows of logits ((rows, C), contiguous) with class indices
 * targets (rows,) into row_loss (rows,), with the member's design parameters design_params; with grad not NULL also d (Σ_r scale_r·loss_r) / d logits
 * into grad (rows, C). scratch: (rows, C) for probabilities, logsumexp: (rows,). The kernels of
 * softclass.functional on CPU, as it composes them: the fused cross entropy (A) forward and
 * backward for per-row upstream gradients row_scale; else the softmax (log_softmax for B), the
 * squared error (C), MCEE (D) or NLL (B) of its output (loss_rows.h), and the softmax backward. */
static void NAME(design_batch)(int64_t loss_kind, const double *design_params, REAL tiny,
                               int64_t rows, int64_t n_classes,
                               const REAL *logits, const int64_t *targets, const REAL *row_scale,
                               REAL *row_loss, REAL *logsumexp, REAL *scratch, REAL *grad) {
    if (loss_kind == LOSS_CROSS_ENTROPY) {
        double sums[2];
        const double label_smoothing = design_params[0];
        NAME(ce_forward)(logits, n_classes, n_classes, 0, rows, targets, 1, NO_IGNORED_TARGET,
                         NULL, label_smoothing, logsumexp, row_loss, 1, sums, 0, NULL, NULL, NULL,
                         0, NULL);
        if (grad)
            NAME(ce_backward)(logits, n_classes, n_classes, 0, rows, targets, 1,
                              NO_IGNORED_TARGET, NULL, label_smoothing, logsumexp, row_scale, 1,
                              NULL, grad, n_classes);
        return;
    }
    const int64_t log_output = loss_kind == LOSS_NLL_LOG_SOFTMAX;
    const double label_smoothing = design_params[0];
    NAME(softmax_forward)(logits, n_classes, n_classes, 0, rows, scratch, n_classes, log_output);
    for (int64_t r = 0; r < rows; ++r) {
        const REAL *output = scratch + r * n_classes;
        const int64_t y = targets[r];
        REAL *grad_row = grad ? grad + r * n_classes : NULL;
        const REAL scale = grad ? row_scale[r] : (REAL)1;
        row_loss[r] = label_smoothing != 0.0
                          ? NAME(smoothed_row)(loss_kind, output, n_classes, y, label_smoothing,
                                               tiny, scale, grad_row)
                      : log_output ? NAME(nll_row)(output, n_classes, y, scale, grad_row)
                      : loss_kind == LOSS_MCEE
                          ? NAME(mcee_row)(output, n_classes, y, tiny, scale, grad_row)
                          : NAME(mse_onehot_row)(output, n_classes, y, scale, grad_row);
    }
    if (grad)
        NAME(softmax_backward)(grad, n_classes, scratch, n_classes, n_classes, 0, rows, grad,
                               n_classes, log_output);
}

/* One optimizer update of n values (torch.optim.SGD / Adam / AdamW on one tensor); step is
 * 1-based. */
/* A batch's share of the epoch's training loss: its mean row loss (weighted: the row scales'
 * weighted sum) times its share of the rows. */
static double NAME(epoch_loss_share)(const RunSettings *settings, int64_t rows,
                                     const REAL *row_loss, const REAL *row_scale) {
    double batch_loss = 0.0;
    for (int64_t r = 0; r < rows; ++r)
        batch_loss +=
            settings->weighted ? (double)(row_loss[r] * row_scale[r]) : (double)row_loss[r];
    return settings->weighted ? batch_loss * (double)rows / (double)settings->n_rows
                              : batch_loss / (double)settings->n_rows;
}

/* The member's weights and biases after `epoch` into its slot of buffers->snapshots (when it has
 * one): W_0, b_0, W_1, b_1, ... flattened. */
static void NAME(snapshot)(const RunSettings *settings, const RunBuffers *buffers, int64_t member,
                           int64_t epoch, REAL *const *weights, REAL *const *biases) {
    if (buffers->snapshot_of_member == NULL || buffers->snapshot_of_member[member] < 0) return;
    int64_t parameter_total = 0;
    for (int64_t k = 0; k < settings->n_layers; ++k)
        parameter_total += settings->widths[k + 1] * (settings->widths[k] + 1);
    REAL *to = (REAL *)buffers->snapshots +
               (buffers->snapshot_of_member[member] * settings->n_epochs + epoch) * parameter_total;
    for (int64_t k = 0; k < settings->n_layers; ++k) {
        const int64_t n_out = settings->widths[k + 1], n_in = settings->widths[k];
        memcpy(to, weights[k], (size_t)(n_out * n_in) * sizeof(REAL));
        memcpy(to + n_out * n_in, biases[k], (size_t)n_out * sizeof(REAL));
        to += n_out * (n_in + 1);
    }
}

static void NAME(update)(const RunSettings *settings, int64_t step, int64_t n, REAL *param,
                         const REAL *grad, REAL *first, REAL *second) {
    const double *hyper = settings->optimizer_params;
    const REAL learning_rate = (REAL)hyper[0];
    const REAL weight_decay = (REAL)hyper[1];
    if (settings->optimizer == OPTIMIZER_SGD && hyper[2] == 0.0) {
        for (int64_t i = 0; i < n; ++i) {
            const REAL g = weight_decay != (REAL)0 ? grad[i] + weight_decay * param[i] : grad[i];
            param[i] -= learning_rate * g;
        }
    } else if (settings->optimizer == OPTIMIZER_SGD) {
        const REAL momentum = (REAL)hyper[2];
        const int nesterov = hyper[3] != 0.0;
        for (int64_t i = 0; i < n; ++i) {
            const REAL g = weight_decay != (REAL)0 ? grad[i] + weight_decay * param[i] : grad[i];
            first[i] = step == 1 ? g : momentum * first[i] + g;
            param[i] -= learning_rate * (nesterov ? g + momentum * first[i] : first[i]);
        }
    } else {
        const int decoupled = settings->optimizer == OPTIMIZER_ADAMW;
        const double beta1_double = hyper[2], beta2_double = hyper[3];
        const double correction1 = 1.0 - pow(beta1_double, (double)step);
        const double correction2 = 1.0 - pow(beta2_double, (double)step);
        const REAL step_size = (REAL)(hyper[0] / correction1);
        const REAL correction2_sqrt = (REAL)sqrt(correction2);
        const REAL one_minus_beta1 = (REAL)(1.0 - beta1_double);
        const REAL beta2 = (REAL)beta2_double, one_minus_beta2 = (REAL)(1.0 - beta2_double);
        const REAL eps = (REAL)hyper[4];
        const REAL decay = (REAL)1 - learning_rate * weight_decay;
        for (int64_t i = 0; i < n; ++i) {
            REAL g = grad[i];
            if (decoupled)
                param[i] *= decay;
            else if (weight_decay != (REAL)0)
                g += weight_decay * param[i];
            first[i] += one_minus_beta1 * (g - first[i]);
            second[i] = beta2 * second[i] + one_minus_beta2 * g * g;
            const REAL denominator = sqrt(second[i]) / correction2_sqrt + eps;
            param[i] -= step_size * first[i] / denominator;
        }
    }
}

/* Design loss (design_batch) and correctness of every validation row for one member, in blocks
 * of up to settings->batch_size rows laid out as in training (act/pre: batch bases per level). */
static void NAME(evaluate)(const RunSettings *settings, const RunBuffers *buffers,
                           int64_t loss_kind, const double *design_params,
                           REAL *const *weights, REAL *const *biases,
                           REAL *const *act, REAL *const *pre, REAL **row_act, REAL **row_pre,
                           REAL *row_loss, REAL *logsumexp, double *loss_out,
                           double *accuracy_out) {
    const int64_t n_layers = settings->n_layers;
    const int64_t n_classes = settings->widths[n_layers];
    const REAL *features = (const REAL *)buffers->val_features;
    const int64_t n_compact = settings->n_columns - 1 - settings->weighted;
    double loss_total = 0.0;
    int64_t correct = 0;
    for (int64_t start = 0; start < settings->n_val_rows; start += settings->batch_size) {
        const int64_t rows = start + settings->batch_size <= settings->n_val_rows
                                 ? settings->batch_size
                                 : settings->n_val_rows - start;
        const int64_t *targets = buffers->val_targets + start;
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t l = 0; l <= n_layers; ++l) {
                row_act[l] = act[l] + r * settings->widths[l];
                row_pre[l] = pre[l] + r * settings->widths[l];
            }
            NAME(row_inputs)(settings, buffers, features + (start + r) * n_compact,
                             buffers->val_raw + (start + r) * settings->n_raw, row_act[0]);
            NAME(network_forward_row)(settings, weights, biases, row_act, row_pre);
            const REAL *logits = row_act[n_layers];
            int64_t best = 0;
            for (int64_t c = 1; c < n_classes; ++c) best = logits[c] > logits[best] ? c : best;
            correct += best == targets[r];
        }
        NAME(design_batch)(loss_kind, design_params, (REAL)settings->tiny, rows, n_classes,
                           act[n_layers], targets, NULL, row_loss, logsumexp, pre[n_layers], NULL);
        for (int64_t r = 0; r < rows; ++r) loss_total += (double)row_loss[r];
    }
    *loss_out = loss_total / (double)settings->n_val_rows;
    *accuracy_out = (double)correct / (double)settings->n_val_rows;
}

/* Train members [member_begin, member_end) for settings->n_epochs epochs. Returns 0, or -1 when
 * the work space could not be allocated (nothing was changed then). */
int64_t NAME(mlp_train)(const RunSettings *settings, const RunBuffers *buffers,
                        int64_t member_begin, int64_t member_end) {
    const int64_t n_layers = settings->n_layers, batch_size = settings->batch_size;
    const int64_t n_rows = settings->n_rows, n_columns = settings->n_columns;
    const int64_t n_compact = n_columns - 1 - settings->weighted; /* the class index's column */
    const int64_t n_classes = settings->widths[n_layers];
    const REAL tiny = (REAL)settings->tiny;
    /* Work space: per level l, activations and pre-activations of a whole batch (B, width_l);
     * two gradient rows of the widest level; per parameter tensor, its gradient. */
    int64_t level_total = 0, widest = 0, parameter_total = 0;
    for (int64_t l = 0; l <= n_layers; ++l) {
        level_total += settings->widths[l];
        widest = settings->widths[l] > widest ? settings->widths[l] : widest;
    }
    for (int64_t k = 0; k < n_layers; ++k)
        parameter_total += settings->widths[k + 1] * (settings->widths[k] + 1);
    const size_t n_reals = (size_t)(2 * batch_size * level_total + 2 * batch_size * widest +
                                    parameter_total + 3 * batch_size);
    REAL *space = malloc(n_reals * sizeof(REAL));
    REAL **pointers = malloc((size_t)(2 * (n_layers + 1) + 6 * n_layers + 4) * sizeof(REAL *));
    int64_t *targets = malloc((size_t)batch_size * sizeof(int64_t));
    if (space == NULL || pointers == NULL || targets == NULL) {
        free(space);
        free(pointers);
        free(targets);
        return -1;
    }
    REAL **act = pointers, **pre = act + (n_layers + 1);          /* batch bases per level */
    REAL **weights = pre + (n_layers + 1), **biases = weights + n_layers;
    REAL **weight_grads = biases + n_layers, **bias_grads = weight_grads + n_layers;
    REAL **row_act = bias_grads + n_layers, **row_pre = row_act + (n_layers + 1);
    REAL *cursor = space;
    for (int64_t l = 0; l <= n_layers; ++l) {
        act[l] = cursor;
        cursor += batch_size * settings->widths[l];
        pre[l] = cursor;
        cursor += batch_size * settings->widths[l];
    }
    REAL *delta = cursor, *delta_next = delta + batch_size * widest;
    cursor = delta_next + batch_size * widest;
    for (int64_t k = 0; k < n_layers; ++k) {
        weight_grads[k] = cursor;
        cursor += settings->widths[k + 1] * settings->widths[k];
        bias_grads[k] = cursor;
        cursor += settings->widths[k + 1];
    }
    REAL *row_scale = cursor, *row_loss = cursor + batch_size, *logsumexp = cursor + 2 * batch_size;
    const REAL *table = (const REAL *)buffers->table;

    for (int64_t member = member_begin; member < member_end; ++member) {
        const int64_t loss_kind = buffers->loss_of_member[member];
        const double *design_params =
            buffers->design_params_of_member + member * MAX_DESIGN_PARAMS;
        for (int64_t k = 0; k < n_layers; ++k) {
            const int64_t n_weights = settings->widths[k + 1] * settings->widths[k];
            weights[k] = (REAL *)buffers->parameters[2 * k] + member * n_weights;
            biases[k] = (REAL *)buffers->parameters[2 * k + 1] + member * settings->widths[k + 1];
        }
        int64_t step = settings->step_count;
        for (int64_t epoch = 0; epoch < settings->n_epochs; ++epoch) {
            const int64_t *order =
                buffers->orders +
                (buffers->order_of_member[member] * settings->n_epochs + epoch) * n_rows;
            double epoch_loss = 0.0;
            int64_t epoch_correct = 0;
            for (int64_t start = 0; start < n_rows; start += batch_size) {
                const int64_t rows = start + batch_size <= n_rows ? batch_size : n_rows - start;
                /* Row scales: 1/B, or the batch's weights over their sum (clamped at tiny). */
                if (settings->weighted) {
                    REAL weight_sum = (REAL)0;
                    for (int64_t r = 0; r < rows; ++r)
                        weight_sum += table[order[start + r] * n_columns + n_columns - 1];
                    weight_sum = weight_sum > tiny ? weight_sum : tiny;
                    for (int64_t r = 0; r < rows; ++r)
                        row_scale[r] =
                            table[order[start + r] * n_columns + n_columns - 1] / weight_sum;
                } else {
                    for (int64_t r = 0; r < rows; ++r) row_scale[r] = (REAL)(1.0 / (double)rows);
                }
                /* Forward row by row, then the design's losses and output gradient of the batch. */
                for (int64_t r = 0; r < rows; ++r) {
                    const REAL *source = table + order[start + r] * n_columns;
                    for (int64_t l = 0; l <= n_layers; ++l) {
                        row_act[l] = act[l] + r * settings->widths[l];
                        row_pre[l] = pre[l] + r * settings->widths[l];
                    }
                    NAME(row_inputs)(settings, buffers, source,
                                     buffers->raw + order[start + r] * settings->n_raw,
                                     row_act[0]);
                    NAME(network_forward_row)(settings, weights, biases, row_act, row_pre);
                    const REAL *logits = row_act[n_layers];
                    const int64_t target = (int64_t)source[n_compact];
                    int64_t best = 0;
                    for (int64_t c = 1; c < n_classes; ++c) best = logits[c] > logits[best] ? c : best;
                    epoch_correct += best == target;
                    targets[r] = target;
                }
                NAME(design_batch)(loss_kind, design_params, tiny, rows, n_classes, act[n_layers],
                                   targets, row_scale, row_loss, logsumexp, pre[n_layers], delta);
                epoch_loss += NAME(epoch_loss_share)(settings, rows, row_loss, row_scale);
                /* Backward: delta holds d loss / d (level k+1 pre-activation), (rows, width). */
                for (int64_t k = n_layers - 1; k >= 0; --k) {
                    const int64_t n_in = settings->widths[k], n_out = settings->widths[k + 1];
                    REAL *weight_grad = weight_grads[k], *bias_grad = bias_grads[k];
                    memset(weight_grad, 0, (size_t)(n_in * n_out) * sizeof(REAL));
                    memset(bias_grad, 0, (size_t)n_out * sizeof(REAL));
                    for (int64_t r = 0; r < rows; ++r) {
                        const REAL *row_delta = delta + r * n_out, *input = act[k] + r * n_in;
                        for (int64_t j = 0; j < n_out; ++j) {
                            REAL *grad_row = weight_grad + j * n_in;
                            const REAL d = row_delta[j];
                            for (int64_t i = 0; i < n_in; ++i) grad_row[i] += d * input[i];
                            bias_grad[j] += d;
                        }
                    }
                    if (k == 0) break;
                    for (int64_t r = 0; r < rows; ++r) {
                        const REAL *row_delta = delta + r * n_out;
                        REAL *below = delta_next + r * n_in;
                        for (int64_t i = 0; i < n_in; ++i) below[i] = (REAL)0;
                        for (int64_t j = 0; j < n_out; ++j) {
                            const REAL *weight_row = weights[k] + j * n_in;
                            const REAL d = row_delta[j];
                            for (int64_t i = 0; i < n_in; ++i) below[i] += weight_row[i] * d;
                        }
                        const REAL *out = act[k] + r * n_in, *pre_row = pre[k] + r * n_in;
                        for (int64_t i = 0; i < n_in; ++i)
                            below[i] = NAME(activation_backward)(settings->activation, below[i],
                                                                 pre_row[i], out[i]);
                    }
                    REAL *swap = delta;
                    delta = delta_next;
                    delta_next = swap;
                }
                /* Optimizer update of every tensor of this member. */
                ++step;
                for (int64_t k = 0; k < n_layers; ++k) {
                    const int64_t n_out = settings->widths[k + 1];
                    const int64_t n_weights = n_out * settings->widths[k];
                    const int64_t weight_offset = member * n_weights, bias_offset = member * n_out;
                    REAL *const *first = (REAL *const *)buffers->first_moments;
                    REAL *const *second = (REAL *const *)buffers->second_moments;
                    NAME(update)(settings, step, n_weights, weights[k], weight_grads[k],
                                 first[2 * k] + weight_offset,
                                 second == NULL ? NULL : second[2 * k] + weight_offset);
                    NAME(update)(settings, step, n_out, biases[k], bias_grads[k],
                                 first[2 * k + 1] + bias_offset,
                                 second == NULL ? NULL : second[2 * k + 1] + bias_offset);
                }
            }
            const int64_t at = member * settings->n_epochs + epoch;
            NAME(snapshot)(settings, buffers, member, epoch, weights, biases);
            buffers->train_loss[at] = epoch_loss;
            buffers->train_accuracy[at] = (double)epoch_correct / (double)n_rows;
            if (settings->n_val_rows > 0) {
                NAME(evaluate)(settings, buffers, loss_kind, design_params, weights, biases, act,
                               pre, row_act, row_pre, row_loss, logsumexp, buffers->val_loss + at,
                               buffers->val_accuracy + at);
            }
        }
    }
    free(space);
    free(pointers);
    free(targets);
    return 0;
}

#undef NAME
#undef CONCAT
#undef CONCAT_

#endif
