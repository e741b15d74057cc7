// The Kubernetes objects of the real-node lab: the rolled Deployment (`web`)
// with its Service, the mesh pods' capture and proxy containers, the backend
// a mesh app calls, and the client pod of the ClusterIP paths.

import type { AppConfig } from './app.ts';
import { UID } from './image.ts';
import type { LoadConfig } from './load.ts';
import type { ProxyConfig } from './proxy.ts';
import { APP_BEHAVIOURS, type MeshKind, type Scenario } from './scenarios.ts';
import { injectionAnnotations, type Strategy } from './strategies.ts';
import { LAB_NAMESPACE_LABEL } from './webhook.ts';

export const APP_PORT = 8080;
export const SERVICE_PORT = 80;
export const CLIENT_CONTROL_PORT = 9000;
/** Changing it in the template is what rolls the Deployment. */
export const REVISION_ANNOTATION = 'lab.prestop-injector.io/revision';
/** The kubelet's default readiness period. */
export const READINESS_PERIOD_SECONDS = 10;
/** Where app and proxy record their signals on the node (a hostPath). */
const RECORD_MOUNT = '/record';

interface MeshProfile {
  proxy: string;
  init: string;
  uid: number;
  /** Where captured inbound and outbound connections are redirected. */
  inboundPort: number;
  outboundPort: number;
  /** Health port, left out of the inbound capture. */
  healthPort: number;
  adminPort?: number;
  kind: ProxyConfig['kind'];
  native: boolean;
}

const MESH_PROFILES: Readonly<Record<MeshKind, MeshProfile>> = {
  'istio-classic': {
    proxy: 'istio-proxy',
    init: 'istio-init',
    uid: UID.istioProxy,
    inboundPort: 15006,
    outboundPort: 15001,
    healthPort: 15021,
    adminPort: 15000,
    kind: 'istio',
    native: false,
  },
  'istio-native': {
    proxy: 'istio-proxy',
    init: 'istio-init',
    uid: UID.istioProxy,
    inboundPort: 15006,
    outboundPort: 15001,
    healthPort: 15021,
    adminPort: 15000,
    kind: 'istio',
    native: true,
  },
  'linkerd-native': {
    proxy: 'linkerd-proxy',
    init: 'linkerd-init',
    uid: UID.linkerdProxy,
    inboundPort: 4143,
    outboundPort: 4140,
    healthPort: 4191,
    kind: 'linkerd',
    native: true,
  },
};
/** Istio's default terminationDrainDuration. */
export const PROXY_DRAIN_SECONDS = 5;

/**
 * The capture rules istio-init and linkerd-init write, reduced to what the
 * lab's traffic needs: inbound TCP (but the health port) to the proxy's
 * inbound port; outbound TCP from anyone but the proxy's uid, and not to
 * loopback, to its outbound port.
 */
export function captureScript(profile: {
  uid: number;
  inboundPort: number;
  outboundPort: number;
  healthPort: number;
}): string {
  const nat = (rule: string) => `iptables -t nat ${rule}`;
  return [
    'set -e',
    nat('-N LAB_INBOUND'),
    nat('-A PREROUTING -p tcp -j LAB_INBOUND'),
    nat(`-A LAB_INBOUND -p tcp --dport ${profile.healthPort} -j RETURN`),
    nat(`-A LAB_INBOUND -p tcp -j REDIRECT --to-ports ${profile.inboundPort}`),
    nat('-N LAB_OUTPUT'),
    nat('-A OUTPUT -p tcp -j LAB_OUTPUT'),
    nat(`-A LAB_OUTPUT -m owner --uid-owner ${profile.uid} -j RETURN`),
    nat('-A LAB_OUTPUT -d 127.0.0.1/32 -j RETURN'),
    nat(`-A LAB_OUTPUT -p tcp -j REDIRECT --to-ports ${profile.outboundPort}`),
    nat('-S'),
  ].join('\n');
}

const recordEnv = (container: string) => [
  { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
  { name: 'RECORD_FILE', value: `${RECORD_MOUNT}/$(POD_NAME).${container}.jsonl` },
];
const recordMount = { name: 'record', mountPath: RECORD_MOUNT };

function meshContainers(mesh: MeshKind, image: string) {
  const profile = MESH_PROFILES[mesh];
  const config: ProxyConfig = {
    kind: profile.kind,
    native: profile.native,
    inboundPort: profile.inboundPort,
    appPort: APP_PORT,
    outboundPort: profile.outboundPort,
    healthPort: profile.healthPort,
    ...(profile.adminPort === undefined ? {} : { adminPort: profile.adminPort }),
    drainSeconds: PROXY_DRAIN_SECONDS,
  };
  const init = {
    name: profile.init,
    image,
    imagePullPolicy: 'Never',
    command: ['/bin/sh', '-c', captureScript(profile)],
    // As istio-init and linkerd-init: root with NET_ADMIN for the pod's iptables.
    securityContext: { runAsUser: 0, capabilities: { add: ['NET_ADMIN', 'NET_RAW'] } },
  };
  const proxy = {
    name: profile.proxy,
    image,
    imagePullPolicy: 'Never',
    command: ['node', '/lab/proxy.ts', JSON.stringify(config)],
    env: recordEnv('proxy'),
    volumeMounts: [recordMount],
    securityContext: { runAsUser: profile.uid, runAsGroup: profile.uid },
    ...(profile.native
      ? {
          restartPolicy: 'Always',
          // The app starts once its proxy answers, as with Istio's startupProbe.
          startupProbe: {
            httpGet: { path: '/ready', port: profile.healthPort },
            periodSeconds: 1,
            failureThreshold: 30,
          },
        }
      : {}),
    // Istio's injector writes this preStop on a native istio-proxy.
    ...(profile.native && profile.kind === 'istio'
      ? {
          lifecycle: {
            preStop: {
              exec: { command: ['node', '/lab/proxy.ts', 'drain', String(profile.adminPort)] },
            },
          },
        }
      : {}),
  };
  return profile.native
    ? { initContainers: [init, proxy], sidecars: [] }
    : { initContainers: [init], sidecars: [proxy] };
}

export interface WebOptions {
  namespace: string;
  image: string;
  scenario: Scenario;
  strategy: Strategy;
  replicas: number;
  revision: number;
  /** The host directory behind /record. */
  recordDir: string;
  /** The backend a mesh app calls (through its proxy). */
  backendUrl?: string;
}

/** The Deployment the lab rolls: one strategy's pod template. */
export function webDeployment(options: WebOptions) {
  const { scenario, strategy } = options;
  const app: AppConfig = {
    host: '0.0.0.0',
    port: APP_PORT,
    ...APP_BEHAVIOURS[scenario.app],
    ...(options.backendUrl === undefined ? {} : { outbound: options.backendUrl }),
  };
  const mesh =
    scenario.mesh === undefined ? undefined : meshContainers(scenario.mesh, options.image);
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'web', namespace: options.namespace },
    spec: {
      replicas: options.replicas,
      revisionHistoryLimit: 2,
      selector: { matchLabels: { app: 'web' } },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: {
          labels: { app: 'web' },
          annotations: {
            [REVISION_ANNOTATION]: String(options.revision),
            ...injectionAnnotations(strategy),
          },
        },
        spec: {
          terminationGracePeriodSeconds: strategy.grace,
          enableServiceLinks: false,
          automountServiceAccountToken: false,
          ...(mesh === undefined ? {} : { initContainers: mesh.initContainers }),
          containers: [
            {
              name: 'app',
              image: options.image,
              imagePullPolicy: 'Never',
              command: ['node', '/lab/app.ts', JSON.stringify(app)],
              env: recordEnv('app'),
              ports: [{ name: 'http', containerPort: APP_PORT }],
              // Ready within a second of starting (the kubelet probes readiness
              // at once when startup succeeds), then probed every 10 s, the
              // default: each probe is a new connection, which a drain's quiet
              // period counts as traffic.
              startupProbe: {
                httpGet: { path: '/healthz', port: APP_PORT },
                periodSeconds: 1,
                failureThreshold: 60,
              },
              readinessProbe: {
                httpGet: { path: '/healthz', port: APP_PORT },
                periodSeconds: READINESS_PERIOD_SECONDS,
              },
              securityContext: { runAsUser: UID.app, runAsGroup: UID.app },
              volumeMounts: [recordMount],
              ...(strategy.preStop === undefined
                ? {}
                : { lifecycle: { preStop: strategy.preStop } }),
            },
            ...(mesh?.sidecars ?? []),
          ],
          volumes: [{ name: 'record', hostPath: { path: options.recordDir, type: 'Directory' } }],
        },
      },
    },
  };
}

export function labNamespace(name: string) {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name, labels: { [LAB_NAMESPACE_LABEL]: 'true' } },
  };
}

export function service(namespace: string, name: string) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace },
    spec: {
      type: 'ClusterIP',
      selector: { app: name },
      ports: [{ name: 'http', port: SERVICE_PORT, targetPort: APP_PORT }],
    },
  };
}

/** The other service a mesh app calls: always up, never rolled. */
export function backendDeployment(namespace: string, image: string) {
  const app: AppConfig = { host: '0.0.0.0', port: APP_PORT, onSigterm: 'graceful', workMs: 2 };
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'backend', namespace },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: 'backend' } },
      template: {
        metadata: { labels: { app: 'backend' } },
        spec: {
          enableServiceLinks: false,
          automountServiceAccountToken: false,
          containers: [
            {
              name: 'app',
              image,
              imagePullPolicy: 'Never',
              command: ['node', '/lab/app.ts', JSON.stringify(app)],
              readinessProbe: { httpGet: { path: '/healthz', port: APP_PORT }, periodSeconds: 1 },
              securityContext: { runAsUser: UID.app, runAsGroup: UID.app },
            },
          ],
        },
      },
    },
  };
}

/** The load generator of the ClusterIP paths, a pod in the pod network. */
export function clientPod(namespace: string, image: string, load: LoadConfig) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'load-client', namespace, labels: { app: 'load-client' } },
    spec: {
      terminationGracePeriodSeconds: 0,
      enableServiceLinks: false,
      automountServiceAccountToken: false,
      containers: [
        {
          name: 'load',
          image,
          imagePullPolicy: 'Never',
          command: ['node', '/lab/load.ts', JSON.stringify(load)],
          readinessProbe: {
            httpGet: { path: '/healthz', port: CLIENT_CONTROL_PORT },
            periodSeconds: 1,
          },
          securityContext: { runAsUser: UID.app, runAsGroup: UID.app },
        },
      ],
    },
  };
}
