// Kubernetes objects the node tests create, running the test image's apps.

import type { RealNode } from '../support/node/node.ts';

export const APP_PORT = 8080;

export interface AppPodOptions {
  preStopSleepSeconds?: number;
  terminationGracePeriodSeconds?: number;
  /** A directory of the machine where the app records its events (<pod>.jsonl). */
  recordDir?: string;
  labels?: Record<string, string>;
}

/** The pod-app container (test/node/apps/pod-app.ts). */
function appContainer(node: RealNode, opts: AppPodOptions, podName?: string) {
  return {
    name: 'app',
    image: node.images.testApp.ref,
    // Imported into containerd; there is no registry to pull from.
    imagePullPolicy: 'Never',
    command: ['node', '/app/pod-app.ts'],
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'PORT', value: String(APP_PORT) },
      ...(opts.recordDir && podName
        ? [{ name: 'RECORD_FILE', value: `/record/${podName}.jsonl` }]
        : []),
    ],
    ports: [{ name: 'http', containerPort: APP_PORT }],
    readinessProbe: { httpGet: { path: '/', port: APP_PORT }, periodSeconds: 1 },
    ...(opts.preStopSleepSeconds === undefined
      ? {}
      : { lifecycle: { preStop: { sleep: { seconds: opts.preStopSleepSeconds } } } }),
    ...(opts.recordDir ? { volumeMounts: [{ name: 'record', mountPath: '/record' }] } : {}),
  };
}

export function appPod(node: RealNode, namespace: string, name: string, opts: AppPodOptions = {}) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels: { app: name, ...opts.labels } },
    spec: {
      ...(opts.terminationGracePeriodSeconds === undefined
        ? {}
        : { terminationGracePeriodSeconds: opts.terminationGracePeriodSeconds }),
      containers: [appContainer(node, opts, name)],
      ...(opts.recordDir
        ? {
            volumes: [
              { name: 'record', hostPath: { path: opts.recordDir, type: 'DirectoryOrCreate' } },
            ],
          }
        : {}),
    },
  };
}

/** A pod that only sleeps: a client inside the pod network (`node /app/http-get.ts`). */
export function sleeperPod(node: RealNode, namespace: string, name: string) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace },
    spec: {
      terminationGracePeriodSeconds: 0,
      containers: [
        {
          name: 'sleep',
          image: node.images.testApp.ref,
          imagePullPolicy: 'Never',
          command: ['sleep', '3600'],
        },
      ],
    },
  };
}

export function deployment(node: RealNode, namespace: string, name: string, replicas: number) {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { terminationGracePeriodSeconds: 5, containers: [appContainer(node, {})] },
      },
    },
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
      ports: [{ name: 'http', port: 80, targetPort: APP_PORT }],
    },
  };
}
