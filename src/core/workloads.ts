// Where the pod spec lives in each workload kind the CLI mutates.

import { isPodLike, isRecord, type PodLike } from './types.ts';

const TEMPLATE_PATHS: Record<string, readonly string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  ReplicationController: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

export interface PodLocation {
  /** The path from the document to the pod (or template); empty for a Pod. */
  path: readonly string[];
  pod: PodLike;
}

/** Finds the pod spec in a document, or null for kinds that carry none. */
export function locatePod(document: unknown): PodLocation | null {
  if (!isRecord(document)) return null;
  const kind = document['kind'];
  if (kind === 'Pod') return isPodLike(document) ? { path: [], pod: document } : null;
  const path = typeof kind === 'string' ? TEMPLATE_PATHS[kind] : undefined;
  if (path === undefined) return null;
  let node: unknown = document;
  for (const key of path) {
    node = isRecord(node) ? node[key] : undefined;
  }
  return isPodLike(node) ? { path, pod: node } : null;
}

/** Returns a copy of `document` with the pod at `path` replaced. */
export function replacePod(
  document: Record<string, unknown>,
  path: readonly string[],
  pod: PodLike,
): unknown {
  if (path.length === 0) return pod;
  const [head, ...rest] = path as [string, ...string[]];
  const child = document[head];
  return { ...document, [head]: replacePod(isRecord(child) ? child : {}, rest, pod) };
}
