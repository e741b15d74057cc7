// The hook builders of hooks.ts as the planner uses them: each handler is a
// pure function of a few numbers, so it is built, frozen and fingerprinted
// once per distinct parameters and then shared by every pod that gets it.

import * as build from './hooks.ts';
import { fingerprint } from './status.ts';
import type { LifecycleHandler } from './types.ts';

/** Distinct parameters per builder before its cache is emptied and refilled. */
const LIMIT = 256;

const fingerprints = new WeakMap<LifecycleHandler, string>();

/**
 * Freezes a handler's objects, so that no pod's hook can be changed under the
 * others sharing it. Arrays are left as they are: V8's JSON.stringify takes a
 * slow path for frozen arrays, and a handler is in nearly every patch.
 */
function freezeObjects<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) freezeObjects(child);
    if (!Array.isArray(value)) Object.freeze(value);
  }
  return value;
}

function cached<A extends (string | number | undefined)[]>(
  builder: (...args: A) => LifecycleHandler,
): (...args: A) => LifecycleHandler {
  const byArgs = new Map<string, LifecycleHandler>();
  return (...args) => {
    // Numbers, and a fixed path: joined, they cannot collide.
    const key = args.join(' ');
    let handler = byArgs.get(key);
    if (handler === undefined) {
      handler = freezeObjects(builder(...args));
      fingerprints.set(handler, fingerprint(handler));
      if (byArgs.size >= LIMIT) byArgs.clear();
      byArgs.set(key, handler);
    }
    return handler;
  };
}

export const sleepAction = cached(build.sleepAction);
export const execSleep = cached(build.execSleep);
export const execSleepBinary = cached(build.execSleepBinary);
export const drainHook = cached(build.drainHook);
export const proxyHoldHook = cached(build.proxyHoldHook);

/** status.ts's fingerprint, kept for the handlers built here. */
export function handlerFingerprint(handler: LifecycleHandler): string {
  return fingerprints.get(handler) ?? fingerprint(handler);
}
