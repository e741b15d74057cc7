// The termination timeline a pod spec produces, per the kubelet's rules:
// every preStop starts at t=0 with the grace clock; SIGTERM follows the hook
// (or the grace deadline); native sidecars get SIGTERM only after the main
// containers exit; SIGKILL at the grace deadline. Used by `inject --explain`.

import { DEFAULT_GRACE_SECONDS, EXIT_ON_ZERO_ENV } from './planner.ts';
import { findSidecars, type Sidecar } from './sidecars.ts';
import type { Container, LifecycleHandler, PodLike } from './types.ts';

export interface HookSpan {
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
  /** The proxy stays until connections reach zero (EXIT_ON_ZERO_ACTIVE_CONNECTIONS). */
  exitsOnZero: boolean;
}

export interface PodTimeline {
  grace: number;
  containers: ContainerTimeline[];
  problems: string[];
}

/** How long endpoint removal is assumed to take to reach kube-proxy and ingress. */
export const ASSUMED_PROPAGATION_SECONDS = 5;
/** The kubelet's one-off minimum after a preStop that used up the grace period. */
const KUBELET_MIN_AFTER_HOOK = 2;

function scriptOf(handler: LifecycleHandler): string | null {
  const command = handler.exec?.command;
  if (!Array.isArray(command) || command.length === 0) return null;
  if (command.length >= 3 && /(^|\/)(ba|da)?sh$/.test(command[0] ?? '') && command[1] === '-c') {
    return command.slice(2).join(' ');
  }
  return command.join(' ');
}

/** Reads a hook's duration from what it is; unknown hooks may run until the deadline. */
export function hookSpan(handler: LifecycleHandler | undefined, grace: number): HookSpan {
  if (handler === undefined) return { label: 'no preStop', min: 0, max: 0, waitsForApp: false };
  if (handler.sleep !== undefined) {
    const s = Number(handler.sleep.seconds);
    return { label: `sleep action ${s}s`, min: s, max: s, waitsForApp: false };
  }
  const script = scriptOf(handler);
  if (script !== null) {
    const first = /^\s*(?:\/bin\/)?sleep\s+(\d+)/.exec(script);
    const limit = /-lt (\d+) \]/.exec(script);
    if (first !== null && script.includes('inbound()') && limit !== null) {
      const d = Number(first[1]);
      return {
        label: `drain ${d}s + up to ${limit[1]}s`,
        min: d,
        max: d + Number(limit[1]),
        waitsForApp: false,
      };
    }
    if (first !== null && script.includes('busy()') && limit !== null) {
      return {
        label: `hold ${first[1]}s, then until app connections close (max ${limit[1]}s)`,
        min: Number(first[1]),
        max: Number(limit[1]),
        waitsForApp: true,
      };
    }
    const plain = /^\s*(?:\S*\/)?sleep\s+(\d+)\s*;?\s*$/.exec(script);
    if (plain !== null)
      return {
        label: `exec sleep ${plain[1]}s`,
        min: Number(plain[1]),
        max: Number(plain[1]),
        waitsForApp: false,
      };
  }
  return { label: 'custom preStop (length unknown)', min: 0, max: grace, waitsForApp: false };
}

function clampSpan(span: HookSpan, grace: number): { min: number; max: number } {
  return { min: Math.min(span.min, grace), max: Math.min(span.max, grace) };
}

export function podTimeline(pod: PodLike): PodTimeline {
  const grace = pod.spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS;
  const sidecars = new Map<string, Sidecar>(
    findSidecars(pod, { distrolessPatterns: [], helperSidecars: [] }).map((s) => [s.name, s]),
  );
  const describe = (container: Container, native: boolean): ContainerTimeline => {
    const sidecar = sidecars.get(container.name);
    const hook = hookSpan(container.lifecycle?.preStop, grace);
    return {
      name: container.name,
      role: sidecar === undefined ? 'app' : sidecar.kind === 'helper' ? 'helper' : 'proxy',
      native,
      hook,
      sigterm: clampSpan(hook, grace),
      drainSeconds: sidecar?.drainSeconds ?? 0,
      exitsOnZero:
        container.env?.some((v) => v.name === EXIT_ON_ZERO_ENV && v.value === 'true') ?? false,
    };
  };
  const main = pod.spec.containers.map((c) => describe(c, false));
  const native = (pod.spec.initContainers ?? [])
    .filter((c) => c.restartPolicy === 'Always')
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
  for (const proxy of containers.filter((c) => c.role !== 'app' && !c.native)) {
    if (proxy.hook.waitsForApp || proxy.exitsOnZero) continue;
    const goneAt = proxy.sigterm.min + proxy.drainSeconds;
    if (apps.length > 0 && goneAt < grace) {
      problems.push(
        `${proxy.name} can be gone at ${goneAt}s while app containers may still serve until ${grace}s: in-flight and outbound requests fail (503)`,
      );
    }
  }
  return problems;
}
