// Evaluation metrics: retrieval (Recall@K, mAP, ranks), captions (BLEU-4, ROUGE-L), VQA accuracy. See docs/eval.md.
export { retrievalMetrics, topK, chanceLevels, relevantRanks, DEFAULT_KS } from './retrieval';
export type { Embeddings, RetrievalOptions, DirectionMetrics, RetrievalMetrics } from './retrieval';
export { tokenize, corpusBleu, sentenceBleu, rougeL, lcsLength } from './text';
export type { Text, BleuOptions, BleuResult, BleuSmoothing, RougeOptions, RougeResult } from './text';
export { normalizeAnswer, vqaScore, vqaAccuracy, majorityBaseline } from './vqa';
export type { VqaResult } from './vqa';
