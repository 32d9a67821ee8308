/** Experiment tracking: runs, configs, metrics and artifacts in one SQLite file. See docs/tracking.md. */
export {
  Tracker,
  Run,
  DEFAULT_DB,
  FLUSH_INTERVAL_MS,
  STALE_AFTER_MS,
  REMOTE_STALE_AFTER_MS,
  BUSY_TIMEOUT_MS,
  type RunStatus,
  type StartRunOptions,
  type RunInfo,
  type RunFilter,
  type MetricSeries,
  type MetricPoint,
  type ParamsTable,
  type ArtifactInfo,
} from './tracker';
export { SCHEMA_VERSION } from './schema';
export { checkConfig, flattenConfig, type JsonValue } from './config';
