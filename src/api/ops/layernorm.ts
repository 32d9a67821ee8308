/** layerNorm over the last axis: one fused native kernel each way. */
import { Tensor } from '../tensor';
const todo = (op: string): never => { throw new Error(`${op}: not implemented yet`); };
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor<'f32'> { return todo('layerNorm'); }
