/** `modalab ui`: a read-only local web dashboard over a tracking database. See docs/dashboard.md. */
export { startDashboard, DEFAULT_PORT, DEFAULT_HOST } from './server';
export type { Dashboard, DashboardOptions } from './server';
export { Store } from './store';
export type { DashRun, DashSweep, RunQuery, WireSeries, DashArtifact } from './store';
