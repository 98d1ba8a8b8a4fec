/* gemm.c: see gemm.h. */
#include "kernels/gemm.h"

#include <omp.h>
#include <stdlib.h>

/* Below this many multiply-adds a product runs on one thread: splitting costs more. */
#define GEMM_PARALLEL_MIN_MACS (1L << 21)
/* Slice boundaries are multiples of this, so OpenBLAS's micro-kernels see full tiles. */
#define GEMM_SLICE_ALIGN 16

static int blas_single_threaded;

void sl_gemm_init(void) {
    if (!blas_single_threaded) {
        openblas_set_num_threads(1);
        blas_single_threaded = 1;
    }
}

void sl_gemm(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    sl_gemm_init();
    int threads = omp_get_max_threads();
    if (threads <= 1 || omp_in_parallel() || (long)M * N * K < GEMM_PARALLEL_MIN_MACS) {
        cblas_sgemm(CblasRowMajor, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* Split the longer side of C. */
    const int split_rows = M >= N;
    const int extent = split_rows ? M : N;
    int slice = (extent + threads - 1) / threads;
    slice = (slice + GEMM_SLICE_ALIGN - 1) / GEMM_SLICE_ALIGN * GEMM_SLICE_ALIGN;
    const int n_slices = (extent + slice - 1) / slice;
#pragma omp parallel for num_threads(n_slices) schedule(static, 1)
    for (int s = 0; s < n_slices; s++) {
        const int begin = s * slice;
        const int len = extent - begin < slice ? extent - begin : slice;
        if (split_rows) {
            /* rows begin.. of op(A) and C */
            const float *a = trans_a == CblasNoTrans ? A + (long)begin * lda : A + begin;
            cblas_sgemm(CblasRowMajor, trans_a, trans_b, len, N, K, alpha, a, lda, B, ldb, beta, C + (long)begin * ldc,
                        ldc);
        } else {
            /* columns begin.. of op(B) and C */
            const float *b = trans_b == CblasNoTrans ? B + begin : B + (long)begin * ldb;
            cblas_sgemm(CblasRowMajor, trans_a, trans_b, M, len, K, alpha, A, lda, b, ldb, beta, C + begin, ldc);
        }
    }
}

/* Big enough that OpenBLAS's packing buffers see full tiles on every slice. */
#define GEMM_WARMUP_N 512

void sl_gemm_warmup(void) {
    const int n = GEMM_WARMUP_N;
    float *a = calloc((size_t)n * n, sizeof(float)), *b = calloc((size_t)n * n, sizeof(float));
    float *c = calloc((size_t)n * n, sizeof(float));
    if (a && b && c) sl_gemm(CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    free(a);
    free(b);
    free(c);
}
