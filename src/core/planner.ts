// The planner: pod + settings + cluster capabilities -> mutated pod.
//
// Termination model (see docs/adr/0002-hook-timing.md): every preStop starts at t=0,
// the kubelet's grace clock starts then too, SIGTERM follows each container's
// preStop, SIGKILL comes at the grace period. So the grace period is the
// original one (what the app had after SIGTERM) plus the longest hook budget,
// plus the mesh proxy's own drain when a proxy has to stop after the app.

import type { Capabilities } from './capabilities.ts';
import {
  drainHook,
  execSleep,
  execSleepBinary,
  handlerFingerprint,
  proxyHoldHook,
  sleepAction,
} from './handlers.ts';
import type { Settings } from './policy.ts';
import {
  findSidecars,
  isDistrolessImage,
  isMeshProxy,
  type Sidecar,
  type SidecarConfig,
} from './sidecars.ts';
import {
  readStatus,
  revertStatus,
  writeStatus,
  type HookKind,
  type InjectorStatus,
} from './status.ts';
import { isRecord, type Container, type LifecycleHandler, type PodLike } from './types.ts';

/** The kubelet's default when terminationGracePeriodSeconds is unset. */
export const DEFAULT_GRACE_SECONDS = 30;
/** Envoy timing rule: mesh config needs about 3 s to spread before anything stops. */
export const MESH_MIN_DELAY_SECONDS = 3;
/** Istio 1.12 added EXIT_ON_ZERO_ACTIVE_CONNECTIONS. */
const EXIT_ON_ZERO_MIN_ISTIO_MINOR = 12;
export const EXIT_ON_ZERO_ENV = 'EXIT_ON_ZERO_ACTIVE_CONNECTIONS';
const LINKERD_SLEEP_BINARY = '/bin/sleep';

export type PlannerConfig = SidecarConfig;

export interface PlanContext {
  settings: Settings;
  capabilities: Capabilities;
  config: PlannerConfig;
}

export interface ContainerDecision {
  name: string;
  role: 'app' | 'sidecar';
  hook: HookKind;
  /** The handler written (absent for kept and none). */
  handler?: LifecycleHandler;
  /** Longest time the hook can run, in seconds. */
  budgetSeconds: number;
  /** Shortest time the hook runs (drain and hold scripts can end early). */
  minSeconds: number;
  env?: string[];
}

export type Outcome = 'mutated' | 'unchanged' | 'skipped';

export interface Plan {
  outcome: Outcome;
  /** Why a pod was skipped or left unchanged. */
  reason?: string;
  /** The resulting pod: the input object itself when nothing was touched. */
  pod: PodLike;
  warnings: string[];
  decisions: ContainerDecision[];
  grace: { from: number | null; to: number } | null;
  /** The pod before any injection: the input with earlier passes undone. */
  original: PodLike;
}

function isBatch(pod: PodLike): boolean {
  const policy = pod.spec.restartPolicy;
  return policy === 'OnFailure' || policy === 'Never';
}

function skip(pod: PodLike, original: PodLike, reason: string, warnings: string[]): Plan {
  return { outcome: 'skipped', reason, pod, warnings, decisions: [], grace: null, original };
}

interface AppHookInput {
  container: Container;
  settings: Settings;
  capabilities: Capabilities;
  distrolessPatterns: readonly string[];
  hostNetwork: boolean;
  delaySeconds: number;
  warn: (message: string) => void;
}

/** The one function that decides an app container's hook. */
export function decideAppHook(input: AppHookInput): ContainerDecision {
  const { container, settings, capabilities, delaySeconds, warn } = input;
  const decision = (hook: HookKind, handler?: LifecycleHandler, budget = 0, min = budget) => ({
    name: container.name,
    role: 'app' as const,
    hook,
    ...(handler === undefined ? {} : { handler }),
    budgetSeconds: budget,
    minSeconds: min,
  });
  if (container.lifecycle?.preStop !== undefined) return decision('kept');

  let mode = settings.mode;
  const distroless = isDistrolessImage(container.image, input.distrolessPatterns);
  if (mode === 'drain' && distroless) {
    warn(
      `container ${container.name}: drain needs a shell, which a distroless image lacks; using sleep`,
    );
    mode = 'sleep';
  }
  if (mode === 'drain' && input.hostNetwork) {
    warn(
      `container ${container.name}: drain reads the node's sockets in a hostNetwork pod; using sleep`,
    );
    mode = 'sleep';
  }
  if (mode === 'drain') {
    const budget = delaySeconds + settings.drainTimeoutSeconds;
    return decision(
      'drain',
      drainHook(delaySeconds, settings.drainTimeoutSeconds, settings.drainQuietSeconds),
      budget,
      delaySeconds,
    );
  }
  if (delaySeconds === 0) return decision('none');
  if (capabilities.sleepAction)
    return decision('sleep-action', sleepAction(delaySeconds), delaySeconds);
  if (distroless) {
    warn(
      `container ${container.name}: no hook, the image has no sleep and the cluster has no sleep action (Kubernetes 1.30+)`,
    );
    return decision('none');
  }
  return decision('exec-sleep', execSleep(delaySeconds), delaySeconds);
}

interface SidecarHookInput {
  sidecar: Sidecar;
  container: Container;
  capabilities: Capabilities;
  /** When the app containers stop receiving new traffic (their delay). */
  appDelaySeconds: number;
  /** The latest moment any app container can still be running. */
  appLatestExitSeconds: number;
  warn: (message: string) => void;
}

/** How a classic (non-native) sidecar is held until the app is done. */
export function decideSidecarHook(input: SidecarHookInput): ContainerDecision {
  const { sidecar, container, capabilities, warn } = input;
  const base = { name: sidecar.name, role: 'sidecar' as const };
  if (container.lifecycle?.preStop !== undefined) {
    return { ...base, hook: 'kept', budgetSeconds: 0, minSeconds: 0 };
  }
  const min = Math.max(MESH_MIN_DELAY_SECONDS, input.appDelaySeconds);
  const max = Math.max(min, input.appLatestExitSeconds);

  if (sidecar.kind === 'istio' && !sidecar.distroless) {
    return {
      ...base,
      hook: 'proxy-hold',
      handler: proxyHoldHook(min, max, sidecar.uid),
      budgetSeconds: max,
      minSeconds: min,
    };
  }
  if (sidecar.kind === 'istio') {
    // No shell: pilot-agent itself waits for zero downstream connections.
    const env =
      sidecar.istioMinor === null || sidecar.istioMinor >= EXIT_ON_ZERO_MIN_ISTIO_MINOR
        ? [EXIT_ON_ZERO_ENV]
        : [];
    if (env.length === 0) {
      warn(`container ${sidecar.name}: Istio 1.${sidecar.istioMinor} predates ${EXIT_ON_ZERO_ENV}`);
    }
    if (capabilities.sleepAction) {
      return {
        ...base,
        hook: 'sleep-action',
        handler: sleepAction(min),
        budgetSeconds: min,
        minSeconds: min,
        env,
      };
    }
    warn(
      `container ${sidecar.name}: distroless proxy and no sleep action (Kubernetes 1.30+): not held`,
    );
    return { ...base, hook: 'none', budgetSeconds: 0, minSeconds: 0, env };
  }
  // Linkerd and helpers cannot poll sockets without a shell: hold them for
  // the app's whole possible lifetime, as Linkerd's own wait-before-exit does.
  if (capabilities.sleepAction) {
    return {
      ...base,
      hook: 'sleep-action',
      handler: sleepAction(max),
      budgetSeconds: max,
      minSeconds: max,
    };
  }
  if (sidecar.kind === 'linkerd') {
    return {
      ...base,
      hook: 'proxy-sleep',
      handler: execSleepBinary(LINKERD_SLEEP_BINARY, max),
      budgetSeconds: max,
      minSeconds: max,
    };
  }
  if (sidecar.distroless) {
    warn(
      `container ${sidecar.name}: distroless helper and no sleep action (Kubernetes 1.30+): not held`,
    );
    return { ...base, hook: 'none', budgetSeconds: 0, minSeconds: 0 };
  }
  return {
    ...base,
    hook: 'exec-sleep',
    handler: execSleep(max),
    budgetSeconds: max,
    minSeconds: max,
  };
}

/**
 * The one place that computes the grace period: the app keeps what it had
 * after SIGTERM, plus its longest hook, plus the proxy's own drain; and no
 * sidecar hold (a sleep action must fit the grace period) may outlast it.
 */
export function graceFor(
  originalSeconds: number,
  appBudgetSeconds: number,
  proxyDrainSeconds: number,
  sidecarBudgets: readonly number[] = [],
): number {
  return Math.max(
    originalSeconds + appBudgetSeconds + proxyDrainSeconds,
    ...sidecarBudgets.map((budget) => budget + proxyDrainSeconds),
  );
}

/** Each name's container; a later one of the same name wins, a regular one over an init one. */
function containerByName(pod: PodLike): Map<string, Container> {
  const byName = new Map<string, Container>();
  for (const container of pod.spec.initContainers ?? []) byName.set(container.name, container);
  for (const container of pod.spec.containers) byName.set(container.name, container);
  return byName;
}

/** A container's copy to write to: its lifecycle too; an env list is only ever replaced. */
function writableContainer(container: Container): Container {
  if (!isRecord(container)) return container;
  const copy = { ...container };
  if (isRecord(container.lifecycle)) copy.lifecycle = { ...container.lifecycle };
  return copy;
}

/**
 * A copy of the parts of a pod that planning (and undoing an earlier pass)
 * writes: spec, metadata, annotations, each container with its lifecycle.
 * Everything else is shared with the input. A deep copy cost more than the
 * rest of an admission, and the shared parts also let the diff skip them
 * (identical references).
 */
function writableCopy(pod: PodLike): PodLike {
  const { spec } = pod;
  const copy: PodLike = {
    ...pod,
    spec: { ...spec, containers: spec.containers.map(writableContainer) },
  };
  if (Array.isArray(spec.initContainers)) {
    copy.spec.initContainers = spec.initContainers.map(writableContainer);
  }
  const metadata = pod.metadata;
  if (isRecord(metadata)) {
    copy.metadata = { ...metadata };
    if (isRecord(metadata.annotations)) copy.metadata.annotations = { ...metadata.annotations };
  }
  return copy;
}

/**
 * Plans the mutation of one pod (or pod template). Pure: the input is never
 * modified. A mutated pod is a new object that shares the parts it did not
 * change with the input: treat both as read-only.
 */
export function planPod(input: PodLike, context: PlanContext): Plan {
  const { settings, capabilities, config } = context;
  const warnings: string[] = [];
  const warn = (message: string) => warnings.push(message);
  const previous = readStatus(input);

  // Fast paths: pods that are not ours to touch and were never touched.
  if (previous === null) {
    if (!settings.inject) return skip(input, input, 'injection disabled', warnings);
    if (isBatch(input))
      return skip(input, input, `restartPolicy ${input.spec.restartPolicy}`, warnings);
  }

  const pod = writableCopy(input);
  if (previous !== null) revertStatus(pod, previous);
  const original = previous === null ? input : writableCopy(pod);
  if (!settings.inject) return skip(pod, original, 'injection disabled', warnings);
  if (isBatch(pod)) return skip(pod, original, `restartPolicy ${pod.spec.restartPolicy}`, warnings);

  const hostNetwork = pod.spec.hostNetwork === true;
  const sidecars = findSidecars(pod, config);
  const sidecarNames = new Set(sidecars.map((s) => s.name));
  const managed = settings.sidecars && !hostNetwork ? sidecars : [];
  const meshManaged = managed.filter(isMeshProxy);

  const appContainers = pod.spec.containers.filter((c) => !sidecarNames.has(c.name));
  let targets = appContainers;
  if (settings.containers !== null) {
    const wanted = new Set(settings.containers);
    for (const name of wanted) {
      if (!appContainers.some((c) => c.name === name)) {
        warn(`containers: no app container named ${name}`);
      }
    }
    targets = appContainers.filter((c) => wanted.has(c.name));
  }

  const delaySeconds =
    meshManaged.length > 0
      ? Math.max(MESH_MIN_DELAY_SECONDS, settings.delaySeconds)
      : settings.delaySeconds;
  const appDecisions = targets.map((container) =>
    decideAppHook({
      container,
      settings,
      capabilities,
      distrolessPatterns: config.distrolessPatterns,
      hostNetwork,
      delaySeconds,
      warn,
    }),
  );
  const appBudget = Math.max(0, ...appDecisions.map((d) => d.budgetSeconds));
  const graceFrom = pod.spec.terminationGracePeriodSeconds ?? null;
  const originalGrace = graceFrom ?? DEFAULT_GRACE_SECONDS;

  const byName = containerByName(pod);
  const sidecarDecisions = managed
    .filter((sidecar) => !sidecar.native)
    .map((sidecar) =>
      decideSidecarHook({
        sidecar,
        container: byName.get(sidecar.name)!,
        capabilities,
        appDelaySeconds: delaySeconds,
        appLatestExitSeconds: appBudget + originalGrace,
        warn,
      }),
    );

  const decisions = [...appDecisions, ...sidecarDecisions];
  const writes = decisions.filter((d) => d.handler !== undefined || (d.env?.length ?? 0) > 0);
  if (writes.length === 0) {
    return {
      outcome: 'unchanged',
      reason: 'no container needs a hook',
      pod,
      warnings,
      decisions,
      grace: null,
      original,
    };
  }

  const proxyDrain = Math.max(0, ...meshManaged.map((s) => s.drainSeconds));
  const graceTo = graceFor(
    originalGrace,
    appBudget,
    meshManaged.length > 0 ? proxyDrain : 0,
    sidecarDecisions.map((d) => d.budgetSeconds),
  );
  const status: InjectorStatus = {
    v: 1,
    mode: settings.mode,
    delaySeconds,
    ...(settings.mode === 'drain' ? { drainTimeoutSeconds: settings.drainTimeoutSeconds } : {}),
    ...(settings.mode === 'drain' && settings.drainQuietSeconds > 0
      ? { drainQuietSeconds: settings.drainQuietSeconds }
      : {}),
    grace: { from: graceFrom, to: graceTo },
    hooks: {},
    fp: {},
  };
  for (const decision of decisions) {
    status.hooks[decision.name] = decision.hook;
    const container = byName.get(decision.name)!;
    if (decision.handler !== undefined) {
      if (container.lifecycle === undefined) {
        container.lifecycle = {};
        (status.lc ??= []).push(decision.name);
      }
      container.lifecycle.preStop = decision.handler;
      status.fp[decision.name] = handlerFingerprint(decision.handler);
    }
    const added: string[] = [];
    for (const name of decision.env ?? []) {
      if (container.env?.some((v) => v.name === name)) continue;
      container.env = [...(container.env ?? []), { name, value: 'true' }];
      added.push(name);
    }
    if (added.length > 0) (status.env ??= {})[decision.name] = added;
  }
  pod.spec.terminationGracePeriodSeconds = graceTo;
  writeStatus(pod, status);
  return { outcome: 'mutated', pod, warnings, decisions, grace: status.grace, original };
}
