// The emulator's scenarios and pod specs. The strategies are the lab's own
// (../strategies.ts); `injected` ones are what the planner (mutatePod, the
// function the webhook calls) makes of the annotated pod, for a cluster
// where every kubelet is 1.33.

import { fileURLToPath } from 'node:url';
import {
  capabilitiesFor,
  parseKubeVersion,
  uniformVersions,
} from '../../../src/core/capabilities.ts';
import { mutatePod } from '../../../src/core/mutate.ts';
import { BUILTIN_DEFAULTS } from '../../../src/core/policy.ts';
import type { Container, PodLike } from '../../../src/core/types.ts';
import type { AppConfig } from '../app.ts';
import { UID } from '../image.ts';
import type { ProxyConfig } from '../proxy.ts';
import { injectionAnnotations, type Strategy } from '../strategies.ts';
import type { ContainerLauncher } from './kubelet.ts';
import type { PodNetwork } from './network.ts';

export const SERVICE_PORT = 8080;
/** In a mesh pod the app listens on loopback behind the proxy. */
const APP_PORT_BEHIND_PROXY = 8081;
const PROXY_OUTBOUND_PORT = 15001;
/** Istio's default terminationDrainDuration. */
export const PROXY_DRAIN_SECONDS = 5;
export const ISTIO_PROXY_IMAGE = 'docker.io/istio/proxyv2:1.26.2';
/** The kubelet version the planner plans for: sleep actions are available. */
export const KUBE_VERSION = '1.33';

const APP = fileURLToPath(new URL('../app.ts', import.meta.url));
const PROXY = fileURLToPath(new URL('../proxy.ts', import.meta.url));

export interface EmulatorScenario {
  name: string;
  summary: string;
  onSigterm: AppConfig['onSigterm'];
  workMs: number;
  /** An Istio-like proxy in the pod (classic mode), and an outbound call per request. */
  mesh: boolean;
  /** Requests started per second. */
  rate: number;
  /** Load before the rollout starts, so it runs in steady state. */
  warmupMs: number;
}

export const EMULATOR_SCENARIOS: readonly EmulatorScenario[] = [
  {
    name: 'abrupt',
    summary: 'the app exits at once on SIGTERM; requests take 10 ms',
    onSigterm: 'exit',
    workMs: 10,
    mesh: false,
    rate: 150,
    warmupMs: 1000,
  },
  {
    name: 'graceful',
    summary: 'the app stops accepting on SIGTERM, finishes what is in flight, then exits',
    onSigterm: 'graceful',
    workMs: 10,
    mesh: false,
    rate: 150,
    warmupMs: 1000,
  },
  {
    name: 'slow',
    summary: 'requests take 3 s; the app exits at once on SIGTERM',
    onSigterm: 'exit',
    workMs: 3000,
    mesh: false,
    rate: 50,
    warmupMs: 3000,
  },
  {
    name: 'mesh',
    summary:
      'a graceful app behind the proxy stand-in (uid 1337); each request makes an outbound call through it',
    onSigterm: 'graceful',
    workMs: 5,
    mesh: true,
    rate: 150,
    warmupMs: 1000,
  },
];

export function emulatorScenarioByName(name: string): EmulatorScenario {
  const found = EMULATOR_SCENARIOS.find((s) => s.name === name);
  if (found === undefined) {
    throw new Error(
      `unknown scenario ${name}; known: ${EMULATOR_SCENARIOS.map((s) => s.name).join(', ')}`,
    );
  }
  return found;
}

/** The template's pod: the app (and in a mesh, a classic istio-proxy) with a strategy's hook. */
export function plainPod(mesh: boolean, strategy: Pick<Strategy, 'preStop' | 'grace'>): PodLike {
  const app: Container = {
    name: 'app',
    image: 'registry.example/lab-app:2',
    ports: [{ containerPort: SERVICE_PORT }],
    securityContext: { runAsUser: UID.app, runAsGroup: UID.app },
    ...(strategy.preStop === undefined ? {} : { lifecycle: { preStop: strategy.preStop } }),
  };
  const proxy: Container = {
    name: 'istio-proxy',
    image: ISTIO_PROXY_IMAGE,
    securityContext: { runAsUser: UID.istioProxy, runAsGroup: UID.istioProxy },
  };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'lab', namespace: 'lab', annotations: {} },
    spec: {
      containers: mesh ? [app, proxy] : [app],
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: strategy.grace,
    },
  };
}

/** The pod a strategy runs: as written, or as the planner mutates it. */
export function strategyPod(strategy: Strategy, mesh: boolean): PodLike {
  const pod = plainPod(mesh, strategy);
  if (strategy.inject === undefined) return pod;
  pod.metadata!.annotations = injectionAnnotations(strategy);
  const mutation = mutatePod(pod, {
    defaults: BUILTIN_DEFAULTS,
    capabilities: capabilitiesFor(uniformVersions(parseKubeVersion(KUBE_VERSION))),
    config: { distrolessPatterns: [], helperSidecars: [] },
  });
  if (mutation.outcome !== 'mutated') {
    throw new Error(`the planner left the lab pod ${mutation.outcome}: ${mutation.reason}`);
  }
  return mutation.pod;
}

/** The argv of a Node script: the lab's own Node, so type stripping works. */
function node(script: string, config: object): string[] {
  return [process.execPath, script, JSON.stringify(config)];
}

/** The "images": which process each container of a lab pod runs. */
export function launcherFor(scenario: EmulatorScenario, backendUrl: string): ContainerLauncher {
  return (container: Container, pod: PodNetwork) => {
    if (container.name === 'istio-proxy') {
      const proxy: ProxyConfig = {
        kind: 'istio',
        native: false,
        inboundPort: SERVICE_PORT,
        appPort: APP_PORT_BEHIND_PROXY,
        outboundPort: PROXY_OUTBOUND_PORT,
        outboundHost: '127.0.0.1',
        // No capture here: the app calls the proxy's port, which forwards to the backend.
        upstream: backendUrl,
        drainSeconds: PROXY_DRAIN_SECONDS,
      };
      return node(PROXY, proxy);
    }
    if (container.name === 'app') {
      const app: AppConfig = {
        name: pod.name,
        onSigterm: scenario.onSigterm,
        workMs: scenario.workMs,
        ...(scenario.mesh
          ? {
              host: '127.0.0.1',
              port: APP_PORT_BEHIND_PROXY,
              outbound: `http://127.0.0.1:${PROXY_OUTBOUND_PORT}/`,
            }
          : { host: '0.0.0.0', port: SERVICE_PORT }),
      };
      return node(APP, app);
    }
    throw new Error(`the lab has no image for container ${container.name}`);
  };
}

/** The other service the mesh app calls: always up, never rolled. */
export function backendArgv(): string[] {
  const config: AppConfig = {
    name: 'backend',
    host: '0.0.0.0',
    port: SERVICE_PORT,
    onSigterm: 'graceful',
    workMs: 5,
  };
  return node(APP, config);
}
