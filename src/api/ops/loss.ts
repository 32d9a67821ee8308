/** crossEntropy: fused log-softmax + NLL that never stores the probability matrix. */
import { Tensor } from '../tensor';
export interface CrossEntropyOptions { ignoreIndex?: number; labelSmoothing?: number; reduction?: 'mean' | 'sum' | 'none' }
const todo = (op: string): never => { throw new Error(`${op}: not implemented yet`); };
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor<'f32'> { return todo('crossEntropy'); }
