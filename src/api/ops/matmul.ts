/** matmul: 2-D and batched with broadcast batch dims, with transpose flags instead of materialised transposes. */
import { Tensor } from '../tensor';
export interface MatmulOptions { transA?: boolean; transB?: boolean }
const todo = (op: string): never => { throw new Error(`${op}: not implemented yet`); };
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor<'f32'> { return todo('matmul'); }
