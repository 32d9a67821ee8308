/** Indexing: gather (torch.gather), indexSelect, embedding. Out-of-range indices throw, never read outside memory. */
import { Tensor } from '../tensor';
import type { DType } from '../dtype';
const todo = (op: string): never => { throw new Error(`${op}: not implemented yet`); };
export function gather(x: Tensor, axis: number, index: Tensor<'i32'>): Tensor<'f32'> { return todo('gather'); }
export function indexSelect<D extends DType>(x: Tensor<D>, axis: number, index: Tensor<'i32'>): Tensor<D> { return todo('indexSelect'); }
export function embedding(weight: Tensor, indices: Tensor<'i32'>): Tensor<'f32'> { return todo('embedding'); }
