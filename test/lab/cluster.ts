// What the real-node lab reads from and does to the cluster: the pods of the
// rolled Deployment as a watch sees them, waits for rollouts and endpoints,
// and the control API of the load generators, reached inside the node's
// network namespace.

import http from 'node:http';
import {
  AppsV1Api,
  DiscoveryV1Api,
  Watch,
  type KubeConfig,
  type V1Pod,
} from '@kubernetes/client-node';
import { waitFor, type Dialer } from '../support/cluster/processes.ts';
import type { LoadResult } from './load.ts';

export interface PodTimes {
  name: string;
  ip?: string;
  /** Wall-clock ms at which the watch saw each. */
  readyAt?: number;
  deletingAt?: number;
  goneAt?: number;
}

/** Every pod of a label selector, with when it became ready, was deleted and was gone. */
export class PodTracker {
  readonly pods = new Map<string, PodTimes>();
  private abort: AbortController | undefined;
  private failure: Error | undefined;

  async start(kubeConfig: KubeConfig, namespace: string, selector: string): Promise<void> {
    this.abort = await new Watch(kubeConfig).watch(
      `/api/v1/namespaces/${namespace}/pods`,
      { labelSelector: selector },
      (phase, pod: V1Pod) => this.onEvent(phase, pod),
      (error: unknown) => {
        if (error !== null && error !== undefined && this.abort !== undefined) {
          this.failure ??= new Error(`pod watch ended: ${String(error)}`);
        }
      },
    );
  }

  check(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  stop(): void {
    const abort = this.abort;
    this.abort = undefined;
    abort?.abort();
  }

  private onEvent(phase: string, pod: V1Pod): void {
    const name = pod.metadata?.name ?? '';
    const now = Date.now();
    const times = this.pods.get(name) ?? { name };
    this.pods.set(name, times);
    if (pod.status?.podIP) times.ip = pod.status.podIP;
    const ready = pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
    if (ready === true) times.readyAt ??= now;
    if (pod.metadata?.deletionTimestamp) times.deletingAt ??= now;
    if (phase === 'DELETED') times.goneAt ??= now;
  }
}

export interface DeploymentState {
  replicas: number;
  updated: number;
  ready: number;
}

export async function deploymentState(
  apps: AppsV1Api,
  namespace: string,
  name: string,
): Promise<DeploymentState & { current: boolean }> {
  const d = await apps.readNamespacedDeployment({ namespace, name });
  const status = d.status ?? {};
  return {
    current: (status.observedGeneration ?? 0) >= (d.metadata?.generation ?? 1),
    replicas: status.replicas ?? 0,
    updated: status.updatedReplicas ?? 0,
    ready: status.readyReplicas ?? 0,
  };
}

/** Waits until the Deployment runs `replicas` pods of its current template, all ready. */
export async function waitForRolledOut(
  apps: AppsV1Api,
  namespace: string,
  name: string,
  replicas: number,
  timeoutMs: number,
): Promise<void> {
  await waitFor(`deployment ${namespace}/${name} rolled out`, timeoutMs, async () => {
    const s = await deploymentState(apps, namespace, name);
    return s.current && s.replicas === replicas && s.updated === replicas && s.ready === replicas;
  });
}

/** The ready addresses the Service's EndpointSlices list. */
export async function readyAddresses(
  discovery: DiscoveryV1Api,
  namespace: string,
  service: string,
): Promise<string[]> {
  const list = await discovery.listNamespacedEndpointSlice({
    namespace,
    labelSelector: `kubernetes.io/service-name=${service}`,
  });
  return list.items
    .flatMap((slice) => slice.endpoints ?? [])
    .filter((e) => e.conditions?.ready !== false)
    .flatMap((e) => e.addresses)
    .sort();
}

/** A load generator's control API (test/lab/load.ts), inside the node's namespace. */
export class LoadControl {
  private readonly dial: Dialer;
  private readonly host: string;
  private readonly port: number;

  constructor(dial: Dialer, host: string, port: number) {
    this.dial = dial;
    this.host = host;
    this.port = port;
  }

  async start(): Promise<void> {
    await this.request('/start', 10_000);
  }

  async stop(): Promise<LoadResult> {
    return (await this.request('/stop', 60_000)) as LoadResult;
  }

  private async request(path: string, timeoutMs: number): Promise<unknown> {
    const socket = await this.dial(this.host, this.port);
    return new Promise((resolve, reject) => {
      const req = http.request(
        { method: 'POST', host: this.host, path, createConnection: () => socket },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (body += chunk));
          res.on('end', () => {
            if (res.statusCode !== 200) {
              reject(new Error(`load ${path}: HTTP ${res.statusCode} ${body}`));
            } else {
              resolve(JSON.parse(body));
            }
          });
          res.on('error', reject);
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`load ${path} timed out`)));
      req.on('error', (error) => {
        socket.destroy();
        reject(error);
      });
      req.end();
    });
  }
}

export function apiClients(kubeConfig: KubeConfig) {
  return {
    apps: kubeConfig.makeApiClient(AppsV1Api),
    discovery: kubeConfig.makeApiClient(DiscoveryV1Api),
  };
}
