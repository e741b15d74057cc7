// The kubelet's part, for pods bound to the guest's Node: the Pod object is
// real (created in the API server; the real EndpointSlice controller makes
// the Service's endpoints from it), the container is the lab's app in the
// pod's network namespace. Termination follows the kubelet: on deletion the
// preStop hook (the sleep this project injects) runs, then SIGTERM. The
// kubelet learns that the app exited at its next relist (the generic PLEG
// relists every second), then the sandbox's network goes (CNI DEL), the
// status says so, and the Pod object is deleted with grace 0.

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { KubeConfig } from '@kubernetes/client-node';
import type { LabSpec } from '../spec.ts';
import { mustApi } from './api.ts';
import { addNetns, inNetns, removeNetns } from './net.ts';

const NODE_BINARY = process.execPath;
const APP = new URL('./app.ts', import.meta.url).pathname;

export interface LabPod {
  name: string;
  ip: string;
  netns: string;
  uid: string;
  startedMs: number;
  app: ChildProcess;
  exited: Promise<void>;
  /** The app's next JSON line (its answer to SIGUSR2). */
  nextJson(): Promise<unknown>;
}

export interface TerminationMarks {
  deletionRequestedMs: number;
  sigtermMs: number;
  /** The app exited: from here on the pod serves nothing. */
  exitedMs: number;
  /** CNI DEL: its address is no longer routed. */
  networkGoneMs: number;
  objectDeletedMs: number;
}

/** The kubelet's generic PLEG relists containers this often. */
const PLEG_RELIST_MS = 1000;

const now = () => new Date().toISOString();

export class Kubelet {
  private readonly kc: KubeConfig;
  private readonly spec: LabSpec;
  private readonly log: (line: string) => void;
  private readonly pods = new Set<LabPod>();

  constructor(kc: KubeConfig, spec: LabSpec, log: (line: string) => void) {
    this.kc = kc;
    this.spec = spec;
    this.log = log;
  }

  private podPath(name: string, sub = ''): string {
    return `/api/v1/namespaces/${this.spec.namespace}/pods/${name}${sub}`;
  }

  /** A Ready pod: the object, its sandbox and its app. */
  async start(name: string, ip: string): Promise<LabPod> {
    const { spec } = this;
    const created = (await mustApi(this.kc, 'POST', `/api/v1/namespaces/${spec.namespace}/pods`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, labels: { app: spec.service.name } },
      spec: {
        nodeName: spec.nodeName,
        terminationGracePeriodSeconds: spec.terminationGracePeriodSeconds,
        automountServiceAccountToken: false,
        containers: [
          {
            name: 'app',
            image: 'lab.invalid/app:1',
            ports: [{ containerPort: spec.service.targetPort }],
            lifecycle: { preStop: { sleep: { seconds: spec.preStopSleepSeconds } } },
          },
        ],
      },
    })) as { metadata: { uid: string } };
    const netns = `pod-${name}`;
    await addNetns(netns, ip);
    const [command, ...args] = inNetns(netns, [
      NODE_BINARY,
      APP,
      name,
      String(spec.service.targetPort),
    ]);
    const app = spawn(command!, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = createInterface({ input: app.stdout! });
    const waiting: ((line: string) => void)[] = [];
    let listening: () => void = () => {};
    const listeningNow = new Promise<void>((resolve) => (listening = resolve));
    lines.on('line', (line) => {
      if (line.startsWith('listening')) listening();
      else if (line.startsWith('{')) waiting.shift()?.(line);
      else this.log(`  ${name}: ${line}`);
    });
    const exited = new Promise<void>((resolve) => app.once('exit', () => resolve()));
    const pod: LabPod = {
      name,
      ip,
      netns,
      uid: created.metadata.uid,
      startedMs: Date.now(),
      app,
      exited,
      nextJson: () =>
        new Promise((resolve) => waiting.push((line) => resolve(JSON.parse(line) as unknown))),
    };
    this.pods.add(pod);
    await Promise.race([
      listeningNow,
      exited.then(() => Promise.reject(new Error(`${name}: the app exited before listening`))),
    ]);
    await mustApi(
      this.kc,
      'PATCH',
      this.podPath(name, '/status'),
      {
        status: {
          phase: 'Running',
          hostIP: spec.nodeIP,
          hostIPs: [{ ip: spec.nodeIP }],
          podIP: ip,
          podIPs: [{ ip }],
          startTime: now(),
          conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map((type) => ({
            type,
            status: 'True',
            lastTransitionTime: now(),
          })),
          containerStatuses: [
            {
              name: 'app',
              image: 'lab.invalid/app:1',
              imageID: '',
              ready: true,
              started: true,
              restartCount: 0,
              state: { running: { startedAt: now() } },
            },
          ],
        },
      },
      'application/merge-patch+json',
    );
    return pod;
  }

  /** The client ports of the requests the app is serving now. */
  async inFlightPorts(pod: LabPod): Promise<number[]> {
    const answer = pod.nextJson();
    pod.app.kill('SIGUSR2');
    return ((await answer) as { inFlight: number[] }).inFlight;
  }

  /**
   * The Deployment controller's delete, then the kubelet's termination;
   * `onDeletionRequested` runs right after the API server has marked the pod.
   */
  async terminate(pod: LabPod, onDeletionRequested: () => void): Promise<TerminationMarks> {
    await mustApi(this.kc, 'DELETE', this.podPath(pod.name));
    const deletionRequestedMs = Date.now();
    onDeletionRequested();
    await new Promise((resolve) => setTimeout(resolve, this.spec.preStopSleepSeconds * 1000));
    const sigtermMs = Date.now();
    pod.app.kill('SIGTERM');
    const grace = setTimeout(
      () => pod.app.kill('SIGKILL'),
      (this.spec.terminationGracePeriodSeconds - this.spec.preStopSleepSeconds) * 1000,
    );
    await pod.exited;
    const exitedMs = Date.now();
    clearTimeout(grace);
    // The next relist after the exit, counted from the pod's start.
    const sinceStart = exitedMs - pod.startedMs;
    await new Promise((resolve) =>
      setTimeout(resolve, PLEG_RELIST_MS - (sinceStart % PLEG_RELIST_MS)),
    );
    await removeNetns(pod.netns);
    const networkGoneMs = Date.now();
    await mustApi(
      this.kc,
      'PATCH',
      this.podPath(pod.name, '/status'),
      {
        status: {
          conditions: ['ContainersReady', 'Ready'].map((type) => ({
            type,
            status: 'False',
            lastTransitionTime: now(),
          })),
          containerStatuses: [
            {
              name: 'app',
              image: 'lab.invalid/app:1',
              imageID: '',
              ready: false,
              started: false,
              restartCount: 0,
              state: { terminated: { exitCode: 0, reason: 'Completed', finishedAt: now() } },
            },
          ],
        },
      },
      'application/merge-patch+json',
    );
    await mustApi(this.kc, 'DELETE', this.podPath(pod.name), {
      apiVersion: 'v1',
      kind: 'DeleteOptions',
      gracePeriodSeconds: 0,
      preconditions: { uid: pod.uid },
    });
    this.pods.delete(pod);
    return {
      deletionRequestedMs,
      sigtermMs,
      exitedMs,
      networkGoneMs,
      objectDeletedMs: Date.now(),
    };
  }

  /** Every pod still running goes at once (the scenario's end). */
  async removeAll(): Promise<void> {
    for (const pod of [...this.pods]) {
      pod.app.kill('SIGKILL');
      await pod.exited;
      await removeNetns(pod.netns);
      await mustApi(this.kc, 'DELETE', this.podPath(pod.name), {
        apiVersion: 'v1',
        kind: 'DeleteOptions',
        gracePeriodSeconds: 0,
      }).catch((error: unknown) => this.log(`kubelet: ${String(error)}`));
      this.pods.delete(pod);
    }
  }
}
