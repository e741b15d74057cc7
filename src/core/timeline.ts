// The termination timeline a pod spec produces, per the kubelet's rules:
// every preStop starts at t=0 with the grace clock; SIGTERM follows the hook
// (or the grace deadline); native sidecars get SIGTERM only after the main
// containers exit; SIGKILL at the grace deadline. Used by `inject --explain`.

import {
  DEFAULT_GRACE_SECONDS,
  EXIT_ON_ZERO_ENV,
  graceOf,
  preStopOf,
  type ContainerDecision,
} from './planner.ts';
import { fixedHookSeconds } from './hooks.ts';
import { findSidecars, type Sidecar, type SidecarConfig } from './sidecars.ts';
import { isRecord, type Container, type LifecycleHandler, type PodLike } from './types.ts';

interface HookSpan {
  /** What the hook is, for a person. */
  label: string;
  min: number;
  max: number;
  /** The hook ends once the app has no connections left. */
  waitsForApp: boolean;
}

export interface ContainerTimeline {
  name: string;
  role: 'app' | 'proxy' | 'helper';
  native: boolean;
  hook: HookSpan;
  sigterm: { min: number; max: number };
  /** Seconds a proxy keeps serving after SIGTERM, if it is one. */
  drainSeconds: number;
  /** Seconds a held sidecar needs after SIGTERM to stop cleanly. */
  shutdownSeconds: number;
  /** A native proxy that drains from t=0 (Istio's own preStop): when its listeners stop accepting. */
  acceptsUntil: number | null;
  /** The proxy stays until connections reach zero (EXIT_ON_ZERO_ACTIVE_CONNECTIONS). */
  exitsOnZero: boolean;
}

export interface PodTimeline {
  grace: number;
  containers: ContainerTimeline[];
  problems: string[];
}

/** How long endpoint removal is assumed to take to reach kube-proxy and ingress. */
const ASSUMED_PROPAGATION_SECONDS = 5;
/** The kubelet's one-off minimum after a preStop that used up the grace period. */
const KUBELET_MIN_AFTER_HOOK = 2;

/** The span of a hook this injector wrote, from the planner's own decision. */
function plannedSpan(decision: ContainerDecision): HookSpan {
  const { hook, minSeconds: min, budgetSeconds: max } = decision;
  const waitsForApp = decision.waitsForApp === true;
  switch (hook) {
    case 'sleep-action':
      return { label: `sleep action ${min}s`, min, max, waitsForApp };
    case 'drain':
      return { label: `drain ${min}s + up to ${max - min}s`, min, max, waitsForApp };
    case 'proxy-hold':
      return {
        label: `hold ${min}s, then until app connections close (max ${max}s)`,
        min,
        max,
        waitsForApp,
      };
    default:
      return { label: `exec sleep ${min}s`, min, max, waitsForApp };
  }
}

/**
 * A hook someone else wrote: a sleep action, or a plain `sleep N` command,
 * has a known length; anything else may run until the deadline. A sleep
 * action returns at once on a kubelet older than 1.30 (measured on a real
 * v1.29 one): unless every kubelet is known to run it, it may not wait at all.
 */
function hookSpan(
  handler: LifecycleHandler | undefined,
  grace: number,
  sleepActionRuns: boolean,
): HookSpan {
  if (handler === undefined) return { label: 'no preStop', min: 0, max: 0, waitsForApp: false };
  if (isRecord(handler.sleep) && typeof handler.sleep.seconds === 'number') {
    const s = handler.sleep.seconds;
    if (!sleepActionRuns) {
      const label = `sleep action ${s}s (skipped by kubelets older than 1.30)`;
      return { label, min: 0, max: s, waitsForApp: false };
    }
    return { label: `sleep action ${s}s`, min: s, max: s, waitsForApp: false };
  }
  // The sleep action is handled above: here only `sleep N` commands have a fixed length.
  const s = fixedHookSeconds(handler);
  if (s !== null) return { label: `exec sleep ${s}s`, min: s, max: s, waitsForApp: false };
  return { label: 'custom preStop (length unknown)', min: 0, max: grace, waitsForApp: false };
}

function clampSpan(span: HookSpan, grace: number): { min: number; max: number } {
  return { min: Math.min(span.min, grace), max: Math.min(span.max, grace) };
}

/**
 * The timeline of `pod`. `written` are the planner's decisions for this pod:
 * the hooks it wrote are read from them, not from their text.
 * `sleepActionRuns`: every kubelet runs a sleep action (capabilities.sleepAction).
 */
export function podTimeline(
  pod: PodLike,
  written: readonly ContainerDecision[] = [],
  config: SidecarConfig = { distrolessPatterns: [], helperSidecars: [] },
  sleepActionRuns = true,
): PodTimeline {
  const grace = graceOf(pod) ?? DEFAULT_GRACE_SECONDS;
  const planned = new Map(written.filter((d) => d.handler !== undefined).map((d) => [d.name, d]));
  const sidecars = new Map<string, Sidecar>(findSidecars(pod, config).map((s) => [s.name, s]));
  const describe = (container: Container, native: boolean): ContainerTimeline => {
    const sidecar = sidecars.get(container.name);
    const decision = planned.get(container.name);
    const hook =
      decision === undefined
        ? hookSpan(preStopOf(container), grace, sleepActionRuns)
        : plannedSpan(decision);
    return {
      name: container.name,
      role: sidecar === undefined ? 'app' : sidecar.kind === 'helper' ? 'helper' : 'proxy',
      native,
      hook,
      sigterm: clampSpan(hook, grace),
      drainSeconds: sidecar?.drainSeconds ?? 0,
      shutdownSeconds: sidecar?.shutdownSeconds ?? 0,
      // Istio's native preStop is its drain request: it starts with termination.
      acceptsUntil:
        native && sidecar?.drainDurationSeconds != null && preStopOf(container) !== undefined
          ? sidecar.drainDurationSeconds
          : null,
      exitsOnZero:
        Array.isArray(container.env) &&
        container.env.some((v) => isRecord(v) && v.name === EXIT_ON_ZERO_ENV && v.value === 'true'),
    };
  };
  const main = pod.spec.containers.filter(isRecord).map((c) => describe(c, false));
  const native = (pod.spec.initContainers ?? [])
    .filter((c) => isRecord(c) && c.restartPolicy === 'Always')
    .map((c) => describe(c, true));
  // Native sidecars: SIGTERM once every main container has exited, which is
  // no sooner than the last main SIGTERM.
  const mainSigtermMin = Math.max(0, ...main.map((c) => c.sigterm.min));
  for (const sidecar of native) {
    sidecar.sigterm = { min: Math.max(sidecar.sigterm.min, mainSigtermMin), max: grace };
  }
  const containers = [...native, ...main];
  return { grace, containers, problems: findProblems(grace, containers) };
}

function findProblems(grace: number, containers: ContainerTimeline[]): string[] {
  const problems: string[] = [];
  const apps = containers.filter((c) => c.role === 'app');
  for (const app of apps) {
    if (app.sigterm.min < ASSUMED_PROPAGATION_SECONDS) {
      problems.push(
        `${app.name} can get SIGTERM at ${app.sigterm.min}s, before endpoint removal has spread (~${ASSUMED_PROPAGATION_SECONDS}s or more): new connections fail (502/504)`,
      );
    }
    if (app.hook.max >= grace) {
      problems.push(
        `${app.name}: its preStop can run into the grace deadline (${grace}s): it then gets only ${KUBELET_MIN_AFTER_HOOK}s after SIGTERM`,
      );
    }
  }
  if (apps.length === 0) return problems;
  // Until then some app container still takes new traffic (its preStop runs).
  const appsTakeTraffic = Math.max(...apps.map((app) => app.sigterm.min));
  const appsHookEnd = Math.max(...apps.map((app) => app.hook.max));
  for (const proxy of containers.filter((c) => c.role === 'proxy' && c.native)) {
    if (proxy.acceptsUntil !== null && appsHookEnd > proxy.acceptsUntil) {
      problems.push(
        `${proxy.name} drains from 0s and accepts new connections only until ${proxy.acceptsUntil}s, but app containers may still take traffic until ${appsHookEnd}s: those connections fail (503)`,
      );
    }
  }
  for (const sidecar of containers.filter((c) => c.role !== 'app' && !c.native)) {
    if (sidecar.hook.waitsForApp) continue;
    // A proxy accepts new connections until its drain after SIGTERM ends
    // (Linkerd's: at SIGTERM); waiting for zero connections does not reopen them.
    const goneAt = sidecar.sigterm.min + sidecar.drainSeconds;
    if (sidecar.role === 'proxy' && goneAt < appsTakeTraffic) {
      problems.push(
        `${sidecar.name} can stop accepting new connections at ${goneAt}s while app containers still take traffic until ${appsTakeTraffic}s: new requests fail (503)`,
      );
      continue;
    }
    if (sidecar.exitsOnZero) continue;
    // A held sidecar's own shutdown time after its hold is not a gap.
    if (goneAt + sidecar.shutdownSeconds < grace) {
      problems.push(
        `${sidecar.name} can be gone at ${goneAt}s while app containers may still serve until ${grace}s: in-flight and outbound requests fail (503)`,
      );
    }
  }
  return problems;
}
