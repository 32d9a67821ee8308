/**
 * nn.Embedding: a [V, C] table looked up by i32 indices, initialised N(0, 1) like torch.nn.Embedding.
 *
 * ```ts
 * const emb = new ml.nn.Embedding(100, 16);
 * emb.forward(ml.tensor([[1, 2, 3]], [1, 3], { dtype: 'i32' })).shape;   // [1, 3, 16]
 * ```
 */
import { noGrad } from '../autograd';
import { randn } from '../creation';
import { Tensor, shapeStr } from '../tensor';
import { embedding } from '../ops/indexing';
import { checkNumber, checkTensor } from '../ops/util';
import { Module } from './module';

export class Embedding extends Module {
  /** [numEmbeddings, embeddingDim] */
  weight: Tensor<'f32'>;

  constructor(readonly numEmbeddings: number, readonly embeddingDim: number) {
    super();
    checkNumber('Embedding', 'numEmbeddings', numEmbeddings, { integer: true, min: 1 });
    checkNumber('Embedding', 'embeddingDim', embeddingDim, { integer: true, min: 1 });
    this.weight = this.registerParameter('weight', noGrad(() => randn([numEmbeddings, embeddingDim])));
  }

  /** indices (any shape, i32, each in [0, V)) -> [...indices.shape, C]; an index out of range throws. */
  forward(indices: Tensor<'i32'>): Tensor<'f32'> {
    checkTensor('Embedding', 'indices', indices);
    if (indices.dtype !== 'i32') {
      throw new TypeError(`Embedding(${this.numEmbeddings}, ${this.embeddingDim}): indices must be i32, got ` +
        `${indices.dtype} ${shapeStr(indices.shape)}`);
    }
    return embedding(this.weight, indices);
  }

  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}`;
  }
}
