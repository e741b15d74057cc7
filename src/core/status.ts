// The status annotation: a record of what the injector wrote, precise enough
// to undo it. The write and the undo live side by side here. Undoing before
// planning is what makes a second pass (webhook reinvocation, or the CLI run
// twice) reach the same pod as the first.

import { Annotation } from './annotations.ts';
import type { Mode } from './policy.ts';
import { isRecord, type Container, type LifecycleHandler, type PodLike } from './types.ts';

export type HookKind =
  'sleep-action' | 'exec-sleep' | 'drain' | 'proxy-hold' | 'proxy-sleep' | 'kept' | 'none';

export interface InjectorStatus {
  v: 1;
  mode: Mode;
  delaySeconds: number;
  drainTimeoutSeconds?: number;
  drainQuietSeconds?: number;
  /** The grace period before (null: unset) and after. */
  grace: { from: number | null; to: number };
  /** What each considered container got. */
  hooks: Record<string, HookKind>;
  /** Fingerprint of each exec preStop the injector wrote. */
  fp: Record<string, string>;
  /**
   * The seconds of each sleep action the injector wrote: plain data, so that
   * a MutatingAdmissionPolicy (CEL, no hash functions) writes the same record.
   */
  sleep?: Record<string, number>;
  /** Env vars the injector added, per container. */
  env?: Record<string, string[]>;
  /** Containers whose `lifecycle` object the injector created. */
  lc?: string[];
}

/** What the planner writes into one container. */
export interface ContainerWrite {
  container: Container;
  hook: HookKind;
  handler?: LifecycleHandler | undefined;
  /** Env vars set to "true", unless the container already has them. */
  env?: readonly string[] | undefined;
}

/** The seconds of a handler that is exactly a sleep action; null for any other. */
function sleepSeconds(handler: LifecycleHandler): number | null {
  const keys = Object.keys(handler);
  const sleep = handler.sleep;
  if (keys.length !== 1 || !isRecord(sleep) || Object.keys(sleep).length !== 1) return null;
  return typeof sleep.seconds === 'number' ? sleep.seconds : null;
}

/**
 * FNV-1a over the handler's JSON. Every handler this project writes has one
 * key at each level, so its JSON is canonical, and a handler that comes back
 * from the API server (keys in Go's field order) prints the same.
 */
function fingerprint(handler: LifecycleHandler): string {
  const text = JSON.stringify(handler);
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

export function readStatus(pod: PodLike): InjectorStatus | null {
  const raw = pod.metadata?.annotations?.[Annotation.status];
  if (typeof raw !== 'string') return null;
  try {
    const parsed: unknown = JSON.parse(raw);
    if (!isRecord(parsed) || parsed['v'] !== 1) return null;
    if (!isRecord(parsed['grace']) || !isRecord(parsed['fp']) || !isRecord(parsed['hooks'])) {
      return null;
    }
    return parsed as unknown as InjectorStatus;
  } catch {
    return null;
  }
}

/**
 * Writes the hooks, env vars and grace period into `pod` (a writable copy)
 * and records them in the status annotation. `lifecycle: null` and
 * `env: null` count as absent.
 */
export function writeRecorded(
  pod: PodLike,
  header: Pick<
    InjectorStatus,
    'mode' | 'delaySeconds' | 'drainTimeoutSeconds' | 'drainQuietSeconds' | 'grace'
  >,
  writes: readonly ContainerWrite[],
): InjectorStatus {
  const status: InjectorStatus = { v: 1, ...header, hooks: {}, fp: {} };
  // Collected apart and added last, so the keys keep one order whichever
  // container needs them first: the admission policy writes the same text.
  let sleep: Record<string, number> | undefined;
  let addedEnv: Record<string, string[]> | undefined;
  let lc: string[] | undefined;
  for (const { container, hook, handler, env } of writes) {
    status.hooks[container.name] = hook;
    if (handler !== undefined) {
      if (!isRecord(container.lifecycle)) {
        container.lifecycle = {};
        (lc ??= []).push(container.name);
      }
      container.lifecycle.preStop = handler;
      const seconds = sleepSeconds(handler);
      if (seconds === null) status.fp[container.name] = fingerprint(handler);
      else (sleep ??= {})[container.name] = seconds;
    }
    const added: string[] = [];
    for (const name of env ?? []) {
      const list = Array.isArray(container.env) ? container.env : [];
      if (list.some((v) => isRecord(v) && v.name === name)) continue;
      container.env = [...list, { name, value: 'true' }];
      added.push(name);
    }
    if (added.length > 0) (addedEnv ??= {})[container.name] = added;
  }
  if (sleep !== undefined) status.sleep = sleep;
  if (addedEnv !== undefined) status.env = addedEnv;
  if (lc !== undefined) status.lc = lc;
  pod.spec.terminationGracePeriodSeconds = status.grace.to;
  if (!isRecord(pod.metadata)) pod.metadata = {};
  if (!isRecord(pod.metadata.annotations)) pod.metadata.annotations = {};
  pod.metadata.annotations[Annotation.status] = JSON.stringify(status);
  return status;
}

/**
 * Undoes, in `pod` (a writable copy), what writeRecorded recorded in
 * `status`, where the pod still carries exactly what was written. Anything
 * changed since (by the user or another webhook) is left as it is.
 */
export function undoRecorded(pod: PodLike, status: InjectorStatus): void {
  const byName = new Map<string, Container>();
  for (const container of [...(pod.spec.initContainers ?? []), ...pod.spec.containers]) {
    if (isRecord(container)) byName.set(container.name, container);
  }
  const written = (name: string, preStop: LifecycleHandler): boolean => {
    const print = status.fp[name];
    if (typeof print === 'string') return fingerprint(preStop) === print;
    const seconds = isRecord(status.sleep) ? status.sleep[name] : undefined;
    return seconds !== undefined && sleepSeconds(preStop) === seconds;
  };
  for (const name of Object.keys(status.hooks)) {
    const container = byName.get(name);
    const lifecycle = container?.lifecycle;
    if (!isRecord(lifecycle) || !isRecord(lifecycle.preStop)) continue;
    if (!written(name, lifecycle.preStop)) continue;
    delete lifecycle.preStop;
    if (status.lc?.includes(name) && Object.keys(lifecycle).length === 0) {
      delete container!.lifecycle;
    }
  }
  for (const [name, vars] of Object.entries(status.env ?? {})) {
    const container = byName.get(name);
    if (container === undefined || !Array.isArray(container.env)) continue;
    container.env = container.env.filter(
      (v) => !(isRecord(v) && vars.includes(v.name) && v.value === 'true'),
    );
    if (container.env.length === 0) delete container.env;
  }
  if (pod.spec.terminationGracePeriodSeconds === status.grace.to) {
    if (status.grace.from === null) delete pod.spec.terminationGracePeriodSeconds;
    else pod.spec.terminationGracePeriodSeconds = status.grace.from;
  }
  const annotations = pod.metadata?.annotations;
  if (isRecord(annotations)) delete annotations[Annotation.status];
}
