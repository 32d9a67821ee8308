/**
 * `--device cpu|cuda` for the commands that run models (train, chat, generate): the device every tensor is made
 * on (ml.setDefaultDevice), checked before any work starts. Default: MODALAB_DEVICE, else 'cpu'.
 */
import { isDevice } from '../api/dtype';
import type * as mlTypes from '../index';

/** Apply `--device` (or `--device=`) from argv and return argv without it. Throws a clear error for a device this
 * machine lacks. */
export function takeDeviceFlag(argv: string[], cmd: string): string[] {
  const rest: string[] = [];
  let device: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--device') {
      device = argv[++i];
      if (device === undefined) throw new Error(`${cmd}: --device needs a value (cpu or cuda)`);
    } else if (a.startsWith('--device=')) {
      device = a.slice('--device='.length);
    } else {
      rest.push(a);
    }
  }
  if (device === undefined) return rest;
  if (!isDevice(device)) throw new Error(`${cmd}: --device must be cpu or cuda, got '${device}'`);
  const ml = require('../index') as typeof mlTypes;
  if (device === 'cuda' && !ml.cuda.isAvailable()) {
    const info = ml.cuda.info();
    const why = info.build ? 'no NVIDIA driver or GPU was found' : 'the native addon was built without CUDA (no nvcc)';
    throw new Error(`${cmd}: --device cuda: no CUDA device here (${why}); run without --device to use the CPU`);
  }
  ml.setDefaultDevice(device);
  return rest;
}
