/** Temporary: moved here from stages/instruct/cli.ts at integration. */
export { runInstruct, instructTable } from '../experiments/stages/instruct/cli';
