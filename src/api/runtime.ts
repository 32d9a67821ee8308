/** The native backend: which GEMM and SIMD path it uses, and the thread count. */
import { binding } from './binding';

export interface BackendInfo {
  blas: string;
  simd: string;
  threads: number;
  /** A CUDA device is usable now (a CUDA build, a driver and a GPU): same as ml.cuda.isAvailable(). */
  cuda: boolean;
  /** The addon was compiled with the CUDA backend (nvcc was found when it was built). */
  cudaBuild: boolean;
}

/** What the loaded addon was built with: the BLAS behind GEMM, the SIMD level, threads, CUDA. */
export function backendInfo(): BackendInfo {
  return binding().backendInfo();
}

/** Set the size of every native thread pool, the BLAS's included (also MODALAB_NUM_THREADS at start). */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`setNumThreads: expected a positive integer, got ${n}`);
  binding().setNumThreads(n);
}
