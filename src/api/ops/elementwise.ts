/** Element-wise ops with NumPy broadcasting: arithmetic, activations, comparisons, where, dropout. */
import { Tensor } from '../tensor';

export type Operand = Tensor | number;
export interface GeluOptions { approximate?: 'none' | 'tanh' }
const todo = (op: string): never => { throw new Error(`${op}: not implemented yet`); };

export function add(a: Operand, b: Operand): Tensor<'f32'> { return todo('add'); }
export function sub(a: Operand, b: Operand): Tensor<'f32'> { return todo('sub'); }
export function mul(a: Operand, b: Operand): Tensor<'f32'> { return todo('mul'); }
export function div(a: Operand, b: Operand): Tensor<'f32'> { return todo('div'); }
export function pow(a: Operand, b: Operand): Tensor<'f32'> { return todo('pow'); }
export function maximum(a: Operand, b: Operand): Tensor<'f32'> { return todo('maximum'); }
export function minimum(a: Operand, b: Operand): Tensor<'f32'> { return todo('minimum'); }
export function eq(a: Operand, b: Operand): Tensor<'f32'> { return todo('eq'); }
export function ne(a: Operand, b: Operand): Tensor<'f32'> { return todo('ne'); }
export function lt(a: Operand, b: Operand): Tensor<'f32'> { return todo('lt'); }
export function le(a: Operand, b: Operand): Tensor<'f32'> { return todo('le'); }
export function gt(a: Operand, b: Operand): Tensor<'f32'> { return todo('gt'); }
export function ge(a: Operand, b: Operand): Tensor<'f32'> { return todo('ge'); }
export function neg(x: Tensor): Tensor<'f32'> { return todo('neg'); }
export function exp(x: Tensor): Tensor<'f32'> { return todo('exp'); }
export function log(x: Tensor): Tensor<'f32'> { return todo('log'); }
export function sqrt(x: Tensor): Tensor<'f32'> { return todo('sqrt'); }
export function abs(x: Tensor): Tensor<'f32'> { return todo('abs'); }
export function square(x: Tensor): Tensor<'f32'> { return todo('square'); }
export function tanh(x: Tensor): Tensor<'f32'> { return todo('tanh'); }
export function sigmoid(x: Tensor): Tensor<'f32'> { return todo('sigmoid'); }
export function relu(x: Tensor): Tensor<'f32'> { return todo('relu'); }
export function gelu(x: Tensor, opts?: GeluOptions): Tensor<'f32'> { return todo('gelu'); }
export function silu(x: Tensor): Tensor<'f32'> { return todo('silu'); }
export function where(cond: Tensor, a: Operand, b: Operand): Tensor<'f32'> { return todo('where'); }
export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor<'f32'> { return todo('maskedFill'); }
export function dropout(x: Tensor, p: number, training = true): Tensor<'f32'> { return todo('dropout'); }
