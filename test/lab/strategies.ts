// The pod specs under test. The seed articles' snippets are written out as
// published; `injected` is whatever the project's own planner makes of the
// plain pod (mutatePod, the function the webhook and the CLI call).

import { capabilitiesFor, parseKubeVersion } from '../../src/core/capabilities.ts';
import { mutatePod } from '../../src/core/mutate.ts';
import { BUILTIN_DEFAULTS } from '../../src/core/policy.ts';
import { Annotation } from '../../src/core/annotations.ts';
import { SCENARIOS } from './scenarios.ts';
import type { Container, LifecycleHandler, PodLike } from '../../src/core/types.ts';

export const APP_UID = 1000;
export const PROXY_UID = 1337;
export const ISTIO_PROXY_IMAGE = 'docker.io/istio/proxyv2:1.26.2';
/** The kubelet version the planner plans for: sleep actions are available. */
export const KUBE_VERSION = '1.33';
const ORIGINAL_GRACE_SECONDS = 30;
/**
 * `drain-quiet-seconds` for injected drain: sized as its docs ask, above the
 * longest request (the slow scenario's), so idle pooled keep-alive connections
 * end the drain but a request still being worked on never does.
 */
export const DRAIN_QUIET_SECONDS =
  Math.ceil(Math.max(...SCENARIOS.map((s) => s.workMs)) / 1000) + 2;

export const NETSTAT_LOOP =
  'while [ $(netstat -plunt | grep tcp | wc -l) -ne 0 ]; do sleep 1; done';

export interface Strategy {
  name: string;
  /** The pod spec of the Deployment's template, with or without a mesh proxy. */
  pod(input: { mesh: boolean; delaySeconds: number }): PodLike;
}

function shell(script: string): LifecycleHandler {
  return { exec: { command: ['/bin/sh', '-c', script] } };
}

export function plainPod(
  mesh: boolean,
  preStop?: LifecycleHandler,
  grace = ORIGINAL_GRACE_SECONDS,
): PodLike {
  const app: Container = {
    name: 'app',
    image: 'registry.example/lab-app:2',
    ports: [{ containerPort: 8080 }],
    securityContext: { runAsUser: APP_UID, runAsGroup: APP_UID },
    ...(preStop === undefined ? {} : { lifecycle: { preStop } }),
  };
  const proxy: Container = {
    name: 'istio-proxy',
    image: ISTIO_PROXY_IMAGE,
    securityContext: { runAsUser: PROXY_UID, runAsGroup: PROXY_UID },
  };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'lab', namespace: 'lab', annotations: {} },
    spec: {
      containers: mesh ? [app, proxy] : [app],
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: grace,
    },
  };
}

function injected(mode: 'sleep' | 'drain'): Strategy {
  return {
    name: `injected ${mode}`,
    pod({ mesh, delaySeconds }) {
      const pod = plainPod(mesh);
      pod.metadata!.annotations = {
        [Annotation.inject]: 'enabled',
        [Annotation.mode]: mode,
        [Annotation.delaySeconds]: String(delaySeconds),
        ...(mode === 'drain'
          ? { [Annotation.drainQuietSeconds]: String(DRAIN_QUIET_SECONDS) }
          : {}),
      };
      const mutation = mutatePod(pod, {
        defaults: BUILTIN_DEFAULTS,
        capabilities: capabilitiesFor(parseKubeVersion(KUBE_VERSION)),
        config: { distrolessPatterns: [], helperSidecars: [] },
      });
      if (mutation.outcome !== 'mutated') {
        throw new Error(`the planner left the lab pod ${mutation.outcome}: ${mutation.reason}`);
      }
      return mutation.pod;
    },
  };
}

export const STRATEGIES: readonly Strategy[] = [
  { name: 'none', pod: ({ mesh }) => plainPod(mesh) },
  { name: 'sleep 15', pod: ({ mesh }) => plainPod(mesh, shell('sleep 15')) },
  {
    name: 'sleep 30, grace +30',
    pod: ({ mesh }) => plainPod(mesh, shell('sleep 30'), ORIGINAL_GRACE_SECONDS + 30),
  },
  { name: 'netstat loop', pod: ({ mesh }) => plainPod(mesh, shell(NETSTAT_LOOP)) },
  injected('sleep'),
  injected('drain'),
];

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
