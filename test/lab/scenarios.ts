// The scenarios: what the app does, whether a mesh proxy carries its traffic,
// and the load that exercises it.

import { fileURLToPath } from 'node:url';
import type { Container } from '../../src/core/types.ts';
import type { AppConfig } from './app.ts';
import type { ContainerLauncher } from './kubelet.ts';
import type { LoadConfig } from './load.ts';
import type { PodNetwork } from './network.ts';

export const SERVICE_PORT = 8080;
/** In a mesh pod the app listens on loopback behind the proxy. */
const APP_PORT_BEHIND_PROXY = 8081;
const PROXY_OUTBOUND_PORT = 15001;
/** Istio's default terminationDrainDuration. */
export const PROXY_DRAIN_SECONDS = 5;

const APP = fileURLToPath(new URL('./app.ts', import.meta.url));
const PROXY = fileURLToPath(new URL('./proxy.ts', import.meta.url));

export interface Scenario {
  name: string;
  summary: string;
  onSigterm: AppConfig['onSigterm'];
  workMs: number;
  /** A mesh proxy in the pod, and an outbound call per request. */
  mesh: boolean;
  /** Requests started per second. */
  rate: LoadConfig['rate'];
  /** Load before the rollout starts, so it runs in steady state. */
  warmupMs: number;
}

export const SCENARIOS: readonly Scenario[] = [
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

export function scenarioByName(name: string): Scenario {
  const found = SCENARIOS.find((s) => s.name === name);
  if (found === undefined) {
    throw new Error(`unknown scenario ${name}; known: ${SCENARIOS.map((s) => s.name).join(', ')}`);
  }
  return found;
}

/** The argv of a Node script: the lab's own Node, so type stripping works. */
function node(script: string, config: object): string[] {
  return [process.execPath, script, JSON.stringify(config)];
}

/** The "images": which process each container of a lab pod runs. */
export function launcherFor(scenario: Scenario, backendUrl: string): ContainerLauncher {
  return (container: Container, pod: PodNetwork) => {
    if (container.name === 'istio-proxy') {
      return node(PROXY, {
        inboundPort: SERVICE_PORT,
        appPort: APP_PORT_BEHIND_PROXY,
        outboundPort: PROXY_OUTBOUND_PORT,
        upstream: backendUrl,
        drainSeconds: PROXY_DRAIN_SECONDS,
      });
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
