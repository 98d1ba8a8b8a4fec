/* test_kernels.c: the kernels of src/kernels/ops.h.
 *
 * Every backward kernel is checked against central finite differences of its own forward:
 * random inputs from a fixed seed, a scalar loss L = sum(w * out) with random weights w
 * (accumulated in double, the forward itself in float), the analytic gradient from the
 * backward kernel with dout = w. The perturbation used in the quotient is the one actually
 * stored in float ((x+h) - (x-h), not 2h). An element passes when
 *     |num - ana| <= tol * max(floor, |num|, |ana|)
 * where floor is the typical size of that gradient (1 for O(1) gradients; 1/count for the
 * loss head, whose gradients are divided by the number of counted rows). tol is set per
 * kernel from the expected finite-difference error (truncation ~ h^2, rounding ~ eps/h)
 * and is printed with the measured errors, llm.c style.
 *
 * Forwards are also compared against direct float64 computations where the layout or
 * convention matters (norms, attention's qkv layout and grouped heads, rope's rotation,
 * LoRA, the loss head), and every backward kernel is checked to ACCUMULATE (+=). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "kernels/ops.h"
#include "util/common.h"

/* ------------------------------------------------------------------------------------ */
/* helpers */

static float *falloc(size_t n) {
    float *p = sl_alloc((n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

static float *randn(sl_rng *r, size_t n, float scale, float offset) {
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = offset + scale * sl_rng_normal(r);
    return p;
}

static float *randu(sl_rng *r, size_t n, float lo, float hi) {
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * sl_rng_uniform(r);
    return p;
}

static float *fcopy(const float *src, size_t n) {
    float *p = falloc(n);
    memcpy(p, src, n * sizeof(float));
    return p;
}

/* sum over a (rows, cols) block with row stride ld of w * x, in double */
static double wdot(const float *w, const float *x, int rows, int cols, int ld) {
    double s = 0.0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) s += (double)w[(size_t)i * ld + j] * (double)x[(size_t)i * ld + j];
    return s;
}

static double dmax(double a, double b) { return a > b ? a : b; }

typedef double (*loss_fn)(void *ctx);

/* num (rows, cols), dense, = dL/dparam[i*ld + j] by central differences. */
static void fd_grad(float *num, float *param, int rows, int cols, int ld, float h, loss_fn loss, void *ctx) {
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < cols; j++) {
            float *p = param + (size_t)i * ld + j;
            const float orig = *p;
            *p = orig + h;
            const float xp = *p;
            const double lp = loss(ctx);
            *p = orig - h;
            const float xm = *p;
            const double lm = loss(ctx);
            *p = orig;
            num[(size_t)i * cols + j] = (float)((lp - lm) / ((double)xp - (double)xm));
        }
    }
}

/* Compares ana (rows, cols, row stride ld_ana) with num (dense). Prints the max abs error
 * and the max normalised error |num-ana| / max(floor,|num|,|ana|); returns the number of
 * elements over tol (printing the first few). */
static int check_grad(const char *name, const float *ana, int ld_ana, const float *num, int rows, int cols,
                      double tol, double floor) {
    double max_abs = 0.0, max_rel = 0.0, max_mag = 0.0;
    int bad = 0;
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < cols; j++) {
            const double a = ana[(size_t)i * ld_ana + j], n = num[(size_t)i * cols + j];
            const double d = fabs(a - n);
            const double rel = d / dmax(floor, dmax(fabs(a), fabs(n)));
            max_abs = dmax(max_abs, d);
            max_rel = dmax(max_rel, rel);
            max_mag = dmax(max_mag, fabs(a));
            if (!(rel <= tol)) { /* also catches NaN */
                if (bad < 5)
                    printf("    MISMATCH %s[%d,%d]: analytic %.8g numeric %.8g (diff %.3g)\n", name, i, j, a, n, d);
                bad++;
            }
        }
    }
    printf("  %-30s n=%-5d max|grad| %.3e  max abs err %.3e  max rel err %.3e  (tol %.0e, floor %.2g)%s\n", name,
           rows * cols, max_mag, max_abs, max_rel, tol, floor, bad ? "  FAIL" : "");
    return bad;
}

/* Compares a float result with a double reference: |got - ref| <= tol * max(1, |ref|). */
static int check_ref(const char *name, const float *got, int ld_got, const double *ref, int rows, int cols,
                     double tol) {
    double max_err = 0.0;
    int bad = 0;
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < cols; j++) {
            const double g = got[(size_t)i * ld_got + j], r = ref[(size_t)i * cols + j];
            const double e = fabs(g - r) / dmax(1.0, fabs(r));
            max_err = dmax(max_err, e);
            if (!(e <= tol)) {
                if (bad < 5) printf("    MISMATCH %s[%d,%d]: got %.8g expected %.8g\n", name, i, j, g, r);
                bad++;
            }
        }
    }
    printf("  %-30s n=%-5d max err vs float64 %.3e  (tol %.0e)%s\n", name, rows * cols, max_err, tol,
           bad ? "  FAIL" : "");
    return bad;
}

/* After g0 += grad twice, g2 must be g0 + 2 * g1 (g1: one call from zero). */
static int check_accum(const char *name, const float *g0, const float *g1, const float *g2, size_t n) {
    double max_err = 0.0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double expect = (double)g0[i] + 2.0 * (double)g1[i];
        const double e = fabs((double)g2[i] - expect) / dmax(1.0, fabs(g0[i]) + 2.0 * fabs(g1[i]));
        max_err = dmax(max_err, e);
        if (!(e <= 1e-5)) {
            if (bad < 5)
                printf("    MISMATCH %s[%zu]: g0 %.8g + 2 * %.8g != %.8g\n", name, i, g0[i], g1[i], g2[i]);
            bad++;
        }
    }
    printf("  %-30s n=%-6zu accumulate: max err %.3e%s\n", name, n, max_err, bad ? "  FAIL" : "");
    return bad;
}

/* ------------------------------------------------------------------------------------ */
/* the checker itself must see a small error */

static void test_checker_detects_error(void **state) {
    (void)state;
    float ana[4] = {1.0f, -0.5f, 0.02f, 3.0f};
    float num[4] = {1.0f, -0.5f, 0.02f, 3.0f};
    assert_int_equal(check_grad("self-check (equal)", ana, 4, num, 1, 4, 1e-3, 1.0), 0);
    num[3] = 3.0f * 1.01f; /* 1% off on a large element */
    assert_int_equal(check_grad("self-check (1% off)", ana, 4, num, 1, 4, 1e-3, 1.0), 1);
    num[3] = 3.0f;
    num[2] = 0.02f + 5e-3f; /* an absolute error on a small element */
    assert_int_equal(check_grad("self-check (abs off)", ana, 4, num, 1, 4, 1e-3, 1.0), 1);
}

/* ------------------------------------------------------------------------------------ */
/* layernorm */

typedef struct {
    int N, C;
    float *inp, *w, *b, *out, *mean, *rstd, *wt;
} norm_ctx;

static double layernorm_loss(void *p) {
    norm_ctx *c = p;
    layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C, 1e-5f);
    return wdot(c->wt, c->out, c->N, c->C, c->C);
}

static void test_layernorm_backward(void **state) {
    (void)state;
    const int N = 6, C = 24;
    sl_rng r;
    sl_rng_init(&r, 42, 1);
    norm_ctx c = {N, C, randn(&r, (size_t)N * C, 2.0f, 0.7f), randn(&r, C, 0.3f, 1.0f), randn(&r, C, 0.2f, 0.0f),
                  falloc((size_t)N * C), falloc(N), falloc(N), randn(&r, (size_t)N * C, 1.0f, 0.0f)};
    int bad = 0;
    printf("layernorm (N=%d C=%d)\n", N, C);

    /* forward against float64 */
    layernorm_loss(&c);
    double *ref = malloc(sizeof(double) * N * C), *rm = malloc(sizeof(double) * N), *rs = malloc(sizeof(double) * N);
    for (int i = 0; i < N; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < C; j++) m += c.inp[i * C + j];
        m /= C;
        for (int j = 0; j < C; j++) v += (c.inp[i * C + j] - m) * (c.inp[i * C + j] - m);
        v /= C;
        rm[i] = m;
        rs[i] = 1.0 / sqrt(v + 1e-5);
        for (int j = 0; j < C; j++) ref[i * C + j] = (c.inp[i * C + j] - m) * rs[i] * c.w[j] + c.b[j];
    }
    bad += check_ref("layernorm out", c.out, C, ref, N, C, 1e-5);
    bad += check_ref("layernorm mean", c.mean, 1, rm, N, 1, 1e-5);
    bad += check_ref("layernorm rstd", c.rstd, 1, rs, N, 1, 1e-5);
    /* norm_recompute from the saved statistics gives the forward's output */
    float *rec = falloc((size_t)N * C);
    norm_recompute(rec, c.inp, c.mean, c.rstd, c.w, c.b, N, C);
    for (int i = 0; i < N * C; i++) ref[i] = c.out[i];
    bad += check_ref("layernorm norm_recompute", rec, C, ref, N, C, 1e-6);

    float *ana = falloc((size_t)N * C), *num = falloc((size_t)N * C);
    layernorm_backward(ana, c.wt, c.inp, c.mean, c.rstd, c.w, N, C);
    fd_grad(num, c.inp, N, C, C, 1e-2f, layernorm_loss, &c);
    bad += check_grad("layernorm dinp", ana, C, num, N, C, 2e-3, 1.0);

    assert_int_equal(bad, 0);
    free(ref), free(rm), free(rs);
    sl_free(rec), sl_free(ana), sl_free(num);
    sl_free(c.inp), sl_free(c.w), sl_free(c.b), sl_free(c.out), sl_free(c.mean), sl_free(c.rstd), sl_free(c.wt);
}

/* ------------------------------------------------------------------------------------ */
/* rmsnorm */

static double rmsnorm_loss(void *p) {
    norm_ctx *c = p;
    rmsnorm_forward(c->out, c->rstd, c->inp, c->w, c->N, c->C, 1e-5f);
    return wdot(c->wt, c->out, c->N, c->C, c->C);
}

static void test_rmsnorm_backward(void **state) {
    (void)state;
    const int N = 6, C = 24;
    sl_rng r;
    sl_rng_init(&r, 42, 2);
    norm_ctx c = {N, C, randn(&r, (size_t)N * C, 1.5f, 0.3f), randn(&r, C, 0.3f, 1.0f), NULL, falloc((size_t)N * C),
                  NULL, falloc(N), randn(&r, (size_t)N * C, 1.0f, 0.0f)};
    int bad = 0;
    printf("rmsnorm (N=%d C=%d)\n", N, C);

    rmsnorm_loss(&c);
    double *ref = malloc(sizeof(double) * N * C), *rs = malloc(sizeof(double) * N);
    for (int i = 0; i < N; i++) {
        double ss = 0;
        for (int j = 0; j < C; j++) ss += (double)c.inp[i * C + j] * c.inp[i * C + j];
        rs[i] = 1.0 / sqrt(ss / C + 1e-5);
        for (int j = 0; j < C; j++) ref[i * C + j] = c.inp[i * C + j] * rs[i] * c.w[j];
    }
    bad += check_ref("rmsnorm out", c.out, C, ref, N, C, 1e-5);
    bad += check_ref("rmsnorm rstd", c.rstd, 1, rs, N, 1, 1e-5);
    float *rec = falloc((size_t)N * C);
    norm_recompute(rec, c.inp, NULL, c.rstd, c.w, NULL, N, C);
    for (int i = 0; i < N * C; i++) ref[i] = c.out[i];
    bad += check_ref("rmsnorm norm_recompute", rec, C, ref, N, C, 1e-6);

    float *ana = falloc((size_t)N * C), *num = falloc((size_t)N * C);
    rmsnorm_backward(ana, c.wt, c.inp, c.rstd, c.w, N, C);
    fd_grad(num, c.inp, N, C, C, 1e-2f, rmsnorm_loss, &c);
    bad += check_grad("rmsnorm dinp", ana, C, num, N, C, 2e-3, 1.0);

    assert_int_equal(bad, 0);
    free(ref), free(rs);
    sl_free(rec), sl_free(ana), sl_free(num);
    sl_free(c.inp), sl_free(c.w), sl_free(c.out), sl_free(c.rstd), sl_free(c.wt);
}

/* ------------------------------------------------------------------------------------ */
/* linear (frozen W): input gradient, with row strides wider than the rows */

typedef struct {
    int N, C, OC, ldi, ldo;
    float *inp, *W, *bias, *out, *wt;
} linear_ctx;

static double linear_loss(void *p) {
    linear_ctx *c = p;
    linear_forward(c->out, c->ldo, c->inp, c->ldi, c->W, c->bias, c->N, c->C, c->OC);
    return wdot(c->wt, c->out, c->N, c->OC, c->ldo);
}

static void test_linear_backward_input(void **state) {
    (void)state;
    const int N = 5, C = 7, OC = 9, ldi = C + 3, ldo = OC + 4;
    sl_rng r;
    sl_rng_init(&r, 42, 3);
    linear_ctx c = {N,
                    C,
                    OC,
                    ldi,
                    ldo,
                    randn(&r, (size_t)N * ldi, 1.0f, 0.0f),
                    randn(&r, (size_t)OC * C, 0.5f, 0.0f),
                    randn(&r, OC, 0.5f, 0.0f),
                    falloc((size_t)N * ldo),
                    randn(&r, (size_t)N * ldo, 1.0f, 0.0f)};
    int bad = 0;
    printf("linear (N=%d C=%d OC=%d, ldi=%d ldo=%d)\n", N, C, OC, ldi, ldo);

    /* padding of the output must be left alone */
    for (int i = 0; i < N; i++)
        for (int j = OC; j < ldo; j++) c.out[i * ldo + j] = 777.0f;
    linear_loss(&c);
    double *ref = malloc(sizeof(double) * N * OC);
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double s = c.bias[o];
            for (int j = 0; j < C; j++) s += (double)c.inp[i * ldi + j] * c.W[o * C + j];
            ref[i * OC + o] = s;
        }
    bad += check_ref("linear_forward out", c.out, ldo, ref, N, OC, 1e-5);
    for (int i = 0; i < N; i++)
        for (int j = OC; j < ldo; j++) bad += c.out[i * ldo + j] != 777.0f;

    /* dinp padding holds a sentinel that must survive */
    float *ana = falloc((size_t)N * ldi), *num = falloc((size_t)N * C);
    for (int i = 0; i < N; i++)
        for (int j = C; j < ldi; j++) ana[i * ldi + j] = -555.0f;
    linear_backward_input(ana, ldi, c.wt, ldo, c.W, N, C, OC);
    int pad_bad = 0;
    for (int i = 0; i < N; i++)
        for (int j = C; j < ldi; j++) pad_bad += ana[i * ldi + j] != -555.0f;
    if (pad_bad) printf("    linear_backward_input wrote %d padding elements of dinp\n", pad_bad);
    bad += pad_bad;
    fd_grad(num, c.inp, N, C, ldi, 1e-2f, linear_loss, &c);
    bad += check_grad("linear dinp (strided)", ana, ldi, num, N, C, 1e-3, 1.0);

    assert_int_equal(bad, 0);
    free(ref);
    sl_free(ana), sl_free(num);
    sl_free(c.inp), sl_free(c.W), sl_free(c.bias), sl_free(c.out), sl_free(c.wt);
}

/* ------------------------------------------------------------------------------------ */
/* LoRA: out += scale * (x A^T) B^T; dA, dB, dx. Optional dropout on x. */

typedef struct {
    int N, C, OC, r, ldx, ldo;
    float scale;
    float *x, *A, *Bm, *base, *out, *u, *wt;
    float p;       /* dropout probability on x (0: none) */
    uint64_t seed; /* dropout seed */
    float *xd;     /* dropped-out x (N*ldx) when p > 0 */
} lora_ctx;

static double lora_loss(void *p) {
    lora_ctx *c = p;
    memcpy(c->out, c->base, (size_t)c->N * c->ldo * sizeof(float));
    const float *x = c->x;
    if (c->p > 0.0f) {
        dropout_apply(c->xd, c->x, (size_t)c->N * c->ldx, c->p, c->seed);
        x = c->xd;
    }
    lora_forward(c->out, c->ldo, c->u, x, c->ldx, c->A, c->Bm, c->N, c->C, c->OC, c->r, c->scale);
    return wdot(c->wt, c->out, c->N, c->OC, c->ldo);
}

static void test_lora_backward(void **state) {
    (void)state;
    const int N = 6, C = 10, OC = 7, R = 3, ldx = C + 2, ldo = OC + 3, ldg = C + 5;
    const float scale = 2.5f;
    sl_rng r;
    sl_rng_init(&r, 42, 4);
    lora_ctx c = {N,
                  C,
                  OC,
                  R,
                  ldx,
                  ldo,
                  scale,
                  randn(&r, (size_t)N * ldx, 1.0f, 0.0f),
                  randn(&r, (size_t)R * C, 0.5f, 0.0f),
                  randn(&r, (size_t)OC * R, 0.5f, 0.0f),
                  randn(&r, (size_t)N * ldo, 1.0f, 0.0f),
                  falloc((size_t)N * ldo),
                  falloc((size_t)N * R),
                  randn(&r, (size_t)N * ldo, 1.0f, 0.0f),
                  0.0f,
                  0,
                  NULL};
    int bad = 0;
    printf("lora (N=%d C=%d OC=%d r=%d scale=%g, ldx=%d ldo=%d ldx_grad=%d)\n", N, C, OC, R, scale, ldx, ldo, ldg);

    /* forward: u = x A^T, out = base + scale * u B^T */
    lora_loss(&c);
    double *uref = malloc(sizeof(double) * N * R), *oref = malloc(sizeof(double) * N * OC);
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < R; k++) {
            double s = 0;
            for (int j = 0; j < C; j++) s += (double)c.x[i * ldx + j] * c.A[k * C + j];
            uref[i * R + k] = s;
        }
        for (int o = 0; o < OC; o++) {
            double s = 0;
            for (int k = 0; k < R; k++) s += uref[i * R + k] * c.Bm[o * R + k];
            oref[i * OC + o] = c.base[i * ldo + o] + scale * s;
        }
    }
    bad += check_ref("lora_forward u", c.u, R, uref, N, R, 1e-5);
    bad += check_ref("lora_forward out", c.out, ldo, oref, N, OC, 1e-5);

    float *dA = falloc((size_t)R * C), *dB = falloc((size_t)OC * R), *dx = falloc((size_t)N * ldg);
    float *du = falloc((size_t)N * R);
    for (int i = 0; i < N; i++)
        for (int j = C; j < ldg; j++) dx[i * ldg + j] = -555.0f;
    lora_backward(dA, dB, dx, ldg, du, c.wt, ldo, c.x, ldx, c.u, c.A, c.Bm, N, C, OC, R, scale);
    int pad_bad = 0;
    for (int i = 0; i < N; i++)
        for (int j = C; j < ldg; j++) pad_bad += dx[i * ldg + j] != -555.0f;
    if (pad_bad) printf("    lora_backward wrote %d padding elements of dx\n", pad_bad);
    bad += pad_bad;

    float *num = falloc((size_t)N * C + (size_t)R * C + (size_t)OC * R);
    fd_grad(num, c.x, N, C, ldx, 1e-2f, lora_loss, &c);
    bad += check_grad("lora dx (strided)", dx, ldg, num, N, C, 1e-3, 1.0);
    fd_grad(num, c.A, R, C, C, 1e-2f, lora_loss, &c);
    bad += check_grad("lora dA", dA, C, num, R, C, 1e-3, 1.0);
    fd_grad(num, c.Bm, OC, R, R, 1e-2f, lora_loss, &c);
    bad += check_grad("lora dB", dB, R, num, OC, R, 1e-3, 1.0);

    /* dx = NULL: dA and dB unchanged */
    float *dA2 = falloc((size_t)R * C), *dB2 = falloc((size_t)OC * R);
    lora_backward(dA2, dB2, NULL, 0, du, c.wt, ldo, c.x, ldx, c.u, c.A, c.Bm, N, C, OC, R, scale);
    bad += memcmp(dA, dA2, sizeof(float) * R * C) != 0;
    bad += memcmp(dB, dB2, sizeof(float) * OC * R) != 0;

    assert_int_equal(bad, 0);
    free(uref), free(oref);
    sl_free(dA), sl_free(dB), sl_free(dx), sl_free(du), sl_free(num), sl_free(dA2), sl_free(dB2);
    sl_free(c.x), sl_free(c.A), sl_free(c.Bm), sl_free(c.base), sl_free(c.out), sl_free(c.u), sl_free(c.wt);
}

/* ------------------------------------------------------------------------------------ */
/* dropout: forward statistics, determinism, identity at p = 0 */

static void test_dropout_apply(void **state) {
    (void)state;
    const size_t n = 100000;
    const float p = 0.3f;
    sl_rng r;
    sl_rng_init(&r, 42, 5);
    float *inp = randu(&r, n, 0.5f, 1.5f); /* no exact zeros */
    float *out = falloc(n), *out2 = falloc(n), *out3 = falloc(n);
    int bad = 0;
    printf("dropout (n=%zu p=%g)\n", n, p);

    dropout_apply(out, inp, n, p, 1234);
    size_t zeros = 0, scale_bad = 0;
    double sum_in = 0, sum_out = 0, max_scale_err = 0;
    for (size_t i = 0; i < n; i++) {
        sum_in += inp[i];
        sum_out += out[i];
        if (out[i] == 0.0f) {
            zeros++;
        } else {
            const double e = fabs((double)out[i] - (double)inp[i] / (1.0 - (double)p)) / ((double)inp[i] / (1.0 - p));
            max_scale_err = dmax(max_scale_err, e);
            scale_bad += e > 1e-6;
        }
    }
    const double frac = (double)zeros / (double)n;
    /* binomial: sd = sqrt(0.3*0.7/1e5) = 0.00145; 0.01 is ~7 sd */
    printf("  zeroed fraction %.5f (expect %.2f +- 0.01), kept scale rel err %.2e, mean ratio out/in %.5f\n", frac,
           p, max_scale_err, sum_out / sum_in);
    bad += fabs(frac - p) > 0.01;
    bad += scale_bad != 0;
    /* E[out] = E[inp]: the mean ratio's sd is ~0.002 here */
    bad += fabs(sum_out / sum_in - 1.0) > 0.015;

    /* deterministic by seed; in place gives the same; the mask depends only on (seed, index)
     * so a shorter call (the serial path) agrees with a prefix of the long (parallel) one */
    dropout_apply(out2, inp, n, p, 1234);
    bad += memcmp(out, out2, n * sizeof(float)) != 0;
    memcpy(out3, inp, n * sizeof(float));
    dropout_apply(out3, out3, n, p, 1234);
    bad += memcmp(out, out3, n * sizeof(float)) != 0;
    dropout_apply(out3, inp, 1000, p, 1234);
    bad += memcmp(out, out3, 1000 * sizeof(float)) != 0;
    /* the mask does not depend on the values (backward recomputes it on the gradient) */
    float *ones = falloc(n);
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
    dropout_apply(out3, ones, n, p, 1234);
    size_t mask_diff = 0;
    for (size_t i = 0; i < n; i++) mask_diff += (out3[i] == 0.0f) != (out[i] == 0.0f);
    bad += mask_diff != 0;
    /* another seed: another mask (expected disagreement 2*0.3*0.7 = 0.42) */
    dropout_apply(out2, inp, n, p, 1235);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += (out2[i] == 0.0f) != (out[i] == 0.0f);
    printf("  seed 1234 vs 1235: masks differ at %.4f of positions (expect ~0.42)\n", (double)differ / n);
    bad += fabs((double)differ / n - 0.42) > 0.02;

    /* p = 0: identity, out of place and in place */
    dropout_apply(out2, inp, n, 0.0f, 99);
    bad += memcmp(out2, inp, n * sizeof(float)) != 0;
    memcpy(out3, inp, n * sizeof(float));
    dropout_apply(out3, out3, n, 0.0f, 99);
    bad += memcmp(out3, inp, n * sizeof(float)) != 0;

    assert_int_equal(bad, 0);
    sl_free(inp), sl_free(out), sl_free(out2), sl_free(out3), sl_free(ones);
}

/* LoRA on a dropped-out input: the input gradient is dropout_apply(dx') with the same seed */
static void test_lora_dropout_backward(void **state) {
    (void)state;
    const int N = 6, C = 10, OC = 7, R = 4;
    const float scale = 0.5f, p = 0.3f;
    const uint64_t seed = 777;
    sl_rng r;
    sl_rng_init(&r, 42, 6);
    lora_ctx c = {N,
                  C,
                  OC,
                  R,
                  C,
                  OC,
                  scale,
                  randn(&r, (size_t)N * C, 1.0f, 0.0f),
                  randn(&r, (size_t)R * C, 0.5f, 0.0f),
                  randn(&r, (size_t)OC * R, 0.5f, 0.0f),
                  randn(&r, (size_t)N * OC, 1.0f, 0.0f),
                  falloc((size_t)N * OC),
                  falloc((size_t)N * R),
                  randn(&r, (size_t)N * OC, 1.0f, 0.0f),
                  p,
                  seed,
                  falloc((size_t)N * C)};
    int bad = 0;
    printf("lora + dropout (N=%d C=%d OC=%d r=%d scale=%g p=%g)\n", N, C, OC, R, scale, p);

    lora_loss(&c); /* leaves c.xd and c.u for the unperturbed input */
    size_t dropped = 0;
    for (int i = 0; i < N * C; i++) dropped += c.xd[i] == 0.0f;
    printf("  %zu of %d inputs dropped\n", dropped, N * C);
    bad += dropped == 0 || dropped == (size_t)N * C; /* the check below must see both kinds */

    float *dA = falloc((size_t)R * C), *dB = falloc((size_t)OC * R), *dxd = falloc((size_t)N * C);
    float *dx = falloc((size_t)N * C), *du = falloc((size_t)N * R);
    lora_backward(dA, dB, dxd, C, du, c.wt, OC, c.xd, C, c.u, c.A, c.Bm, N, C, OC, R, scale);
    dropout_apply(dx, dxd, (size_t)N * C, p, seed);

    float *num = falloc((size_t)N * C + (size_t)R * C + (size_t)OC * R);
    fd_grad(num, c.x, N, C, C, 1e-2f, lora_loss, &c);
    bad += check_grad("lora+dropout dx", dx, C, num, N, C, 1e-3, 1.0);
    fd_grad(num, c.A, R, C, C, 1e-2f, lora_loss, &c);
    bad += check_grad("lora+dropout dA", dA, C, num, R, C, 1e-3, 1.0);
    fd_grad(num, c.Bm, OC, R, R, 1e-2f, lora_loss, &c);
    bad += check_grad("lora+dropout dB", dB, R, num, OC, R, 1e-3, 1.0);

    assert_int_equal(bad, 0);
    sl_free(dA), sl_free(dB), sl_free(dxd), sl_free(dx), sl_free(du), sl_free(num);
    sl_free(c.x), sl_free(c.A), sl_free(c.Bm), sl_free(c.base), sl_free(c.out), sl_free(c.u), sl_free(c.wt);
    sl_free(c.xd);
}

/* ------------------------------------------------------------------------------------ */
/* attention */

typedef struct {
    int B, T, C, NH, NKV;
    float *qkv, *out, *att, *wt;
} attn_ctx;

static double attention_loss(void *p) {
    attn_ctx *c = p;
    attention_forward(c->out, c->att, c->qkv, c->B, c->T, c->C, c->NH, c->NKV);
    return wdot(c->wt, c->out, c->B * c->T, c->C, c->C);
}

static void run_attention_check(int NH, int NKV, uint64_t stream) {
    const int B = 2, T = 5, hs = 4, C = NH * hs, KV = NKV * hs, ld = C + 2 * KV, N = B * T;
    sl_rng r;
    sl_rng_init(&r, 42, stream);
    attn_ctx c = {B,
                  T,
                  C,
                  NH,
                  NKV,
                  randn(&r, (size_t)N * ld, 1.0f, 0.0f),
                  falloc((size_t)N * C),
                  falloc((size_t)B * NH * T * T),
                  randn(&r, (size_t)N * C, 1.0f, 0.0f)};
    int bad = 0;
    printf("attention (B=%d T=%d NH=%d NKV=%d hs=%d)\n", B, T, NH, NKV, hs);

    /* forward against float64, straight from the layout in ops.h */
    attention_loss(&c);
    double *oref = calloc((size_t)N * C, sizeof(double)), *aref = calloc((size_t)B * NH * T * T, sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const int kvh = h / (NH / NKV);
            for (int t = 0; t < T; t++) {
                const float *q = c.qkv + (size_t)(b * T + t) * ld + h * hs;
                double s[16], mx = -1e300, sum = 0;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *k = c.qkv + (size_t)(b * T + t2) * ld + C + kvh * hs;
                    double d = 0;
                    for (int i = 0; i < hs; i++) d += (double)q[i] * k[i];
                    s[t2] = d / sqrt((double)hs);
                    mx = dmax(mx, s[t2]);
                }
                for (int t2 = 0; t2 <= t; t2++) sum += (s[t2] = exp(s[t2] - mx));
                for (int t2 = 0; t2 <= t; t2++) {
                    const double pr = s[t2] / sum;
                    aref[(((size_t)b * NH + h) * T + t) * T + t2] = pr;
                    const float *v = c.qkv + (size_t)(b * T + t2) * ld + C + KV + kvh * hs;
                    for (int i = 0; i < hs; i++) oref[(size_t)(b * T + t) * C + h * hs + i] += pr * v[i];
                }
            }
        }
    bad += check_ref("attention out", c.out, C, oref, N, C, 1e-5);
    bad += check_ref("attention att (zero above diag)", c.att, T, aref, B * NH * T, T, 1e-6);
    for (int i = 0; i < B * NH * T; i++)
        for (int t2 = i % T + 1; t2 < T; t2++) bad += c.att[i * T + t2] != 0.0f;

    float *ana = falloc((size_t)N * ld), *num = falloc((size_t)N * ld);
    attention_backward(ana, c.wt, c.qkv, c.att, B, T, C, NH, NKV);
    fd_grad(num, c.qkv, N, ld, ld, 1e-2f, attention_loss, &c);
    /* check q, k, v columns separately: the sub-blocks of the (N, ld) arrays */
    char name[64];
    float *numq = falloc((size_t)N * ld);
    for (int part = 0; part < 3; part++) {
        const int c0 = part == 0 ? 0 : part == 1 ? C : C + KV, w = part == 0 ? C : KV;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < w; j++) numq[i * w + j] = num[i * ld + c0 + j];
        snprintf(name, sizeof(name), "attention d%c (NH=%d NKV=%d)", "qkv"[part], NH, NKV);
        bad += check_grad(name, ana + c0, ld, numq, N, w, 2e-3, 1.0);
    }

    assert_int_equal(bad, 0);
    free(oref), free(aref);
    sl_free(ana), sl_free(num), sl_free(numq);
    sl_free(c.qkv), sl_free(c.out), sl_free(c.att), sl_free(c.wt);
}

static void test_attention_backward_mha(void **state) {
    (void)state;
    run_attention_check(2, 2, 7);
}

static void test_attention_backward_gqa(void **state) {
    (void)state;
    run_attention_check(4, 2, 8);
}

/* ------------------------------------------------------------------------------------ */
/* rope */

typedef struct {
    int B, T, C, NH, NKV, ld;
    const float *cs, *sn;
    float *qkv, *tmp, *wt;
} rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    memcpy(c->tmp, c->qkv, (size_t)c->B * c->T * c->ld * sizeof(float));
    rope_apply(c->tmp, c->cs, c->sn, c->B, c->T, c->C, c->NH, c->NKV, 0);
    return wdot(c->wt, c->tmp, c->B * c->T, c->ld, c->ld);
}

static void test_rope(void **state) {
    (void)state;
    const int B = 2, T = 7, NH = 4, NKV = 2, hs = 8, C = NH * hs, KV = NKV * hs, ld = C + 2 * KV, N = B * T;
    const int maxT = T + 3;
    const float theta = 10000.0f;
    sl_rng r;
    sl_rng_init(&r, 42, 9);
    float *cs = falloc((size_t)maxT * hs / 2), *sn = falloc((size_t)maxT * hs / 2);
    rope_table(cs, sn, maxT, hs, theta);
    rope_ctx c = {B,  T,  C, NH, NKV, ld, cs, sn, randn(&r, (size_t)N * ld, 1.0f, 0.0f), falloc((size_t)N * ld),
                  randn(&r, (size_t)N * ld, 1.0f, 0.0f)};
    int bad = 0;
    printf("rope (B=%d T=%d NH=%d NKV=%d hs=%d theta=%g)\n", B, T, NH, NKV, hs, theta);

    /* forward against the documented convention: in each head, channels (2i, 2i+1) at
     * position t rotate by t * theta^(-2i/hs); v columns untouched */
    rope_loss(&c);
    double *ref = malloc(sizeof(double) * N * ld);
    for (int row = 0; row < N; row++) {
        const int t = row % T;
        for (int col = 0; col < ld; col++) ref[row * ld + col] = c.qkv[row * ld + col];
        for (int col = 0; col < C + KV; col += 2) {
            const int i = (col % hs) / 2;
            const double ang = t * pow((double)theta, -2.0 * i / hs);
            const double v0 = c.qkv[row * ld + col], v1 = c.qkv[row * ld + col + 1];
            ref[row * ld + col] = v0 * cos(ang) - v1 * sin(ang);
            ref[row * ld + col + 1] = v0 * sin(ang) + v1 * cos(ang);
        }
    }
    bad += check_ref("rope forward", c.tmp, ld, ref, N, ld, 1e-5);
    for (int row = 0; row < N; row++)
        bad += memcmp(c.tmp + row * ld + C + KV, c.qkv + row * ld + C + KV, (size_t)KV * sizeof(float)) != 0;

    /* inverse undoes forward */
    float *back = fcopy(c.tmp, (size_t)N * ld);
    rope_apply(back, cs, sn, B, T, C, NH, NKV, 1);
    for (int i = 0; i < N * ld; i++) ref[i] = c.qkv[i];
    bad += check_ref("rope inverse(rope(x)) = x", back, ld, ref, N, ld, 1e-6);

    /* orthogonal: the gradient of sum(w * rope(x)) is rope_inverse(w) */
    float *ana = fcopy(c.wt, (size_t)N * ld), *num = falloc((size_t)N * ld);
    rope_apply(ana, cs, sn, B, T, C, NH, NKV, 1);
    fd_grad(num, c.qkv, N, ld, ld, 1e-2f, rope_loss, &c);
    bad += check_grad("rope dqkv = rope_inverse(dy)", ana, ld, num, N, ld, 1e-3, 1.0);

    assert_int_equal(bad, 0);
    free(ref);
    sl_free(cs), sl_free(sn), sl_free(back), sl_free(ana), sl_free(num);
    sl_free(c.qkv), sl_free(c.tmp), sl_free(c.wt);
}

/* ------------------------------------------------------------------------------------ */
/* activations */

typedef struct {
    size_t n;
    float *a, *b, *out, *wt;
} act_ctx;

static double gelu_loss(void *p) {
    act_ctx *c = p;
    gelu_forward(c->out, c->a, c->n);
    return wdot(c->wt, c->out, 1, (int)c->n, (int)c->n);
}

static void test_gelu_backward(void **state) {
    (void)state;
    const int n = 96;
    sl_rng r;
    sl_rng_init(&r, 42, 10);
    act_ctx c = {n, randu(&r, n, -6.0f, 6.0f), NULL, falloc(n), randn(&r, n, 1.0f, 0.0f)};
    int bad = 0;
    printf("gelu (n=%d, x in [-6,6])\n", n);

    gelu_loss(&c);
    double *ref = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) {
        const double x = c.a[i];
        ref[i] = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
    bad += check_ref("gelu forward", c.out, n, ref, 1, n, 1e-5);

    float *ana = falloc(n), *num = falloc(n);
    gelu_backward(ana, c.a, c.wt, n);
    fd_grad(num, c.a, 1, n, n, 1e-2f, gelu_loss, &c);
    bad += check_grad("gelu dinp", ana, n, num, 1, n, 1e-3, 1.0);

    assert_int_equal(bad, 0);
    free(ref);
    sl_free(ana), sl_free(num), sl_free(c.a), sl_free(c.out), sl_free(c.wt);
}

static double swiglu_loss(void *p) {
    act_ctx *c = p;
    swiglu_forward(c->out, c->a, c->b, c->n);
    return wdot(c->wt, c->out, 1, (int)c->n, (int)c->n);
}

static void test_swiglu_backward(void **state) {
    (void)state;
    const int n = 96;
    sl_rng r;
    sl_rng_init(&r, 42, 11);
    act_ctx c = {n, randu(&r, n, -6.0f, 6.0f), randn(&r, n, 1.0f, 0.0f), falloc(n), randn(&r, n, 1.0f, 0.0f)};
    int bad = 0;
    printf("swiglu (n=%d, gate in [-6,6])\n", n);

    swiglu_loss(&c);
    double *ref = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) {
        const double g = c.a[i];
        ref[i] = g / (1.0 + exp(-g)) * c.b[i];
    }
    bad += check_ref("swiglu forward", c.out, n, ref, 1, n, 1e-5);

    float *dg = falloc(n), *du = falloc(n), *num = falloc(n);
    swiglu_backward(dg, du, c.wt, c.a, c.b, n);
    fd_grad(num, c.a, 1, n, n, 1e-2f, swiglu_loss, &c);
    bad += check_grad("swiglu dgate", dg, n, num, 1, n, 1e-3, 1.0);
    fd_grad(num, c.b, 1, n, n, 1e-2f, swiglu_loss, &c);
    bad += check_grad("swiglu dup", du, n, num, 1, n, 1e-3, 1.0);

    assert_int_equal(bad, 0);
    free(ref);
    sl_free(dg), sl_free(du), sl_free(num), sl_free(c.a), sl_free(c.b), sl_free(c.out), sl_free(c.wt);
}

/* ------------------------------------------------------------------------------------ */
/* loss head */

typedef struct {
    int N, C, V;
    float *x, *W, *row_loss, *scratch;
    int *targets;
    uint8_t *mask;
} ce_ctx;

static double ce_loss(void *p) {
    ce_ctx *c = p;
    return crossentropy_head(NULL, NULL, c->row_loss, c->scratch, c->x, c->W, c->targets, c->mask, c->N, c->C,
                             c->V);
}

static void test_crossentropy_head(void **state) {
    (void)state;
    const int N = 70, C = 8, V = 11, Wrows = V + 2; /* W's extra rows must be ignored */
    sl_rng r;
    sl_rng_init(&r, 42, 12);
    ce_ctx c = {N,
                C,
                V,
                randn(&r, (size_t)N * C, 1.0f, 0.0f),
                randn(&r, (size_t)Wrows * C, 0.7f, 0.0f),
                falloc(N),
                falloc((size_t)SL_HEAD_CHUNK_ROWS * V),
                malloc(sizeof(int) * N),
                malloc(N)};
    assert_true(N > SL_HEAD_CHUNK_ROWS);
    int count = 0;
    for (int i = 0; i < N; i++) {
        c.targets[i] = (int)(sl_rng_u64(&r) % (uint64_t)V);
        c.mask[i] = sl_rng_uniform(&r) < 0.7f;
        count += c.mask[i];
    }
    c.mask[0] = 0;     /* zeros in both chunks */
    c.mask[N - 1] = 0; /* and ones */
    c.mask[1] = c.mask[N - 2] = 1;
    count = 0;
    for (int i = 0; i < N; i++) count += c.mask[i];
    int bad = 0;
    printf("crossentropy_head (N=%d C=%d V=%d, chunk %d rows, %d of %d rows counted)\n", N, C, V,
           SL_HEAD_CHUNK_ROWS, count, N);

    /* loss, row losses and logits against float64 */
    float *logits = falloc((size_t)N * V), *dx = falloc((size_t)N * C);
    for (int i = 0; i < N * C; i++) dx[i] = 7.0f; /* dx is overwritten, not accumulated */
    const float loss = crossentropy_head(dx, logits, c.row_loss, c.scratch, c.x, c.W, c.targets, c.mask, N, C, V);
    double *lref = malloc(sizeof(double) * N * V), *rref = malloc(sizeof(double) * N), total = 0;
    for (int i = 0; i < N; i++) {
        double mx = -1e300, sum = 0;
        for (int v = 0; v < V; v++) {
            double s = 0;
            for (int j = 0; j < C; j++) s += (double)c.x[i * C + j] * c.W[v * C + j];
            lref[i * V + v] = s;
            mx = dmax(mx, s);
        }
        for (int v = 0; v < V; v++) sum += exp(lref[i * V + v] - mx);
        rref[i] = mx + log(sum) - lref[i * V + c.targets[i]];
        if (c.mask[i]) total += rref[i];
    }
    const double loss_ref = total / count;
    printf("  loss %.8f, float64 %.8f, rel err %.2e\n", loss, loss_ref, fabs(loss - loss_ref) / loss_ref);
    bad += !(fabs(loss - loss_ref) <= 1e-5 * loss_ref);
    bad += check_ref("ce logits_out = x W^T", logits, V, lref, N, V, 1e-5);
    bad += check_ref("ce row_loss", c.row_loss, 1, rref, N, 1, 1e-5);

    /* dx against finite differences of the returned loss; the gradient is O(1/count). The
     * loss comes back as a float (~4, ulp 5e-7), so h is larger than elsewhere: at h = 1e-2
     * its rounding alone is ~1e-3 of the gradient; h = 3e-2 balances it with truncation. */
    float *num = falloc((size_t)N * C);
    fd_grad(num, c.x, N, C, C, 3e-2f, ce_loss, &c);
    bad += check_grad("ce dx", dx, C, num, N, C, 2e-3, 1.0 / count);
    int masked_nonzero = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < C && !c.mask[i]; j++) masked_nonzero += dx[i * C + j] != 0.0f;
    bad += masked_nonzero;

    /* mask NULL = every row counts = an all-ones mask */
    uint8_t *ones = malloc(N);
    memset(ones, 1, N);
    float *dx1 = falloc((size_t)N * C), *dx2 = falloc((size_t)N * C);
    const float l1 = crossentropy_head(dx1, NULL, c.row_loss, c.scratch, c.x, c.W, c.targets, NULL, N, C, V);
    const float l2 = crossentropy_head(dx2, NULL, c.row_loss, c.scratch, c.x, c.W, c.targets, ones, N, C, V);
    bad += l1 != l2 || memcmp(dx1, dx2, sizeof(float) * N * C) != 0;
    /* no row counts: loss 0, dx 0 */
    memset(ones, 0, N);
    const float l0 = crossentropy_head(dx1, NULL, c.row_loss, c.scratch, c.x, c.W, c.targets, ones, N, C, V);
    bad += l0 != 0.0f;
    for (int i = 0; i < N * C; i++) bad += dx1[i] != 0.0f;

    assert_int_equal(bad, 0);
    free(lref), free(rref), free(ones);
    sl_free(logits), sl_free(dx), sl_free(num), sl_free(dx1), sl_free(dx2);
    sl_free(c.x), sl_free(c.W), sl_free(c.row_loss), sl_free(c.scratch);
    free(c.targets), free(c.mask);
}

/* ------------------------------------------------------------------------------------ */
/* embedding and residual values */

static void test_embedding_residual(void **state) {
    (void)state;
    sl_rng r;
    sl_rng_init(&r, 42, 13);
    int bad = 0;
    /* small, and large enough (B*T*C >= 16384) for the parallel path */
    const int shapes[2][3] = {{2, 3, 5}, {2, 64, 128}};
    for (int s = 0; s < 2; s++) {
        const int B = shapes[s][0], T = shapes[s][1], C = shapes[s][2], Vocab = 17;
        float *wte = randn(&r, (size_t)Vocab * C, 1.0f, 0.0f), *wpe = randn(&r, (size_t)T * C, 1.0f, 0.0f);
        float *out = falloc((size_t)B * T * C);
        int *tok = malloc(sizeof(int) * B * T);
        for (int i = 0; i < B * T; i++) tok[i] = (int)(sl_rng_u64(&r) % Vocab);
        tok[0] = 0, tok[B * T - 1] = Vocab - 1;
        embedding_forward(out, tok, wte, wpe, B, T, C);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int j = 0; j < C; j++)
                    bad += out[((size_t)b * T + t) * C + j] != wte[(size_t)tok[b * T + t] * C + j] + wpe[t * C + j];
        embedding_forward(out, tok, wte, NULL, B, T, C);
        for (int i = 0; i < B * T; i++) bad += memcmp(out + (size_t)i * C, wte + (size_t)tok[i] * C, C * 4) != 0;
        printf("embedding (B=%d T=%d C=%d): %d mismatches\n", B, T, C, bad);
        free(tok);
        sl_free(wte), sl_free(wpe), sl_free(out);
    }
    const size_t ns[2] = {37, 20000};
    for (int s = 0; s < 2; s++) {
        const size_t n = ns[s];
        float *a = randn(&r, n, 1.0f, 0.0f), *b = randn(&r, n, 1.0f, 0.0f), *out = falloc(n);
        residual_forward(out, a, b, n);
        for (size_t i = 0; i < n; i++) bad += out[i] != a[i] + b[i];
        residual_forward(a, a, b, n); /* in place */
        bad += memcmp(a, out, n * sizeof(float)) != 0;
        printf("residual (n=%zu): %d mismatches\n", n, bad);
        sl_free(a), sl_free(b), sl_free(out);
    }
    assert_int_equal(bad, 0);
}

/* ------------------------------------------------------------------------------------ */
/* every backward kernel accumulates: g0 + grad + grad = g0 + 2 grad */

static void test_backward_accumulates(void **state) {
    (void)state;
    sl_rng r;
    sl_rng_init(&r, 42, 14);
    int bad = 0;
    printf("accumulate (+=) convention\n");
    /* Each block: g1 = backward from zero; g2 = g0 then backward twice. */
#define ACCUM_SETUP(n)                                                                                          \
    const size_t n_ = (n);                                                                                      \
    float *g0 = randn(&r, n_, 1.0f, 0.0f), *g1 = falloc(n_), *g2 = fcopy(g0, n_)
#define ACCUM_DONE(name)                                                                                        \
    bad += check_accum(name, g0, g1, g2, n_);                                                                   \
    sl_free(g0), sl_free(g1), sl_free(g2)
    {
        const int N = 4, C = 16;
        float *x = randn(&r, N * C, 1.0f, 0.3f), *w = randn(&r, C, 0.2f, 1.0f), *b = randn(&r, C, 0.1f, 0.0f);
        float *dy = randn(&r, N * C, 1.0f, 0.0f), *out = falloc(N * C), *m = falloc(N), *s = falloc(N);
        {
            ACCUM_SETUP(N * C);
            layernorm_forward(out, m, s, x, w, b, N, C, 1e-5f);
            layernorm_backward(g1, dy, x, m, s, w, N, C);
            layernorm_backward(g2, dy, x, m, s, w, N, C);
            layernorm_backward(g2, dy, x, m, s, w, N, C);
            ACCUM_DONE("layernorm_backward");
        }
        {
            ACCUM_SETUP(N * C);
            rmsnorm_forward(out, s, x, w, N, C, 1e-5f);
            rmsnorm_backward(g1, dy, x, s, w, N, C);
            rmsnorm_backward(g2, dy, x, s, w, N, C);
            rmsnorm_backward(g2, dy, x, s, w, N, C);
            ACCUM_DONE("rmsnorm_backward");
        }
        sl_free(x), sl_free(w), sl_free(b), sl_free(dy), sl_free(out), sl_free(m), sl_free(s);
    }
    {
        const int N = 5, C = 7, OC = 9, ldi = C + 3, ldo = OC + 4;
        float *W = randn(&r, OC * C, 1.0f, 0.0f), *dy = randn(&r, N * ldo, 1.0f, 0.0f);
        ACCUM_SETUP(N * ldi); /* padding included: it must stay g0 */
        linear_backward_input(g1, ldi, dy, ldo, W, N, C, OC);
        linear_backward_input(g2, ldi, dy, ldo, W, N, C, OC);
        linear_backward_input(g2, ldi, dy, ldo, W, N, C, OC);
        ACCUM_DONE("linear_backward_input");
        sl_free(W), sl_free(dy);
    }
    {
        const int N = 6, C = 10, OC = 7, R = 3, ldx = C + 2, ldo = OC + 3, ldg = C + 5;
        float *x = randn(&r, N * ldx, 1.0f, 0.0f), *A = randn(&r, R * C, 1.0f, 0.0f);
        float *Bm = randn(&r, OC * R, 1.0f, 0.0f), *dy = randn(&r, N * ldo, 1.0f, 0.0f);
        float *u = falloc(N * R), *out = falloc(N * ldo), *du = falloc(N * R);
        lora_forward(out, ldo, u, x, ldx, A, Bm, N, C, OC, R, 1.7f);
        /* g = [dA | dB | dx] in one buffer */
        ACCUM_SETUP(R * C + OC * R + N * ldg);
        float *g[3] = {g1, g2, g2};
        for (int k = 0; k < 3; k++)
            lora_backward(g[k], g[k] + R * C, g[k] + R * C + OC * R, ldg, du, dy, ldo, x, ldx, u, A, Bm, N, C, OC, R,
                          1.7f);
        ACCUM_DONE("lora_backward (dA,dB,dx)");
        sl_free(x), sl_free(A), sl_free(Bm), sl_free(dy), sl_free(u), sl_free(out), sl_free(du);
    }
    for (int cfg = 0; cfg < 2; cfg++) {
        const int B = 2, T = 5, hs = 4, NH = cfg ? 4 : 2, NKV = 2, C = NH * hs, ld = C + 2 * NKV * hs;
        float *qkv = randn(&r, B * T * ld, 1.0f, 0.0f), *dy = randn(&r, B * T * C, 1.0f, 0.0f);
        float *out = falloc(B * T * C), *att = falloc(B * NH * T * T);
        attention_forward(out, att, qkv, B, T, C, NH, NKV);
        ACCUM_SETUP(B * T * ld);
        attention_backward(g1, dy, qkv, att, B, T, C, NH, NKV);
        attention_backward(g2, dy, qkv, att, B, T, C, NH, NKV);
        attention_backward(g2, dy, qkv, att, B, T, C, NH, NKV);
        ACCUM_DONE(cfg ? "attention_backward (GQA)" : "attention_backward (MHA)");
        sl_free(qkv), sl_free(dy), sl_free(out), sl_free(att);
    }
    {
        const size_t n = 20000; /* over the parallel threshold */
        float *x = randu(&r, n, -5.0f, 5.0f), *dy = randn(&r, n, 1.0f, 0.0f);
        {
            ACCUM_SETUP(n);
            gelu_backward(g1, x, dy, n);
            gelu_backward(g2, x, dy, n);
            gelu_backward(g2, x, dy, n);
            ACCUM_DONE("gelu_backward");
        }
        float *up = randn(&r, n, 1.0f, 0.0f);
        {
            ACCUM_SETUP(2 * n); /* [dgate | dup] */
            swiglu_backward(g1, g1 + n, dy, x, up, n);
            swiglu_backward(g2, g2 + n, dy, x, up, n);
            swiglu_backward(g2, g2 + n, dy, x, up, n);
            ACCUM_DONE("swiglu_backward (dgate,dup)");
        }
        sl_free(x), sl_free(dy), sl_free(up);
    }
#undef ACCUM_SETUP
#undef ACCUM_DONE
    assert_int_equal(bad, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_detects_error),
        cmocka_unit_test(test_layernorm_backward),
        cmocka_unit_test(test_rmsnorm_backward),
        cmocka_unit_test(test_linear_backward_input),
        cmocka_unit_test(test_lora_backward),
        cmocka_unit_test(test_dropout_apply),
        cmocka_unit_test(test_lora_dropout_backward),
        cmocka_unit_test(test_attention_backward_mha),
        cmocka_unit_test(test_attention_backward_gqa),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_gelu_backward),
        cmocka_unit_test(test_swiglu_backward),
        cmocka_unit_test(test_crossentropy_head),
        cmocka_unit_test(test_embedding_residual),
        cmocka_unit_test(test_backward_accumulates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
