/** dtypes and devices: names, sizes and the codes the addon uses. */
import { DTypeCode } from './binding';

export type DType = 'f32' | 'f16' | 'bf16' | 'i32';
export type Device = 'cpu' | 'cuda';
export type FloatDType = 'f32' | 'f16' | 'bf16';

/** What `toArray()` returns: i32 tensors give Int32Array, every float type gives Float32Array (widened). */
export type ArrayFor<D extends DType> = D extends 'i32' ? Int32Array : Float32Array;

export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32'];
export const DEVICES: readonly Device[] = ['cpu', 'cuda'];

export function dtypeSize(d: DType): number {
  return d === 'f16' || d === 'bf16' ? 2 : 4;
}

export function dtypeCode(d: DType): DTypeCode {
  switch (d) {
    case 'f32': return DTypeCode.F32;
    case 'f16': return DTypeCode.F16;
    case 'bf16': return DTypeCode.BF16;
    case 'i32': return DTypeCode.I32;
  }
}

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

export function isDevice(x: unknown): x is Device {
  return typeof x === 'string' && (DEVICES as readonly string[]).includes(x);
}

export function isFloat(d: DType): d is FloatDType {
  return d !== 'i32';
}
