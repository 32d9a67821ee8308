/**
 * ml.cuda: the CUDA backend. Tensors move to the GPU with `x.to('cuda')` (or are made there with
 * `{ device: 'cuda' }`), and every op on GPU tensors runs the kernels of native/cuda. A build without nvcc, or a
 * machine without a driver or GPU, has no 'cuda' device: isAvailable() is false and everything stays on the CPU.
 */
import { binding } from './binding';
import { cudaUsable } from './storage';

/** Whether a CUDA device can be used (a CUDA build, a driver and a GPU). */
export function isAvailable(): boolean {
  return cudaUsable();
}

/** 1 with a usable GPU (the backend drives one device, the current one), else 0. */
export function deviceCount(): number {
  return isAvailable() ? 1 : 0;
}

export interface CudaInfo {
  /** The addon was compiled with the CUDA backend. */
  build: boolean;
  available: boolean;
  /** e.g. "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)"; '' without a device. */
  device: string;
  /** CUDA runtime version carried by the build (13000 = 13.0) and the driver's; 0 when absent. */
  runtime: number;
  driver: number;
  /** GEMM goes through cuBLAS (else the backend's own tiled and tensor-core kernels). */
  cublas: boolean;
}

/** What the backend found: build, device name, versions, cuBLAS. Safe on any machine. */
export function info(): CudaInfo {
  const i = binding().cudaInfo();
  return { build: i.build, available: i.available, device: i.device, runtime: i.runtime, driver: i.driver, cublas: i.cublas };
}

/** Wait for all queued GPU work; an asynchronous kernel error surfaces here. A no-op without a GPU. */
export function synchronize(): void {
  binding().cudaSynchronize();
}

/** Bytes the caching allocator holds from the driver (in use + cached); 0 without a GPU. */
export function memoryReserved(): number {
  return binding().cudaInfo().reserved;
}

/** Bytes of the caching allocator's blocks handed out and not yet freed; 0 without a GPU. */
export function memoryAllocated(): number {
  return binding().cudaInfo().inUse;
}
