/** Reductions over axes: sum, mean, max, min (with keepDims), argmax, argmin. */
import { Tensor } from '../tensor';
const todo = (op: string): never => { throw new Error(`${op}: not implemented yet`); };
export function sum(x: Tensor, axis?: number | number[], keepDims = false): Tensor<'f32'> { return todo('sum'); }
export function mean(x: Tensor, axis?: number | number[], keepDims = false): Tensor<'f32'> { return todo('mean'); }
export function max(x: Tensor, axis?: number | number[], keepDims = false): Tensor<'f32'> { return todo('max'); }
export function min(x: Tensor, axis?: number | number[], keepDims = false): Tensor<'f32'> { return todo('min'); }
export function argmax(x: Tensor, axis: number, keepDims = false): Tensor<'i32'> { return todo('argmax'); }
export function argmin(x: Tensor, axis: number, keepDims = false): Tensor<'i32'> { return todo('argmin'); }
/** Sum a broadcast gradient back down to `shape` (used by every broadcasting op's backward). */
export function sumToShape(g: Tensor<'f32'>, shape: readonly number[]): Tensor<'f32'> { return todo('sumToShape'); }
