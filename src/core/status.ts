// The status annotation: a record of what the injector did, precise enough to
// undo it. Undoing before planning is what makes a second pass (webhook
// reinvocation, or the CLI run twice) reach the same pod as the first.

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
  /** Fingerprint of each preStop the injector wrote. */
  fp: Record<string, string>;
  /** Env vars the injector added, per container. */
  env?: Record<string, string[]>;
  /** Containers whose `lifecycle` object the injector created. */
  lc?: string[];
}

/** FNV-1a over a canonical JSON form: stable across key order. */
export function fingerprint(handler: LifecycleHandler): string {
  const text = canonicalJson(handler);
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isRecord(value)) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

export function readStatus(pod: PodLike): InjectorStatus | null {
  const raw = pod.metadata?.annotations?.[Annotation.status];
  if (raw === undefined) return null;
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

function allContainers(pod: PodLike): Container[] {
  return [...(pod.spec.initContainers ?? []), ...pod.spec.containers];
}

/**
 * Undoes, in place, what a previous pass recorded in `status`, where the pod
 * still carries exactly what that pass wrote. Anything changed since (by the
 * user or another webhook) is left as it is.
 */
export function revertStatus(pod: PodLike, status: InjectorStatus): void {
  const byName = new Map(allContainers(pod).map((c) => [c.name, c]));
  for (const [name, print] of Object.entries(status.fp)) {
    const container = byName.get(name);
    const preStop = container?.lifecycle?.preStop;
    if (container === undefined || preStop === undefined || fingerprint(preStop) !== print)
      continue;
    delete container.lifecycle!.preStop;
    if (status.lc?.includes(name) && Object.keys(container.lifecycle!).length === 0) {
      delete container.lifecycle;
    }
  }
  for (const [name, vars] of Object.entries(status.env ?? {})) {
    const container = byName.get(name);
    if (container?.env === undefined) continue;
    container.env = container.env.filter((v) => !(vars.includes(v.name) && v.value === 'true'));
    if (container.env.length === 0) delete container.env;
  }
  if (pod.spec.terminationGracePeriodSeconds === status.grace.to) {
    if (status.grace.from === null) delete pod.spec.terminationGracePeriodSeconds;
    else pod.spec.terminationGracePeriodSeconds = status.grace.from;
  }
  const annotations = pod.metadata?.annotations;
  if (annotations !== undefined) {
    delete annotations[Annotation.status];
  }
}

export function writeStatus(pod: PodLike, status: InjectorStatus): void {
  pod.metadata ??= {};
  pod.metadata.annotations ??= {};
  pod.metadata.annotations[Annotation.status] = JSON.stringify(status);
}
