// The preStop strategies the lab compares. The seed articles' snippets are
// written out as published, on the app container; `injected` strategies are
// only the pod annotations a user would write: on the real node the project's
// webhook turns them into hooks at admission, in the emulator the planner
// (mutatePod) does.

import { Annotation } from '../../src/core/annotations.ts';
import type { LifecycleHandler } from '../../src/core/types.ts';

/** The template's grace period before any strategy changes it (the kubelet's default). */
export const ORIGINAL_GRACE_SECONDS = 30;
/** The longest request any scenario makes (the slow app's). */
export const LONGEST_REQUEST_SECONDS = 3;
/**
 * `drain-quiet-seconds` for injected drain: above the longest request, as the
 * setting asks, so idle pooled keep-alive connections end the drain but a
 * request still being worked on never does.
 */
export const DRAIN_QUIET_SECONDS = LONGEST_REQUEST_SECONDS + 2;
/** The injected delay, and the longer one the D sweep also tries. */
export const INJECTED_DELAY_SECONDS = 5;
export const LONGER_DELAY_SECONDS = 15;

export const NETSTAT_LOOP =
  'while [ $(netstat -plunt | grep tcp | wc -l) -ne 0 ]; do sleep 1; done';

export interface Strategy {
  name: string;
  /** The app container's own preStop (the seeds' snippets). */
  preStop?: LifecycleHandler;
  /** The template's terminationGracePeriodSeconds. */
  grace: number;
  /** What the webhook is asked for, through the pod's annotations. */
  inject?: { mode: 'sleep' | 'drain'; delaySeconds: number };
  /** No rollout at all: the path's own failures under the same load (a control). */
  control?: boolean;
}

/** The control: the same load for the same kind of time, and nothing stops. */
export const NO_ROLLOUT = 'no rollout';

function shell(script: string): LifecycleHandler {
  return { exec: { command: ['/bin/sh', '-c', script] } };
}

export const STRATEGIES: readonly Strategy[] = [
  { name: NO_ROLLOUT, grace: ORIGINAL_GRACE_SECONDS, control: true },
  { name: 'none', grace: ORIGINAL_GRACE_SECONDS },
  { name: 'sleep 15', preStop: shell('sleep 15'), grace: ORIGINAL_GRACE_SECONDS },
  {
    name: 'sleep 30, grace +30',
    preStop: shell('sleep 30'),
    grace: ORIGINAL_GRACE_SECONDS + 30,
  },
  { name: 'netstat loop', preStop: shell(NETSTAT_LOOP), grace: ORIGINAL_GRACE_SECONDS },
  {
    name: 'injected sleep',
    grace: ORIGINAL_GRACE_SECONDS,
    inject: { mode: 'sleep', delaySeconds: INJECTED_DELAY_SECONDS },
  },
  {
    name: 'injected drain',
    grace: ORIGINAL_GRACE_SECONDS,
    inject: { mode: 'drain', delaySeconds: INJECTED_DELAY_SECONDS },
  },
  {
    name: `injected sleep ${LONGER_DELAY_SECONDS}`,
    grace: ORIGINAL_GRACE_SECONDS,
    inject: { mode: 'sleep', delaySeconds: LONGER_DELAY_SECONDS },
  },
];

/** The pod annotations that ask the webhook for a strategy's hooks (none for the others). */
export function injectionAnnotations(strategy: Strategy): Record<string, string> {
  if (strategy.inject === undefined) return {};
  const { mode, delaySeconds } = strategy.inject;
  return {
    [Annotation.inject]: 'enabled',
    [Annotation.mode]: mode,
    [Annotation.delaySeconds]: String(delaySeconds),
    ...(mode === 'drain' ? { [Annotation.drainQuietSeconds]: String(DRAIN_QUIET_SECONDS) } : {}),
  };
}

export function strategyByName(name: string): Strategy {
  const found = STRATEGIES.find((s) => s.name === name || slug(s.name) === name);
  if (found === undefined) {
    throw new Error(
      `unknown strategy ${name}; known: ${STRATEGIES.map((s) => slug(s.name)).join(', ')}`,
    );
  }
  return found;
}

/** "sleep 30, grace +30" -> "sleep-30-grace-30", for the command line. */
export function slug(name: string): string {
  return name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
}
