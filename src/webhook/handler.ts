// decode -> handle -> patch: one admission, with no I/O of its own beyond
// asking the namespace view (a cache) for annotations. Answers are kept by
// plan key (src/core/plan-key.ts): the replicas of one template are planned
// once, and the rest get the same patch under their own uid.

import type { Capabilities } from '../core/capabilities.ts';
import { mutatePod } from '../core/mutate.ts';
import { planKey } from '../core/plan-key.ts';
import type { PlannerConfig } from '../core/planner.ts';
import type { PolicyWarning, Settings } from '../core/policy.ts';
import { isPodLike, type PodLike } from '../core/types.ts';
import {
  allowedBody,
  diffPatch,
  encodePatch,
  reviewAnswer,
  reviewBody,
  userWarnings,
  type AdmissionRequest,
  type ReviewAnswer,
} from './admission.ts';

/** Namespaces never injected, whatever they say. */
export const SYSTEM_NAMESPACES: readonly string[] = [
  'kube-system',
  'kube-public',
  'kube-node-lease',
];

/** Distinct templates answered from memory; a cluster rolls out far fewer at once. */
export const ANSWER_CACHE_ENTRIES = 512;

/** Annotations of a namespace, or undefined when unknown. */
export type NamespaceAnnotations = Readonly<Record<string, string>> | undefined;

export interface AdmissionEnvironment {
  defaults: Settings;
  planner: PlannerConfig;
  capabilities(): Capabilities;
  /** A promise only when the view must ask: a known namespace is answered at once. */
  namespaceAnnotations(namespace: string): NamespaceAnnotations | Promise<NamespaceAnnotations>;
  excludedNamespaces: ReadonlySet<string>;
}

export type AdmissionOutcome = 'mutated' | 'unchanged' | 'skipped' | 'error';

/** What was decided for a pod, for logs and metrics. Read-only: it may be shared. */
export interface AdmissionSummary {
  readonly outcome: AdmissionOutcome;
  readonly reason?: string;
  readonly mode?: Settings['mode'];
  readonly policyWarnings: readonly PolicyWarning[];
  readonly hooks?: Readonly<Record<string, string>>;
  readonly grace?: { readonly from: number | null; readonly to: number } | null;
}

/**
 * hit: answered from an earlier pod with the same plan key; miss: planned,
 * and kept for the next; bypass: nothing kept (no plan key, not a pod
 * CREATE, or an error).
 */
export type AnswerCacheResult = 'hit' | 'miss' | 'bypass';

export interface AdmissionResult {
  /** The AdmissionReview to send, as JSON. */
  body: string;
  /** On a hit or a miss, one plan's: the same object for every pod answered from it. */
  summary: AdmissionSummary;
  cache: AnswerCacheResult;
}

/**
 * Synchronous when the namespace is known, as nearly always: a promise (and
 * the turns of the microtask queue it takes) only when the view must ask.
 */
export type AdmissionHandler = (
  request: AdmissionRequest,
) => AdmissionResult | Promise<AdmissionResult>;

/** A planned answer, less the uid and version it is sent under. */
interface Answer {
  review: ReviewAnswer;
  summary: AdmissionSummary;
}

const OWN_KEY = { enumerable: true, writable: true, configurable: true } as const;

/**
 * Answers kept by key, at most `limit` of them: when the newer half fills it
 * becomes the older one and the oldest are dropped, so entries in use stay.
 */
class AnswerCache {
  #newer = new Map<string, Answer>();
  #older = new Map<string, Answer>();
  #lastKey: string | undefined;
  #lastAnswer: Answer | undefined;
  readonly #half: number;

  constructor(limit: number) {
    this.#half = Math.max(1, limit >> 1);
  }

  get(key: string): Answer | undefined {
    // Replicas come in runs. A key is built of many pieces, and a Map must
    // flatten it to hash it; === compares the pieces as they are.
    if (key === this.#lastKey) return this.#lastAnswer;
    let found = this.#newer.get(key);
    if (found === undefined) {
      found = this.#older.get(key);
      if (found === undefined) return undefined;
      this.#set(key, found);
    }
    this.#lastKey = key;
    this.#lastAnswer = found;
    return found;
  }

  set(key: string, answer: Answer): void {
    this.#set(key, answer);
  }

  #set(key: string, answer: Answer): void {
    if (this.#newer.size >= this.#half) {
      this.#older = this.#newer;
      this.#newer = new Map();
    }
    this.#newer.set(key, answer);
  }
}

function freezeSummary(summary: AdmissionSummary): void {
  for (const warning of summary.policyWarnings) Object.freeze(warning);
  Object.freeze(summary.policyWarnings);
  if (summary.hooks !== undefined) Object.freeze(summary.hooks);
  if (summary.grace) Object.freeze(summary.grace);
  Object.freeze(summary);
}

/** Plans one pod, start to finish, with nothing kept. */
function plan(
  object: Parameters<typeof mutatePod>[0],
  env: AdmissionEnvironment,
  capabilities: Capabilities,
  namespaceAnnotations: NamespaceAnnotations,
): Answer {
  const mutation = mutatePod(object, {
    defaults: env.defaults,
    capabilities,
    config: env.planner,
    namespaceAnnotations,
  });
  const patch = mutation.pod === object ? [] : diffPatch(object, mutation.pod);
  const hooks: Record<string, string> = {};
  for (const { name, hook } of mutation.decisions) {
    // Defined, not assigned, for a container named "__proto__" (as fromEntries did).
    if (name === '__proto__') Object.defineProperty(hooks, name, { value: hook, ...OWN_KEY });
    else hooks[name] = hook;
  }
  return {
    review: reviewAnswer(encodePatch(patch), userWarnings(mutation.messages)),
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

export function createAdmissionHandler(
  env: AdmissionEnvironment,
  cacheEntries = ANSWER_CACHE_ENTRIES,
): AdmissionHandler {
  const cache = cacheEntries > 0 ? new AnswerCache(cacheEntries) : null;

  /** Fail open: a pod is never rejected, nor left waiting, because of this project. */
  const failed = (request: AdmissionRequest, error: unknown): AdmissionResult => ({
    body: allowedBody(
      request.apiVersion,
      request.uid,
      [],
      ['internal error; pod admitted unchanged'],
    ),
    summary: {
      outcome: 'error',
      reason: error instanceof Error ? error.message : String(error),
      policyWarnings: [],
    },
    cache: 'bypass',
  });

  const answer = (
    request: AdmissionRequest,
    object: PodLike,
    namespaceAnnotations: NamespaceAnnotations,
  ): AdmissionResult => {
    const { apiVersion, uid } = request;
    const capabilities = env.capabilities();
    const key = cache === null ? null : planKey(object, namespaceAnnotations, capabilities);
    if (key !== null) {
      const kept = cache!.get(key);
      if (kept !== undefined) {
        return {
          body: reviewBody(apiVersion, uid, kept.review),
          summary: kept.summary,
          cache: 'hit',
        };
      }
    }
    const planned = plan(object, env, capabilities, namespaceAnnotations);
    if (key !== null) {
      freezeSummary(planned.summary);
      cache!.set(key, planned);
    }
    return {
      body: reviewBody(apiVersion, uid, planned.review),
      summary: planned.summary,
      cache: key === null ? 'bypass' : 'miss',
    };
  };

  return (request) => {
    const { apiVersion, uid } = request;
    const skipped = (reason: string): AdmissionResult => ({
      body: allowedBody(apiVersion, uid),
      summary: { outcome: 'skipped', reason, policyWarnings: [] },
      cache: 'bypass',
    });
    if (request.kind.kind !== 'Pod' || request.kind.group !== '')
      return skipped(`kind ${request.kind.kind}`);
    if (request.operation !== 'CREATE') return skipped(`operation ${request.operation}`);
    if (env.excludedNamespaces.has(request.namespace))
      return skipped(`namespace ${request.namespace} is excluded`);
    const { object } = request;
    if (!isPodLike(object)) {
      return {
        body: allowedBody(apiVersion, uid, [], ['request.object is not a pod; admitted unchanged']),
        summary: { outcome: 'skipped', reason: 'object is not a pod', policyWarnings: [] },
        cache: 'bypass',
      };
    }
    try {
      const annotations = env.namespaceAnnotations(request.namespace);
      if (!(annotations instanceof Promise)) return answer(request, object, annotations);
      return annotations
        .then((known) => answer(request, object, known))
        .catch((error: unknown) => failed(request, error));
    } catch (error) {
      return failed(request, error);
    }
  };
}
