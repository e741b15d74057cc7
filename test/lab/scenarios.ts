// The real-node lab's scenarios: a traffic path, an app behaviour, for the
// load balancer a propagation delay D, and which strategies run in them.

import type { AppConfig } from './app.ts';
import { LONGER_DELAY_SECONDS, NO_ROLLOUT } from './strategies.ts';

/**
 * - clusterip-fresh: clients in a pod, a new connection per request, through
 *   the Service's ClusterIP (kube-proxy's iptables rules);
 * - clusterip-pooled: the same with a keep-alive pool (Node's agent);
 * - lb: HAProxy with ingress-nginx's retry rules in the node's network
 *   namespace, fed from the EndpointSlices after a delay D;
 * - mesh: the lb path into a pod whose traffic a proxy stand-in captures.
 */
export type TrafficPath = 'clusterip-fresh' | 'clusterip-pooled' | 'lb' | 'mesh';
export type AppBehaviour = 'abrupt' | 'graceful' | 'slow';
export type MeshKind = 'istio-classic' | 'istio-native' | 'linkerd-native';

export interface Scenario {
  name: string;
  path: TrafficPath;
  app: AppBehaviour;
  mesh?: MeshKind;
  /** The load balancer's propagation delay; null where kube-proxy propagates. */
  delaySeconds: number | null;
  /** Requests started per second. */
  rate: number;
  /** Load before the rollout starts, so it runs in steady state. */
  warmupMs: number;
  /** The strategies a full run compares here. */
  strategies: readonly string[];
  /** What the scenario is for, in one line. */
  summary: string;
}

const SEEDS = ['sleep 15', 'sleep 30, grace +30', 'netstat loop'];
const CORE = ['none', 'injected sleep', 'injected drain'];
const ALL = ['none', ...SEEDS, 'injected sleep', 'injected drain'];
/** With the path's own failures first, where they are not zero or are in question. */
const CONTROLLED = (strategies: readonly string[]) => [NO_ROLLOUT, ...strategies];
const LONGER = `injected sleep ${LONGER_DELAY_SECONDS}`;
/** The D sweep, against the injected delay of 5 s. */
export const SWEEP_SECONDS = [1, 3, 5, 8, 12] as const;
const RATE = 100;

export const APP_BEHAVIOURS: Readonly<
  Record<AppBehaviour, Pick<AppConfig, 'onSigterm' | 'workMs'>>
> = {
  abrupt: { onSigterm: 'exit', workMs: 10 },
  graceful: { onSigterm: 'graceful', workMs: 10 },
  slow: { onSigterm: 'exit', workMs: 3000 },
};

function scenario(
  path: TrafficPath,
  app: AppBehaviour,
  strategies: readonly string[],
  summary: string,
  options: { delaySeconds?: number; mesh?: MeshKind } = {},
): Scenario {
  const delaySeconds = options.delaySeconds ?? null;
  const name = [
    path === 'mesh' ? `mesh-${options.mesh}` : path,
    path === 'mesh' ? '' : app,
    // Mesh scenarios all run at one D.
    delaySeconds === null || path === 'mesh' ? '' : `d${delaySeconds}`,
  ]
    .filter(Boolean)
    .join('-');
  return {
    name,
    path,
    app,
    ...(options.mesh === undefined ? {} : { mesh: options.mesh }),
    delaySeconds,
    rate: app === 'slow' ? RATE / 2 : RATE,
    warmupMs: app === 'slow' ? 4000 : 2000,
    strategies,
    summary,
  };
}

export const SCENARIOS: readonly Scenario[] = [
  scenario('clusterip-fresh', 'abrupt', CONTROLLED(ALL), 'new connections follow kube-proxy'),
  scenario(
    'clusterip-pooled',
    'abrupt',
    CONTROLLED(CORE),
    'pooled connections stay on the old pod (kube-proxy cuts no TCP connection) until the app ends them',
  ),
  scenario(
    'clusterip-pooled',
    'graceful',
    CORE,
    'the app closes idle keep-alive connections on SIGTERM: clients reconnect elsewhere',
  ),
  ...SWEEP_SECONDS.map((d) =>
    scenario(
      'lb',
      'abrupt',
      d === 3 ? CONTROLLED([...ALL, LONGER]) : [...CORE, LONGER],
      `HAProxy learns of endpoint changes ${d} s late`,
      { delaySeconds: d },
    ),
  ),
  scenario('lb', 'graceful', CORE, 'the app drains on SIGTERM', { delaySeconds: 3 }),
  scenario('lb', 'slow', [...CORE, 'sleep 15'], 'requests take 3 s; the app exits at once', {
    delaySeconds: 3,
  }),
  scenario(
    'mesh',
    'graceful',
    CONTROLLED(['none', 'sleep 15', 'injected sleep', 'injected drain']),
    'Istio classic: istio-proxy is an ordinary container and drains 5 s on SIGTERM',
    { delaySeconds: 3, mesh: 'istio-classic' },
  ),
  scenario(
    'mesh',
    'graceful',
    CORE,
    'Istio native: istio-proxy is a native sidecar whose preStop starts its inbound drain at t=0',
    { delaySeconds: 3, mesh: 'istio-native' },
  ),
  scenario(
    'mesh',
    'graceful',
    CORE,
    'Linkerd native: linkerd-proxy is a native sidecar that refuses new connections on SIGTERM',
    { delaySeconds: 3, mesh: 'linkerd-native' },
  ),
];

/** CI's check: the abrupt app through a ClusterIP, no hook against the injected sleep. */
export const QUICK = {
  scenarios: ['clusterip-fresh-abrupt'],
  strategies: ['none', 'injected sleep'],
};

export function scenarioByName(name: string): Scenario {
  const found = SCENARIOS.find((s) => s.name === name);
  if (found === undefined) {
    throw new Error(`unknown scenario ${name}; known: ${SCENARIOS.map((s) => s.name).join(', ')}`);
  }
  return found;
}
