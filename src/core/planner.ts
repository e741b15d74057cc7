// The planner: pod + settings + cluster capabilities -> mutated pod.
//
// Termination model (see docs/adr/0002-hook-timing.md): every preStop starts at t=0,
// the kubelet's grace clock starts then too, SIGTERM follows each container's
// preStop, SIGKILL comes at the grace period. So the grace period is the
// original one (what the app had after SIGTERM) plus the longest hook budget,
// plus the mesh proxy's own drain when a proxy has to stop after the app.
//
// planPod is a pipeline of named steps: undo an earlier pass, decide whether
// the pod is ours, sort its containers, decide each app container's hook,
// then each sidecar's, size the grace period, and write what was decided.

import { formatKubeVersion, type Capabilities } from './capabilities.ts';
import {
  drainHook,
  execSleep,
  execSleepBinary,
  fixedHookSeconds,
  proxyHoldHook,
  sleepAction,
} from './hooks.ts';
import type { Settings } from './policy.ts';
import {
  findSidecars,
  isDistrolessImage,
  isMeshProxy,
  runAsUserOf,
  type Sidecar,
  type SidecarConfig,
} from './sidecars.ts';
import {
  readStatus,
  undoRecorded,
  writeRecorded,
  type HookKind,
  type InjectorStatus,
} from './status.ts';
import { isRecord, type Container, type LifecycleHandler, type PodLike } from './types.ts';

/** The kubelet's default when terminationGracePeriodSeconds is unset. */
export const DEFAULT_GRACE_SECONDS = 30;
/** Envoy timing rule: mesh config needs about 3 s to spread before anything stops. */
export const MESH_MIN_DELAY_SECONDS = 3;
/** Istio 1.12 added EXIT_ON_ZERO_ACTIVE_CONNECTIONS. */
export const EXIT_ON_ZERO_MIN_ISTIO_MINOR = 12;
export const EXIT_ON_ZERO_ENV = 'EXIT_ON_ZERO_ACTIVE_CONNECTIONS';
const LINKERD_SLEEP_BINARY = '/bin/sleep';

export type PlannerConfig = SidecarConfig;

export interface PlanContext {
  settings: Settings;
  /** The pod's own annotation asks for injection (not its namespace's, nor the default). */
  podOptIn?: boolean;
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
  /** A proxy hold that ends once the app's connections are gone. */
  waitsForApp?: boolean;
  env?: string[];
}

type Outcome = 'mutated' | 'unchanged' | 'skipped';

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

/** A container's preStop, where `lifecycle: null` and `preStop: null` mean none. */
export function preStopOf(container: Container): LifecycleHandler | undefined {
  const lifecycle = container.lifecycle;
  if (!isRecord(lifecycle)) return undefined;
  const preStop = lifecycle.preStop;
  return preStop === null || preStop === undefined ? undefined : preStop;
}

/** The grace period a pod has: its own, or the kubelet's default when unset or null. */
export function graceOf(pod: PodLike): number | null {
  const grace = pod.spec.terminationGracePeriodSeconds;
  return typeof grace === 'number' ? grace : null;
}

function isBatch(pod: PodLike): boolean {
  const policy = pod.spec.restartPolicy;
  return policy === 'OnFailure' || policy === 'Never';
}

/** Why a pod (already undone) is not ours to touch, or null when it is. */
function skipReason(pod: PodLike, context: PlanContext): string | null {
  if (!context.settings.inject) return 'injection disabled';
  if (isBatch(pod)) return `restartPolicy ${pod.spec.restartPolicy}`;
  // "Die at once" is the owner's choice, unless the pod itself asks for a hook.
  if (graceOf(pod) === 0 && context.podOptIn !== true) {
    return 'terminationGracePeriodSeconds is 0 (stop at once); the pod can opt in with prestop-injector.io/inject: enabled';
  }
  return null;
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
function decideAppHook(input: AppHookInput): ContainerDecision {
  const { container, settings, capabilities, delaySeconds, warn } = input;
  const decision = (hook: HookKind, handler?: LifecycleHandler, budget = 0, min = budget) => ({
    name: container.name,
    role: 'app' as const,
    hook,
    ...(handler === undefined ? {} : { handler }),
    budgetSeconds: budget,
    minSeconds: min,
  });
  const own = preStopOf(container);
  if (own !== undefined) {
    // The pod's own sleep action is the pod's to keep, but say where it does not run.
    if (isRecord(own.sleep) && !capabilities.sleepAction) {
      warn(
        `container ${container.name}: its own sleep-action preStop runs only where the API server and every kubelet are 1.30+ (here: API server ${formatKubeVersion(capabilities.versions.server)}, oldest kubelet ${formatKubeVersion(capabilities.versions.oldestKubelet)}); elsewhere SIGTERM comes at 0 s`,
      );
    }
    return decision('kept');
  }

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
  /** The uids the app containers are set to run as (unset ones are not known). */
  appUids: readonly number[];
  warn: (message: string) => void;
}

/** How a classic (non-native) sidecar is held until the app is done. */
function decideSidecarHook(input: SidecarHookInput): ContainerDecision {
  const { sidecar, container, capabilities, warn } = input;
  const base = { name: sidecar.name, role: 'sidecar' as const };
  if (preStopOf(container) !== undefined) {
    return { ...base, hook: 'kept', budgetSeconds: 0, minSeconds: 0 };
  }
  const min = Math.max(MESH_MIN_DELAY_SECONDS, input.appDelaySeconds);
  const max = Math.max(min, input.appLatestExitSeconds);

  /** Held a fixed time, through the app's latest possible exit. */
  const heldThrough = (): ContainerDecision => {
    const held = (hook: HookKind, handler: LifecycleHandler) => ({
      ...base,
      hook,
      handler,
      budgetSeconds: max,
      minSeconds: max,
    });
    if (capabilities.sleepAction) return held('sleep-action', sleepAction(max));
    // Linkerd's proxy image ships /bin/sleep for its own wait-before-exit.
    if (sidecar.kind === 'linkerd') {
      return held('proxy-sleep', execSleepBinary(LINKERD_SLEEP_BINARY, max));
    }
    if (sidecar.distroless) {
      warn(
        `container ${sidecar.name}: no shell in its image and no sleep action (Kubernetes 1.30+ on the API server and every kubelet): not held`,
      );
      return { ...base, hook: 'none', budgetSeconds: 0, minSeconds: 0 };
    }
    return held('exec-sleep', execSleep(max));
  };

  if (sidecar.kind === 'istio' && !sidecar.distroless) {
    const uid = sidecar.uid;
    if (uid !== null && uid !== 0 && !input.appUids.includes(uid)) {
      return {
        ...base,
        hook: 'proxy-hold',
        handler: proxyHoldHook(min, max, uid),
        budgetSeconds: max,
        minSeconds: min,
        waitsForApp: true,
      };
    }
    warn(
      `container ${sidecar.name}: runs as uid ${uid ?? 'unknown'}${uid === 0 ? '' : ', as an app container does'}: its sockets cannot be told from the app's, so it is held a fixed ${max}s, through the app's latest possible exit`,
    );
    return heldThrough();
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
      `container ${sidecar.name}: distroless proxy and no sleep action (Kubernetes 1.30+ on the API server and every kubelet): not held, it gets SIGTERM at 0s while the app still takes traffic`,
    );
    return { ...base, hook: 'none', budgetSeconds: 0, minSeconds: 0, env };
  }
  // Linkerd and helpers cannot poll sockets without a shell: hold them for
  // the app's whole possible lifetime, as Linkerd's own wait-before-exit does.
  return heldThrough();
}

/**
 * The one place that computes the grace period: never lower than it was;
 * the app keeps `afterSigtermSeconds` after its longest hook; each held
 * sidecar keeps its shutdown time after its hold, and no hold (a sleep
 * action must fit the grace period) may outlast it.
 */
function graceFor(
  originalSeconds: number,
  afterSigtermSeconds: number,
  appBudgetSeconds: number,
  sidecars: readonly { budgetSeconds: number; shutdownSeconds: number }[],
): number {
  const shutdown = Math.max(0, ...sidecars.map((s) => s.shutdownSeconds));
  return Math.max(
    originalSeconds,
    afterSigtermSeconds + appBudgetSeconds + shutdown,
    ...sidecars.map((s) => s.budgetSeconds + s.shutdownSeconds),
  );
}

interface KeptProxyHook {
  name: string;
  /** When its own preStop ends and SIGTERM comes; null when that is not known. */
  stopsAt: number | null;
  /** When it stops serving: SIGTERM plus its drain. */
  goneAt: number | null;
}

/**
 * Classic proxies that keep a preStop of their own (Linkerd's
 * proxy-wait-before-exit, Istio's global.proxy.lifecycle): they stop
 * serving at a time the user chose, which a hold of ours cannot move.
 */
function keptProxyHooks(
  proxies: readonly Sidecar[],
  byName: ReadonlyMap<string, Container>,
): KeptProxyHook[] {
  const kept: KeptProxyHook[] = [];
  for (const proxy of proxies) {
    const preStop = preStopOf(byName.get(proxy.name)!);
    if (proxy.native || preStop === undefined) continue;
    const stopsAt = fixedHookSeconds(preStop);
    kept.push({
      name: proxy.name,
      stopsAt,
      goneAt: stopsAt === null ? null : stopsAt + proxy.drainSeconds,
    });
  }
  return kept;
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
 * Everything else is shared with the input, which also lets the patch's diff
 * skip it (identical references).
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

/** Step 1: the pod as it was before any earlier pass of this injector. */
function undoEarlierPass(input: PodLike): { pod: PodLike; original: PodLike } {
  const previous = readStatus(input);
  if (previous === null) return { pod: writableCopy(input), original: input };
  const pod = writableCopy(input);
  undoRecorded(pod, previous);
  return { pod, original: writableCopy(pod) };
}

interface PodContainers {
  /** Every container by name; a later one of the same name wins, a regular one over an init one. */
  byName: Map<string, Container>;
  /** Every app container. */
  apps: Container[];
  /** The app containers to hook. */
  targets: Container[];
  /** Sidecars whose timing this injector manages. */
  managed: Sidecar[];
  /** The mesh proxies among them. */
  meshProxies: Sidecar[];
}

/** Step 2: which containers are apps to hook and which are sidecars to order. */
function sortContainers(
  pod: PodLike,
  settings: Settings,
  config: PlannerConfig,
  warn: (message: string) => void,
): PodContainers {
  const byName = new Map<string, Container>();
  for (const container of [...(pod.spec.initContainers ?? []), ...pod.spec.containers]) {
    if (isRecord(container)) byName.set(container.name, container);
  }
  const sidecars = findSidecars(pod, config);
  const sidecarNames = new Set(sidecars.map((s) => s.name));
  const managed = settings.sidecars && pod.spec.hostNetwork !== true ? sidecars : [];
  const apps = pod.spec.containers.filter((c) => isRecord(c) && !sidecarNames.has(c.name));
  let targets = apps;
  if (settings.containers !== null) {
    const wanted = new Set(settings.containers);
    for (const name of wanted) {
      if (!apps.some((c) => c.name === name)) warn(`containers: no app container named ${name}`);
    }
    targets = apps.filter((c) => wanted.has(c.name));
  }
  return { byName, apps, targets, managed, meshProxies: managed.filter(isMeshProxy) };
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
  const result = (
    outcome: Outcome,
    pod: PodLike,
    original: PodLike,
    rest: Partial<Pick<Plan, 'reason' | 'decisions' | 'grace'>> = {},
  ): Plan => ({ outcome, pod, original, warnings, decisions: [], grace: null, ...rest });

  // Most pods are not ours and were never touched: no copy for them.
  if (readStatus(input) === null) {
    const reason = skipReason(input, context);
    if (reason !== null) return result('skipped', input, input, { reason });
  }

  const { pod, original } = undoEarlierPass(input);
  const reason = skipReason(pod, context);
  if (reason !== null) return result('skipped', pod, original, { reason });

  const { byName, apps, targets, managed, meshProxies } = sortContainers(
    pod,
    settings,
    config,
    warn,
  );

  const delaySeconds =
    meshProxies.length > 0
      ? Math.max(MESH_MIN_DELAY_SECONDS, settings.delaySeconds)
      : settings.delaySeconds;
  const appDecisions = targets.map((container) =>
    decideAppHook({
      container,
      settings,
      capabilities,
      distrolessPatterns: config.distrolessPatterns,
      hostNetwork: pod.spec.hostNetwork === true,
      delaySeconds,
      warn,
    }),
  );
  const appBudget = Math.max(0, ...appDecisions.map((d) => d.budgetSeconds));
  const graceFrom = graceOf(pod);
  const originalGrace = graceFrom ?? DEFAULT_GRACE_SECONDS;

  // What the app has after SIGTERM: what it had, unless a proxy's own fixed
  // preStop ends sooner. The app may then serve without its proxy from then
  // until its latest exit; its delay must not make that window longer, so
  // the latest exit stays where it was (or at the proxy's end).
  const keptProxies = keptProxyHooks(meshProxies, byName);
  const proxyGone = Math.min(...keptProxies.map((p) => p.goneAt ?? Infinity));
  const windowEnd = Math.max(originalGrace, proxyGone);
  const afterSigterm = Math.max(0, Math.min(originalGrace, windowEnd - appBudget));
  // Apps take new traffic at least until their SIGTERM: our delay, or a
  // fixed hook of their own that lasts longer.
  const appsStopTakingTraffic = Math.max(
    delaySeconds,
    ...apps.map((app) => fixedHookSeconds(preStopOf(app)) ?? 0),
  );

  const sidecarDecisions = managed
    .filter((sidecar) => !sidecar.native)
    .map((sidecar) =>
      decideSidecarHook({
        sidecar,
        container: byName.get(sidecar.name)!,
        capabilities,
        appDelaySeconds: appsStopTakingTraffic,
        appLatestExitSeconds: appBudget + afterSigterm,
        appUids: targets.map((c) => runAsUserOf(pod, c)).filter((uid) => uid !== null),
        warn,
      }),
    );

  const decisions = [...appDecisions, ...sidecarDecisions];
  if (!decisions.some((d) => d.handler !== undefined || (d.env?.length ?? 0) > 0)) {
    return result('unchanged', pod, original, { reason: 'no container needs a hook', decisions });
  }

  const shutdownOf = new Map(managed.map((s) => [s.name, s.shutdownSeconds]));
  const grace = {
    from: graceFrom,
    to: graceFor(
      originalGrace,
      afterSigterm,
      appBudget,
      sidecarDecisions
        .filter((d) => d.hook !== 'kept')
        .map((d) => ({ budgetSeconds: d.budgetSeconds, shutdownSeconds: shutdownOf.get(d.name)! })),
    ),
  };
  for (const proxy of keptProxies) {
    if (proxy.stopsAt === null || proxy.goneAt === null) {
      warn(
        `container ${proxy.name} keeps its own preStop, whose length is not known here: unless it lasts until the app is done (up to ${grace.to}s), the app serves without its proxy`,
      );
    } else if (grace.to > proxy.goneAt) {
      warn(
        `container ${proxy.name} keeps its own preStop: it stops at ${proxy.stopsAt}s${proxy.goneAt > proxy.stopsAt ? ` and is gone at ${proxy.goneAt}s` : ''}, while the app may still serve until ${grace.to}s` +
          (afterSigterm < originalGrace
            ? `; so that this does not last longer than before, the app keeps ${afterSigterm}s after SIGTERM instead of ${originalGrace}s`
            : ''),
      );
    }
  }
  // Until then some app container may still take new traffic: the end of
  // its hook, ours or its own (one of unknown length may run to the deadline).
  const appsHookEnd = Math.max(
    appBudget,
    ...apps.map((app) => {
      const preStop = preStopOf(app);
      return preStop === undefined ? 0 : (fixedHookSeconds(preStop) ?? grace.to);
    }),
  );
  for (const proxy of managed) {
    const drainEnd = proxy.drainDurationSeconds;
    if (proxy.native && drainEnd !== null && appsHookEnd > drainEnd) {
      warn(
        `container ${proxy.name} (native) drains from 0s and its listeners accept new connections until ${drainEnd}s (drainDuration), but an app container's preStop may run until ${appsHookEnd}s: keep the delay (and drain timeout) below it, or raise drainDuration`,
      );
    }
  }
  const header: Pick<
    InjectorStatus,
    'mode' | 'delaySeconds' | 'drainTimeoutSeconds' | 'drainQuietSeconds' | 'grace'
  > = {
    mode: settings.mode,
    delaySeconds,
    ...(settings.mode === 'drain' ? { drainTimeoutSeconds: settings.drainTimeoutSeconds } : {}),
    ...(settings.mode === 'drain' && settings.drainQuietSeconds > 0
      ? { drainQuietSeconds: settings.drainQuietSeconds }
      : {}),
    grace,
  };
  writeRecorded(
    pod,
    header,
    decisions.map((d) => ({
      container: byName.get(d.name)!,
      hook: d.hook,
      handler: d.handler,
      env: d.env,
    })),
  );
  return result('mutated', pod, original, { decisions, grace });
}
