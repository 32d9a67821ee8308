/**
 * Storage: one native allocation, shared by a tensor and its views, reference counted.
 *
 * Memory lives outside the JavaScript heap. It is freed when the last tensor that uses it is disposed, by
 * `dispose()`, `tidy()`, or, as a backstop, when the garbage collector finalises the last such tensor
 * (FinalizationRegistry). The addon reports every allocation to V8 as external memory, so the collector
 * knows about the pressure. `memory()` counts live tensors and bytes per device.
 */
import { binding, Handle } from './binding';
import type { Device } from './dtype';

export class Storage {
  refs = 1;
  constructor(readonly handle: Handle, readonly nbytes: number, readonly device: Device) {}

  retain(): this {
    if (this.refs <= 0) throw new Error('internal: retain of a freed storage');
    this.refs++;
    return this;
  }

  release(): void {
    if (this.refs <= 0) return;
    if (--this.refs === 0) {
      binding().free(this.handle);
      stats[this.device].bytes -= this.nbytes;
      stats[this.device].buffers--;
    }
  }

  get live(): boolean {
    return this.refs > 0;
  }
}

interface DeviceStats { tensors: number; bytes: number; buffers: number }
const stats: Record<Device, DeviceStats> = {
  cpu: { tensors: 0, bytes: 0, buffers: 0 },
  cuda: { tensors: 0, bytes: 0, buffers: 0 },
};

export function allocStorage(nbytes: number, device: Device, zero = false): Storage {
  if (device !== 'cpu') {
    throw new Error(`device '${device}' is not available in this build (only 'cpu'); see ml.cuda.isAvailable()`);
  }
  const h = binding().alloc(nbytes, zero);
  stats[device].bytes += nbytes;
  stats[device].buffers++;
  return new Storage(h, nbytes, device);
}

/** Called by Tensor's constructor and dispose; kept here so that all accounting sits in one place. */
export function countTensor(device: Device, delta: number): void {
  stats[device].tensors += delta;
}

export interface MemoryInfo {
  /** Live (not disposed, not collected) tensors on all devices. */
  numTensors: number;
  /** Bytes held by live storages on all devices. */
  numBytes: number;
  numBuffers: number;
  byDevice: Record<Device, { numTensors: number; numBytes: number; numBuffers: number }>;
}

/** Live tensors and bytes, per device and in total. */
export function memory(): MemoryInfo {
  const byDevice = {} as MemoryInfo['byDevice'];
  let numTensors = 0, numBytes = 0, numBuffers = 0;
  for (const d of Object.keys(stats) as Device[]) {
    const s = stats[d];
    byDevice[d] = { numTensors: s.tensors, numBytes: s.bytes, numBuffers: s.buffers };
    numTensors += s.tensors; numBytes += s.bytes; numBuffers += s.buffers;
  }
  return { numTensors, numBytes, numBuffers, byDevice };
}
