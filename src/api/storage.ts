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

// Small-buffer cache. A tiny op costs well under a microsecond, and a native alloc + free pair is a third of
// that; so freed host buffers of up to 4 KiB go back to a per-size-class free list (64-byte classes, 4 MiB in
// all) and are handed out again without crossing into the addon. Larger buffers go straight back to the
// system. `emptyCache()` returns the cached ones.
const SMALL_MAX = 4096;
const CLASS_BYTES = 64;
const CACHE_LIMIT = 4 << 20;
const cache: Handle[][] = [];
let cachedBytes = 0;

// Large-buffer cache. A training step frees and reallocates the same large sizes every step; handing them back
// to the system means the next step faults every page in again (glibc returns big blocks with munmap/trim), which
// cost more than the attention kernel itself in a B4 H4 N256 step. Freed buffers above 4 KiB are kept by exact
// size, up to MODALAB_CACHE_MB in all (default 512; 0 turns the cache off), least recently freed returned first
// when over the limit. `ml.emptyCache()` frees everything cached.
const LARGE_LIMIT = (() => {
  const v = Number(process.env.MODALAB_CACHE_MB ?? '512');
  return Number.isFinite(v) && v >= 0 ? v * 1024 * 1024 : 512 * 1024 * 1024;
})();
const large = new Map<number, Handle[]>();   // insertion order = least recently freed size first
let largeBytes = 0;

function cacheLarge(h: Handle, cap: number): void {
  if (cap > LARGE_LIMIT) { binding().free(h); return; }
  while (largeBytes + cap > LARGE_LIMIT) {
    const [size, list] = large.entries().next().value as [number, Handle[]];
    binding().free(list.shift()!);
    largeBytes -= size;
    if (list.length === 0) large.delete(size);
  }
  const list = large.get(cap);
  if (list) list.push(h); else large.set(cap, [h]);
  largeBytes += cap;
}

function takeLarge(cap: number): Handle | undefined {
  const list = large.get(cap);
  if (!list) return undefined;
  const h = list.pop()!;
  if (list.length === 0) large.delete(cap);
  largeBytes -= cap;
  return h;
}

export class Storage {
  refs = 1;
  /** @param capacity the bytes actually allocated (a size class for small buffers) */
  constructor(readonly handle: Handle, readonly nbytes: number, readonly device: Device, readonly capacity = nbytes) {}

  retain(): this {
    if (this.refs <= 0) throw new Error('internal: retain of a freed storage');
    this.refs++;
    return this;
  }

  release(): void {
    if (this.refs <= 0) return;
    if (--this.refs === 0) {
      const cap = this.capacity;
      if (this.device === 'cuda') {
        binding().free(this.handle);   // the addon's CUDA caching allocator keeps the block for reuse
      } else if (cap <= SMALL_MAX) {
        if (cap > 0 && cachedBytes + cap <= CACHE_LIMIT) {
          (cache[cap / CLASS_BYTES] ??= []).push(this.handle);
          cachedBytes += cap;
        } else {
          binding().free(this.handle);
        }
      } else {
        cacheLarge(this.handle, cap);
      }
      stats[this.device].bytes -= this.nbytes;
      stats[this.device].buffers--;
    }
  }

  get live(): boolean {
    return this.refs > 0;
  }
}

interface DeviceStats { tensors: number; bytes: number; buffers: number; peak: number }
const stats: Record<Device, DeviceStats> = {
  cpu: { tensors: 0, bytes: 0, buffers: 0, peak: 0 },
  cuda: { tensors: 0, bytes: 0, buffers: 0, peak: 0 },
};

export function allocStorage(nbytes: number, device: Device, zero = false): Storage {
  if (device === 'cuda') return allocCuda(nbytes, zero);
  if (device !== 'cpu') throw new Error(`unknown device '${String(device)}' (expected 'cpu' or 'cuda')`);
  const st = stats[device];
  st.bytes += nbytes;
  st.buffers++;
  if (st.bytes > st.peak) st.peak = st.bytes;
  if (nbytes <= SMALL_MAX && !zero) {
    const cls = Math.max(1, Math.ceil(nbytes / CLASS_BYTES));
    const cap = cls * CLASS_BYTES;
    const list = cache[cls];
    let h: Handle;
    if (list !== undefined && list.length > 0) {
      h = list.pop()!;
      cachedBytes -= cap;
    } else {
      h = allocNative(cap, false, nbytes, device);
    }
    return new Storage(h, nbytes, device, cap);
  }
  // A zero-filled request reuses a cached buffer too (zeroing it is cheaper than faulting in fresh pages: the
  // backward of q/k/v slices asks for several zeroed 6-13 MB buffers every step).
  if (!zero || nbytes % 4 === 0) {
    const h = takeLarge(nbytes);
    if (h !== undefined) {
      if (zero) binding().fillF32(h, 0, nbytes / 4, 0);
      return new Storage(h, nbytes, device);
    }
  }
  return new Storage(allocNative(nbytes, zero, nbytes, device), nbytes, device);
}

/**
 * GPU memory. No cache on this side: the addon's caching allocator (native/cuda/runtime.cu) keeps freed device
 * blocks by size class and hands them out again, which is what cudaMalloc's cost calls for.
 */
function allocCuda(nbytes: number, zero: boolean): Storage {
  if (!cudaUsable()) {
    const why = binding().backendInfo().cudaBuild
      ? 'this build has the CUDA backend, but no driver or GPU was found'
      : 'this build has no CUDA backend (nvcc was not found when the addon was built)';
    throw new Error(`device 'cuda' is not available: ${why}; check ml.cuda.isAvailable() first`);
  }
  const st = stats.cuda;
  st.bytes += nbytes;
  st.buffers++;
  if (st.bytes > st.peak) st.peak = st.bytes;
  return new Storage(allocNative(nbytes, zero, nbytes, 'cuda'), nbytes, 'cuda');
}

let cudaChecked: boolean | undefined;
/** Whether GPU buffers can be made (asked once: the addon checks the driver and the device on first use). */
export function cudaUsable(): boolean {
  if (cudaChecked === undefined) cudaChecked = binding().backendInfo().cuda;
  return cudaChecked;
}

function allocNative(cap: number, zero: boolean, nbytes: number, device: Device): Handle {
  try {
    return binding().alloc(cap, zero, device === 'cuda' ? 1 : 0);
  } catch (e) {
    stats[device].bytes -= nbytes;
    stats[device].buffers--;
    throw e;
  }
}

/**
 * Free the host buffers kept for reuse and, with a GPU, the CUDA caching allocator's free blocks (returns the
 * host bytes released; `ml.cuda.memoryReserved()` shows the device side).
 */
export function emptyCache(): number {
  const b = binding();
  if (cudaChecked) b.cudaEmptyCache();
  const released = cachedBytes + largeBytes;
  for (const list of cache) if (list) for (const h of list) b.free(h);
  cache.length = 0;
  cachedBytes = 0;
  for (const list of large.values()) for (const h of list) b.free(h);
  large.clear();
  largeBytes = 0;
  return released;
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
  /** The highest numBytes since the start or the last resetPeak() (the peak memory of a step). */
  peakBytes: number;
  /** Freed host buffers kept for reuse (see emptyCache and MODALAB_CACHE_MB). */
  cachedBytes: number;
  byDevice: Record<Device, { numTensors: number; numBytes: number; numBuffers: number; peakBytes: number }>;
}

/** Live tensors and bytes, per device and in total. */
export function memory(): MemoryInfo {
  const byDevice = {} as MemoryInfo['byDevice'];
  let numTensors = 0, numBytes = 0, numBuffers = 0, peakBytes = 0;
  for (const d of Object.keys(stats) as Device[]) {
    const s = stats[d];
    byDevice[d] = { numTensors: s.tensors, numBytes: s.bytes, numBuffers: s.buffers, peakBytes: s.peak };
    numTensors += s.tensors; numBytes += s.bytes; numBuffers += s.buffers; peakBytes += s.peak;
  }
  return { numTensors, numBytes, numBuffers, peakBytes, cachedBytes: cachedBytes + largeBytes, byDevice };
}

/** Start a new peak measurement: peakBytes becomes the bytes live now. Returns the previous peak. */
export function resetPeak(): number {
  let prev = 0;
  for (const d of Object.keys(stats) as Device[]) {
    prev += stats[d].peak;
    stats[d].peak = stats[d].bytes;
  }
  return prev;
}
