/**
 * Multimodal data (docs/data.md, docs/shapes.md, docs/loader.md): the `emoji` image-text pairs, the `shapes` visual
 * QA world, instruction JSON-lines, the sharp image pipeline with its on-disk cache, samplers and the loader.
 */
export type { ImageRef, Pair, QA, InstructionRecord, Splits, OnError, SkipReport } from './types';
export { loadEmoji, emojiKey, emojiLocales, emojiCaptions } from './emoji';
export type { EmojiOptions, EmojiDataset, EmojiStats, CaptionStyle } from './emoji';
export {
  generateScenes, shapesDataset, renderPng, majorityBaseline as shapesMajorityBaseline, captionsFor, questionsFor,
  SHAPES, COLOURS, SIZES, BACKGROUNDS, QA_TYPES,
} from './shapes';
export type { Scene, SceneObject, ShapesOptions, ShapesDatasetOptions, Combo, QAType } from './shapes';
export { makeInstructionRecords, writeInstructions, readInstructions, recordImages, isStrictBase64, positionRationale, finalAnswer } from './instruct';
export type { InstructionOptions, ReadInstructionsOptions } from './instruct';
export { decodeImage, decodeBase64Image, base64ToBytes, encodePng, augment, resolveTransform, CLIP_MEAN, CLIP_STD } from './image';
export type { ImageTransform, AugmentOptions } from './image';
export { preprocessSplit, cacheKey } from './cache';
export type { PreprocessItem, PreprocessOptions, PreprocessedSplit } from './cache';
export { DataLoader, imageTextBatchTask, shareArray } from './loader';
export type { DataLoaderOptions, LoaderStats, MainBatchFn, BatchContext, WorkerTask, ImageTextBatch, ImageTextAugment } from './loader';
export {
  SequentialSampler, RandomSampler, BatchSampler, WeightedRandomSampler, GroupedSampler, AliasTable, modalityBalanced,
  longTail, hashSeed, Rng,
} from './samplers';
export type { Sampler, KeepFilter, GroupInfo, LongTailOptions } from './samplers';
export { filterByScore } from './filter';
export type { FilterOptions, FilterResult } from './filter';
