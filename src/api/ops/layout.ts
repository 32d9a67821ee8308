/** Layout ops: reshape (a view), transpose/permute, slice, concat, stack, squeeze/unsqueeze, broadcastTo, clone. */
import { Tensor, Shape } from '../tensor';
import type { DType } from '../dtype';
const todo = (op: string): never => { throw new Error(`${op}: not implemented yet`); };
export function reshape<D extends DType>(x: Tensor<D>, shape: Shape): Tensor<D> { return todo('reshape'); }
export function flatten<D extends DType>(x: Tensor<D>, startAxis = 0, endAxis = -1): Tensor<D> { return todo('flatten'); }
export function squeeze<D extends DType>(x: Tensor<D>, axis?: number): Tensor<D> { return todo('squeeze'); }
export function unsqueeze<D extends DType>(x: Tensor<D>, axis: number): Tensor<D> { return todo('unsqueeze'); }
export function transpose<D extends DType>(x: Tensor<D>, axis0 = -2, axis1 = -1): Tensor<D> { return todo('transpose'); }
export function permute<D extends DType>(x: Tensor<D>, perm: readonly number[]): Tensor<D> { return todo('permute'); }
export function slice<D extends DType>(x: Tensor<D>, axis: number, start: number, end?: number): Tensor<D> { return todo('slice'); }
export function concat<D extends DType>(xs: Tensor<D>[], axis = 0): Tensor<D> { return todo('concat'); }
export function stack<D extends DType>(xs: Tensor<D>[], axis = 0): Tensor<D> { return todo('stack'); }
export function broadcastTo<D extends DType>(x: Tensor<D>, shape: Shape): Tensor<D> { return todo('broadcastTo'); }
export function clone<D extends DType>(x: Tensor<D>): Tensor<D> { return todo('clone'); }
