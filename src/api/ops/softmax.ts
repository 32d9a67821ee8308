/** Stable softmax and logSoftmax along an axis, fused forward and backward. */
import { Tensor } from '../tensor';
const todo = (op: string): never => { throw new Error(`${op}: not implemented yet`); };
export function softmax(x: Tensor, axis = -1): Tensor<'f32'> { return todo('softmax'); }
export function logSoftmax(x: Tensor, axis = -1): Tensor<'f32'> { return todo('logSoftmax'); }
