// The entry point the webhook and the CLI share: policy resolution, then the planner.

import type { Capabilities } from './capabilities.ts';
import { planPod, type Plan, type PlannerConfig } from './planner.ts';
import { resolveSettings, type PolicyWarning, type Settings } from './policy.ts';
import type { PodLike } from './types.ts';

export interface MutationContext {
  /** Built-in defaults folded with the server (or CLI) config. */
  defaults: Settings;
  capabilities: Capabilities;
  config: PlannerConfig;
  /** The namespace's annotations, when known (untrusted: values may be of any type). */
  namespaceAnnotations?: unknown;
}

export interface Mutation extends Plan {
  settings: Settings;
  policyWarnings: PolicyWarning[];
  /** Policy and planner warnings, ready to show a user. */
  messages: string[];
}

export function mutatePod(pod: PodLike, context: MutationContext): Mutation {
  const {
    settings,
    warnings: policyWarnings,
    podOptIn,
  } = resolveSettings(context.defaults, context.namespaceAnnotations, pod.metadata?.annotations);
  const plan = planPod(pod, {
    settings,
    podOptIn,
    capabilities: context.capabilities,
    config: context.config,
  });
  return {
    ...plan,
    settings,
    policyWarnings,
    messages: [...policyWarnings.map((w) => w.message), ...plan.warnings],
  };
}
