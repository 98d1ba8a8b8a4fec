/* gemm.h: the one entry point for matrix products. Row-major C (M,N) = alpha * op(A) op(B)
 * + beta * C, op(A) (M,K), op(B) (K,N), as cblas_sgemm.
 *
 * Why a wrapper: the element-wise kernels run on OpenMP threads, and OpenBLAS (Debian's
 * pthreads build) has a thread pool of its own; two pools busy-waiting on two cores slow
 * each other down several times over. So OpenBLAS runs single-threaded and sl_gemm splits
 * large products into row (or column) slices over the OpenMP threads: one pool for all
 * work. Results depend only on the shapes and the thread count, never on timing.
 *
 * Not for: anything but float32. */
#ifndef SPLITLLM_KERNELS_GEMM_H
#define SPLITLLM_KERNELS_GEMM_H

#include <cblas.h>

void sl_gemm(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Puts OpenBLAS in single-threaded mode (sl_gemm does this on first use). */
void sl_gemm_init(void);
/* Runs one mid-sized product on every thread, so that OpenBLAS's per-thread work buffers
 * and OpenMP's threads exist before a caller measures its baseline memory. */
void sl_gemm_warmup(void);

#endif
