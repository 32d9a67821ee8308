/** ml.cuda: the CUDA backend's presence. This build is CPU-only, so isAvailable() is false. */
import { binding } from './binding';

/** Whether a CUDA device can be used (a CUDA build, a driver and a GPU). */
export function isAvailable(): boolean {
  return binding().backendInfo().cuda;
}

export function deviceCount(): number {
  return isAvailable() ? 1 : 0;
}
