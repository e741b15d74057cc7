// One pod admission: request -> policy and planner -> allowed response with
// a patch. No I/O of its own beyond asking the cluster view (a cache) for a
// namespace's annotations.

import type { NamespaceAnnotations } from '../cluster/view.ts';
import type { Capabilities } from '../core/capabilities.ts';
import { mutatePod } from '../core/mutate.ts';
import type { PlannerConfig } from '../core/planner.ts';
import type { PolicyWarning, Settings } from '../core/policy.ts';
import { isPodLike } from '../core/types.ts';
import { allowed, patchFor, type AdmissionRequest, type AdmissionResponse } from './review.ts';

/** Namespaces never injected, whatever they say. */
export const SYSTEM_NAMESPACES: readonly string[] = [
  'kube-system',
  'kube-public',
  'kube-node-lease',
];

export interface AdmissionEnvironment {
  defaults: Settings;
  planner: PlannerConfig;
  capabilities(): Capabilities;
  /** A promise only when the view must ask: a known namespace is answered at once. */
  namespaceAnnotations(namespace: string): NamespaceAnnotations | Promise<NamespaceAnnotations>;
  excludedNamespaces: ReadonlySet<string>;
}

export type AdmissionOutcome = 'mutated' | 'unchanged' | 'skipped' | 'error';

/** What was decided for a pod, for logs and metrics. */
export interface AdmissionSummary {
  outcome: AdmissionOutcome;
  reason?: string;
  mode?: Settings['mode'];
  policyWarnings: readonly PolicyWarning[];
  hooks?: Record<string, string>;
  grace?: { from: number | null; to: number } | null;
}

export interface AdmissionResult {
  response: AdmissionResponse;
  summary: AdmissionSummary;
}

/**
 * Admits one pod. Synchronous when the namespace is known, as nearly always;
 * a promise only when the cluster view must ask the API server.
 */
export type AdmitPod = (request: AdmissionRequest) => AdmissionResult | Promise<AdmissionResult>;

function skipped(uid: string, reason: string, warnings: string[] = []): AdmissionResult {
  return {
    response: allowed(uid, [], warnings),
    summary: { outcome: 'skipped', reason, policyWarnings: [] },
  };
}

/** Fail open: a pod is never rejected, nor left waiting, because of this project. */
function failed(uid: string, error: unknown): AdmissionResult {
  return {
    response: allowed(uid, [], ['internal error; pod admitted unchanged']),
    summary: {
      outcome: 'error',
      reason: error instanceof Error ? error.message : String(error),
      policyWarnings: [],
    },
  };
}

function planned(
  request: AdmissionRequest,
  env: AdmissionEnvironment,
  namespaceAnnotations: NamespaceAnnotations,
): AdmissionResult {
  const object = request.object as Parameters<typeof mutatePod>[0];
  const mutation = mutatePod(object, {
    defaults: env.defaults,
    capabilities: env.capabilities(),
    config: env.planner,
    namespaceAnnotations,
  });
  const patch = patchFor(object, mutation.pod);
  const hooks: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const { name, hook } of mutation.decisions) hooks[name] = hook;
  return {
    response: allowed(request.uid, patch, mutation.messages),
    summary: {
      outcome:
        patch.length > 0 ? 'mutated' : mutation.outcome === 'skipped' ? 'skipped' : 'unchanged',
      ...(mutation.reason === undefined ? {} : { reason: mutation.reason }),
      mode: mutation.settings.mode,
      policyWarnings: mutation.policyWarnings,
      hooks,
      grace: mutation.grace,
    },
  };
}

export function createPodAdmission(env: AdmissionEnvironment): AdmitPod {
  return (request) => {
    const { uid } = request;
    if (request.kind.kind !== 'Pod' || request.kind.group !== '')
      return skipped(uid, `kind ${request.kind.kind}`);
    if (request.operation !== 'CREATE') return skipped(uid, `operation ${request.operation}`);
    if (env.excludedNamespaces.has(request.namespace))
      return skipped(uid, `namespace ${request.namespace} is excluded`);
    if (!isPodLike(request.object)) {
      return skipped(uid, 'object is not a pod', [
        'request.object is not a pod; admitted unchanged',
      ]);
    }
    try {
      const annotations = env.namespaceAnnotations(request.namespace);
      if (!(annotations instanceof Promise)) return planned(request, env, annotations);
      return annotations
        .then((known) => planned(request, env, known))
        .catch((error: unknown) => failed(uid, error));
    } catch (error) {
      return failed(uid, error);
    }
  };
}
