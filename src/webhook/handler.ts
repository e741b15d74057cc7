// decode -> handle -> patch: one admission, with no I/O of its own beyond
// asking the namespace view (a cache) for annotations.

import type { Capabilities } from '../core/capabilities.ts';
import { mutatePod } from '../core/mutate.ts';
import type { PlannerConfig } from '../core/planner.ts';
import type { PolicyWarning, Settings } from '../core/policy.ts';
import { isPodLike } from '../core/types.ts';
import {
  allowedResponse,
  diffPatch,
  type AdmissionRequest,
  type ReviewResponse,
} from './admission.ts';

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
  /** Annotations of a namespace, or undefined when unknown. */
  namespaceAnnotations(namespace: string): Promise<Readonly<Record<string, string>> | undefined>;
  excludedNamespaces: ReadonlySet<string>;
}

export type AdmissionOutcome = 'mutated' | 'unchanged' | 'skipped' | 'error';

export interface AdmissionResult {
  response: ReviewResponse;
  outcome: AdmissionOutcome;
  reason?: string;
  mode?: Settings['mode'];
  policyWarnings: PolicyWarning[];
  hooks?: Record<string, string>;
  grace?: { from: number | null; to: number } | null;
}

const OWN_KEY = { enumerable: true, writable: true, configurable: true } as const;

export async function handleAdmission(
  request: AdmissionRequest,
  env: AdmissionEnvironment,
): Promise<AdmissionResult> {
  const { apiVersion, uid } = request;
  const skipped = (reason: string): AdmissionResult => ({
    response: allowedResponse(apiVersion, uid),
    outcome: 'skipped',
    reason,
    policyWarnings: [],
  });
  if (request.kind.kind !== 'Pod' || request.kind.group !== '')
    return skipped(`kind ${request.kind.kind}`);
  if (request.operation !== 'CREATE') return skipped(`operation ${request.operation}`);
  if (env.excludedNamespaces.has(request.namespace))
    return skipped(`namespace ${request.namespace} is excluded`);
  if (!isPodLike(request.object)) {
    return {
      response: allowedResponse(
        apiVersion,
        uid,
        [],
        ['request.object is not a pod; admitted unchanged'],
      ),
      outcome: 'skipped',
      reason: 'object is not a pod',
      policyWarnings: [],
    };
  }
  try {
    const namespaceAnnotations = await env.namespaceAnnotations(request.namespace);
    const mutation = mutatePod(request.object, {
      defaults: env.defaults,
      capabilities: env.capabilities(),
      config: env.planner,
      namespaceAnnotations,
    });
    const patch = mutation.pod === request.object ? [] : diffPatch(request.object, mutation.pod);
    const hooks: Record<string, string> = {};
    for (const { name, hook } of mutation.decisions) {
      // Defined, not assigned, for a container named "__proto__" (as fromEntries did).
      if (name === '__proto__') Object.defineProperty(hooks, name, { value: hook, ...OWN_KEY });
      else hooks[name] = hook;
    }
    return {
      response: allowedResponse(apiVersion, uid, patch, mutation.messages),
      outcome:
        patch.length > 0 ? 'mutated' : mutation.outcome === 'skipped' ? 'skipped' : 'unchanged',
      ...(mutation.reason === undefined ? {} : { reason: mutation.reason }),
      mode: mutation.settings.mode,
      policyWarnings: mutation.policyWarnings,
      hooks,
      grace: mutation.grace,
    };
  } catch (error) {
    // Fail open: a pod is never rejected, nor left waiting, because of this project.
    return {
      response: allowedResponse(apiVersion, uid, [], ['internal error; pod admitted unchanged']),
      outcome: 'error',
      reason: error instanceof Error ? error.message : String(error),
      policyWarnings: [],
    };
  }
}
