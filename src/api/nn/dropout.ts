/**
 * nn.Dropout: zeroes each element with probability p in train mode and scales the rest by 1/(1-p);
 * the identity in eval mode (`model.eval()`).
 */
import { Tensor } from '../tensor';
import { dropout } from '../ops/elementwise';
import { checkNumber, checkTensor } from '../ops/util';
import { Module } from './module';

export class Dropout extends Module {
  readonly p: number;

  constructor(p = 0.5) {
    super();
    this.p = checkNumber('Dropout', 'p', p, { min: 0, max: 1 });
  }

  /** In eval mode, or with p = 0, returns x itself (no copy). */
  forward(x: Tensor): Tensor {
    checkTensor('Dropout', 'x', x);
    if (!this.training || this.p === 0) return x;
    return dropout(x, this.p, true);
  }

  override extraRepr(): string {
    return `p=${this.p}`;
  }
}
