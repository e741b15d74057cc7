// Stopping pods on a real node and measuring, from inside each container,
// what the kubelet did; and reading what `prestop-injector inject
// --explain` predicts for the same stored pods.
//
// Every container runs test/node/apps/stop-recorder.ts, which reports over
// a unix socket on a hostPath: when an exec preStop ran in it, when SIGTERM
// came, and (by its socket closing) when it died.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { repoRoot, runCommand, waitFor } from '../support/cluster/processes.ts';
import type { RealNode } from '../support/node/node.ts';

/** How far a measured time may be from the prediction, in seconds. */
export const TOLERANCE_SECONDS = 1;
/**
 * The kubelet starts to stop a pod deleted right after it became Ready up
 * to ~2 s late (its pod worker waits for a newer PLEG relist): pods settle
 * this long first.
 */
const SETTLE_MS = 3_000;
/** Where the pods see the recorder's directory. */
const MOUNT = '/record';
const SOCKET = 'recorder.sock';

// ------------------------------------------------------------ the recorder

interface RecordedEvent {
  event: string;
  t: number;
  commands?: string[];
}

interface ContainerRecord {
  events: RecordedEvent[];
  /** When its connection closed: the process died. */
  closedAt: number | null;
  /** Connections made: more than one means the container restarted. */
  connections: number;
}

export interface Recorder {
  /** The host directory the pods mount. */
  dir: string;
  /** `pod/container` -> what it reported. */
  records: Map<string, ContainerRecord>;
  stop(): Promise<void>;
}

/** Listens on a unix socket in `dir`, which pods mount (any uid may connect). */
export async function startRecorder(dir: string): Promise<Recorder> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const socketPath = path.join(dir, SOCKET);
  fs.rmSync(socketPath, { force: true });
  const records = new Map<string, ContainerRecord>();
  const connections = new Set<net.Socket>();
  const server = net.createServer((conn) => {
    connections.add(conn);
    let record: ContainerRecord | undefined;
    let buffered = '';
    conn.setEncoding('utf8');
    conn.on('data', (chunk: string) => {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) !== -1) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        const event = JSON.parse(line) as RecordedEvent & { pod?: string; container?: string };
        if (event.event === 'hello') {
          const key = `${event.pod}/${event.container}`;
          record = records.get(key) ?? { events: [], closedAt: null, connections: 0 };
          record.connections++;
          record.closedAt = null;
          records.set(key, record);
        } else {
          record?.events.push(event);
        }
      }
    });
    conn.on('error', () => undefined);
    conn.on('close', () => {
      connections.delete(conn);
      if (record !== undefined) record.closedAt = Date.now();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  // Containers run as other uids (1000, 1337): connecting takes write access.
  fs.chmodSync(socketPath, 0o777);
  return {
    dir,
    records,
    stop: () =>
      new Promise((resolve) => {
        for (const conn of connections) conn.destroy();
        server.close(() => resolve());
      }),
  };
}

// ------------------------------------------------------------ the pods

export interface RecorderContainer {
  name: string;
  /** runAsUser (and runAsGroup); unset: the image's root. */
  uid?: number;
  /** Listen on this port. */
  port?: number;
  /** Exit this long after SIGTERM; unset: stay until SIGKILL. */
  exitAfterSigtermMs?: number;
  /** Keep a loopback connection to its own port until it exits. */
  holdLoopback?: boolean;
  /** An init container with restartPolicy Always (a native sidecar). */
  native?: boolean;
  /** A preStop of the pod's author. */
  preStop?: Record<string, unknown>;
}

export interface RecorderPodSpec {
  name: string;
  namespace: string;
  annotations?: Record<string, string>;
  /** terminationGracePeriodSeconds as written by the author. */
  grace: number;
  containers: RecorderContainer[];
  nodeName?: string;
}

export function recorderPod(node: RealNode, recorder: Recorder, spec: RecorderPodSpec) {
  const container = (c: RecorderContainer) => ({
    name: c.name,
    image: node.images.testApp.ref,
    // Imported into containerd; there is no registry to pull from.
    imagePullPolicy: 'Never',
    command: ['node', '/app/stop-recorder.ts'],
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'CONTAINER_NAME', value: c.name },
      { name: 'RECORD_SOCKET', value: `${MOUNT}/${SOCKET}` },
      ...(c.port === undefined ? [] : [{ name: 'PORT', value: String(c.port) }]),
      ...(c.exitAfterSigtermMs === undefined
        ? []
        : [{ name: 'EXIT_AFTER_SIGTERM_MS', value: String(c.exitAfterSigtermMs) }]),
      ...(c.holdLoopback ? [{ name: 'HOLD_LOOPBACK', value: '1' }] : []),
    ],
    ...(c.port === undefined ? {} : { ports: [{ containerPort: c.port }] }),
    ...(c.uid === undefined ? {} : { securityContext: { runAsUser: c.uid, runAsGroup: c.uid } }),
    ...(c.native ? { restartPolicy: 'Always' } : {}),
    ...(c.preStop === undefined ? {} : { lifecycle: { preStop: c.preStop } }),
    volumeMounts: [{ name: 'record', mountPath: MOUNT }],
  });
  const natives = spec.containers.filter((c) => c.native);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: spec.name,
      namespace: spec.namespace,
      ...(spec.annotations === undefined ? {} : { annotations: spec.annotations }),
    },
    spec: {
      terminationGracePeriodSeconds: spec.grace,
      // No token volume and no Service env: nothing the measurement needs.
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      ...(spec.nodeName === undefined ? {} : { nodeName: spec.nodeName }),
      ...(natives.length === 0 ? {} : { initContainers: natives.map(container) }),
      containers: spec.containers.filter((c) => !c.native).map(container),
      volumes: [{ name: 'record', hostPath: { path: recorder.dir, type: 'Directory' } }],
    },
  };
}

/** The pod as the API server stored it (raw JSON, never through a typed model). */
export async function storedPod(
  node: RealNode,
  namespace: string,
  name: string,
): Promise<StoredPod> {
  return JSON.parse(await node.kubectl('get', 'pod', '-n', namespace, name, '-o', 'json'));
}

export interface StoredContainer {
  name: string;
  lifecycle?: { preStop?: Record<string, unknown> };
  restartPolicy?: string;
}

export interface StoredPod {
  metadata: { name: string; namespace: string; annotations?: Record<string, string> };
  spec: {
    terminationGracePeriodSeconds: number;
    containers: StoredContainer[];
    initContainers?: StoredContainer[];
  };
}

/** Every container of a stored pod, native sidecars first. */
export function containersOf(pod: StoredPod): StoredContainer[] {
  return [...(pod.spec.initContainers ?? []), ...pod.spec.containers];
}

// ------------------------------------------------------------ stopping

/** What one container saw, in seconds after its pod's delete was sent. */
export interface MeasuredContainer {
  /** An exec preStop's process appeared; null when none ran in the container. */
  hookStart: number | null;
  hookEnd: number | null;
  /** What ran as the hook. */
  hookCommands: string[];
  sigterm: number | null;
  /** It died: exited on its own, or killed. */
  gone: number;
  /** No `exit` before it died: SIGKILL. */
  killed: boolean;
}

export interface PodToStop {
  namespace: string;
  name: string;
  /** Run just before the delete (e.g. open an inbound connection). */
  beforeDelete?: () => Promise<void>;
}

const seconds = (ms: number) => Math.round(ms) / 1000;

/**
 * Waits for the pods to run and report, lets them settle, deletes them one
 * after another `staggerMs` apart (the kubelet starts several exec hooks at
 * the same moment otherwise, on two cores), and waits until every container
 * has died and every pod is gone. Returns `pod/container` -> what it saw.
 */
export async function stopAndMeasure(
  node: RealNode,
  recorder: Recorder,
  pods: readonly PodToStop[],
  options: { staggerMs?: number; timeoutMs?: number } = {},
): Promise<Map<string, MeasuredContainer>> {
  const byNamespace = new Map<string, string[]>();
  for (const pod of pods) {
    byNamespace.set(pod.namespace, [...(byNamespace.get(pod.namespace) ?? []), pod.name]);
  }
  for (const [namespace, names] of byNamespace) {
    await node.kubectl(
      'wait',
      '-n',
      namespace,
      '--for=condition=Ready',
      '--timeout=90s',
      ...names.map((n) => `pod/${n}`),
    );
  }
  const keysOf = new Map<string, string[]>();
  for (const pod of pods) {
    const stored = await storedPod(node, pod.namespace, pod.name);
    keysOf.set(
      pod.name,
      containersOf(stored).map((c) => `${pod.name}/${c.name}`),
    );
  }
  const allKeys = [...keysOf.values()].flat();
  await waitFor('every container to report its start', 30_000, async () =>
    allKeys.every((key) => recorder.records.get(key)?.events.some((e) => e.event === 'start')),
  );
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));

  const deletedAt = new Map<string, number>();
  for (const [i, pod] of pods.entries()) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, options.staggerMs ?? 1_000));
    await pod.beforeDelete?.();
    deletedAt.set(pod.name, Date.now());
    await node.controlPlane.core.deleteNamespacedPod({ namespace: pod.namespace, name: pod.name });
  }
  await waitFor('every container to die', options.timeoutMs ?? 60_000, async () =>
    allKeys.every((key) => recorder.records.get(key)?.closedAt != null),
  );
  for (const pod of pods) {
    await waitFor(`pod ${pod.name} to be gone`, 30_000, async () => {
      const result = await node.kubectlRun([
        'get',
        'pod',
        '-n',
        pod.namespace,
        pod.name,
        '--ignore-not-found',
        '-o',
        'name',
      ]);
      return result.code === 0 && result.stdout.trim() === '';
    });
  }

  const measured = new Map<string, MeasuredContainer>();
  for (const pod of pods) {
    const t0 = deletedAt.get(pod.name)!;
    const at = (t: number | undefined) => (t === undefined ? null : seconds(t - t0));
    for (const key of keysOf.get(pod.name)!) {
      const record = recorder.records.get(key)!;
      assert.equal(record.connections, 1, `${key} restarted`);
      const after = record.events.filter((e) => e.t >= t0);
      const starts = after.filter((e) => e.event === 'hook-start');
      const ends = after.filter((e) => e.event === 'hook-end');
      measured.set(key, {
        hookStart: at(starts[0]?.t),
        hookEnd: at(ends.at(-1)?.t),
        hookCommands: [...new Set([...starts, ...ends].flatMap((e) => e.commands ?? []))],
        sigterm: at(after.find((e) => e.event === 'SIGTERM')?.t),
        gone: seconds(record.closedAt! - t0),
        killed: !after.some((e) => e.event === 'exit'),
      });
    }
  }
  return measured;
}

// ------------------------------------------------------------ --explain

/** One container's row of an `--explain` chart, in seconds. */
export interface ExplainedContainer {
  name: string;
  native: boolean;
  /** The text after the chart: what the hook is. */
  label: string;
  hookMin: number;
  hookMax: number;
  sigtermMin: number;
  sigtermMax: number;
}

export interface ExplainedPod {
  grace: number;
  containers: Map<string, ExplainedContainer>;
  problems: string[];
}

/**
 * Reads the "after" chart of each pod from `inject --explain` output, as a
 * person reads it: `=` the preStop runs, `?` it may still run, `T` SIGTERM,
 * `K` the SIGKILL deadline; a native sidecar's `.` waits for the main
 * containers, and its SIGTERM may come as late as the deadline.
 */
export function parseExplain(text: string): Map<string, ExplainedPod> {
  const pods = new Map<string, ExplainedPod>();
  const lines = text.split('\n');
  let pod: string | undefined;
  for (let i = 0; i < lines.length; i++) {
    const header = /^== \w+\/(\S+)/.exec(lines[i]!);
    if (header !== null) {
      pod = header[1]!;
      continue;
    }
    const after = /^after {2}\(grace (\d+)s, 1 column = (\d+)s\)$/.exec(lines[i]!);
    if (after === null || pod === undefined) continue;
    const grace = Number(after[1]);
    const scale = Number(after[2]);
    const axis = lines[++i]!;
    const start = axis.indexOf('0s');
    const width = Math.ceil(grace / scale) + 1;
    const containers = new Map<string, ExplainedContainer>();
    const problems: string[] = [];
    while (++i < lines.length && lines[i] !== '') {
      const line = lines[i]!;
      if (line.startsWith('  ! ')) {
        problems.push(line.slice(4));
        continue;
      }
      if (line.startsWith('  ok:')) continue;
      const title = line.slice(0, start).trim();
      const cells = line.slice(start, start + width);
      const native = title.endsWith(' (native)');
      const name = native ? title.slice(0, -' (native)'.length) : title;
      const sigterm = cells.indexOf('T');
      const lastMaybe = cells.lastIndexOf('?');
      const sigtermMax = native ? width - 1 : lastMaybe === -1 ? sigterm : lastMaybe + 1;
      const hookMin = /^=*/.exec(cells)![0].length;
      assert.ok(sigterm >= 0 && cells[width - 1] === 'K', `unreadable chart row: ${line}`);
      containers.set(name, {
        name,
        native,
        label: line.slice(start + width).trim(),
        hookMin: hookMin * scale,
        hookMax: native ? 0 : Math.max(hookMin, lastMaybe === -1 ? hookMin : lastMaybe + 1) * scale,
        sigtermMin: sigterm * scale,
        sigtermMax: sigtermMax * scale,
      });
    }
    pods.set(pod, { grace, containers, problems });
  }
  return pods;
}

const CLI = path.join(repoRoot, 'src', 'cli', 'main.ts');

export interface Explained {
  /** The whole `--explain` output. */
  text: string;
  pods: Map<string, ExplainedPod>;
  /** `inject -o json` of the same input: the pods as the CLI would write them. */
  injected: StoredPod[];
}

/**
 * Runs `prestop-injector inject -f PODS --explain` (and `-o json`) with
 * `flags` on the pods as stored, as a user would: without --kube-version,
 * so the CLI asks the cluster of its kubeconfig (this node's) for the API
 * server's and the oldest kubelet's versions.
 */
export async function explainStored(
  node: RealNode,
  pods: readonly StoredPod[],
  flags: readonly string[],
  file: string,
): Promise<Explained> {
  fs.writeFileSync(file, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: pods }) + '\n');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KUBECONFIG: node.controlPlane.kubeconfigPath,
    HOME: '/nonexistent',
  };
  for (const key of Object.keys(env)) if (key.startsWith('PRESTOP_')) delete env[key];
  const cli = async (...args: string[]) => {
    const result = await runCommand(process.execPath, [CLI, 'inject', '-f', file, ...args], {
      env,
    });
    assert.equal(result.code, 0, `inject ${args.join(' ')} failed:\n${result.stderr}`);
    return result.stdout;
  };
  const text = await cli('--explain', ...flags);
  const json = JSON.parse(await cli('-o', 'json', ...flags)) as
    StoredPod | { kind: 'List'; items: StoredPod[] };
  return {
    text,
    pods: parseExplain(text),
    injected: 'items' in json ? json.items : [json],
  };
}

/** The hooks and grace period of a pod: what the kubelet acts on. */
export function stopPlan(pod: StoredPod): Record<string, unknown> {
  return {
    grace: pod.spec.terminationGracePeriodSeconds,
    preStop: Object.fromEntries(
      containersOf(pod).map((c) => [c.name, c.lifecycle?.preStop ?? null]),
    ),
  };
}

// ------------------------------------------------------------ comparing

export interface Comparison {
  /** `pod/container` */
  key: string;
  predicted: ExplainedContainer;
  grace: number;
  measured: MeasuredContainer;
  /** Disagreements beyond the tolerance; empty when they agree. */
  disagreements: string[];
}

const within = (value: number, min: number, max: number) =>
  value >= min - TOLERANCE_SECONDS && value <= max + TOLERANCE_SECONDS;
const span = (min: number, max: number) => (min === max ? `${min}` : `${min}-${max}`);
const fmt = (value: number | null) => (value === null ? '-' : value.toFixed(2));

/**
 * Measured against predicted, each within TOLERANCE_SECONDS: every preStop
 * starts at 0; an exec hook ends inside its predicted span; SIGTERM comes
 * inside its span (a native sidecar's runs to the deadline); a container
 * still running at the deadline dies then, and none outlives it.
 */
export function compare(
  key: string,
  predicted: ExplainedContainer,
  grace: number,
  measured: MeasuredContainer,
): Comparison {
  const problems: string[] = [];
  const hasHook = predicted.hookMax > 0;
  const inKubelet = predicted.label.startsWith('sleep action');
  if (hasHook && !inKubelet) {
    if (measured.hookStart === null || !within(measured.hookStart, 0, 0)) {
      problems.push(`preStop started at ${fmt(measured.hookStart)} s, predicted 0 s`);
    }
    if (
      measured.hookEnd === null ||
      !within(measured.hookEnd, predicted.hookMin, predicted.hookMax)
    ) {
      problems.push(
        `preStop ended at ${fmt(measured.hookEnd)} s, predicted ${span(predicted.hookMin, predicted.hookMax)} s`,
      );
    }
  } else if (measured.hookStart !== null) {
    problems.push(
      `a process ran in the container at ${fmt(measured.hookStart)} s (${measured.hookCommands.join('; ')}), predicted none`,
    );
  }
  if (
    measured.sigterm === null ||
    !within(measured.sigterm, predicted.sigtermMin, predicted.sigtermMax)
  ) {
    problems.push(
      `SIGTERM at ${fmt(measured.sigterm)} s, predicted ${span(predicted.sigtermMin, predicted.sigtermMax)} s`,
    );
  }
  if (
    measured.killed
      ? !within(measured.gone, grace, grace)
      : measured.gone > grace + TOLERANCE_SECONDS
  ) {
    problems.push(
      `${measured.killed ? 'killed' : 'exited'} at ${measured.gone.toFixed(2)} s, SIGKILL deadline ${grace} s`,
    );
  }
  return { key, predicted, grace, measured, disagreements: problems };
}

/** A Markdown table: each cell `predicted → measured`, in seconds after the delete. */
export function timelineTable(rows: readonly Comparison[]): string {
  const lines = [
    '| pod/container | hook (`--explain`) | preStop start | preStop end | SIGTERM | SIGKILL or exit |',
    '|---|---|---|---|---|---|',
  ];
  for (const { key, predicted: p, grace, measured: m } of rows) {
    const hook = p.hookMax > 0;
    const inKubelet = p.label.startsWith('sleep action');
    const start = !hook ? '-' : inKubelet ? '0 → (in the kubelet)' : `0 → ${fmt(m.hookStart)}`;
    const end = !hook
      ? '-'
      : inKubelet
        ? `${span(p.hookMin, p.hookMax)} → (in the kubelet)`
        : `${span(p.hookMin, p.hookMax)} → ${fmt(m.hookEnd)}`;
    const sigterm = `${span(p.sigtermMin, p.sigtermMax)} → ${fmt(m.sigterm)}`;
    const death = m.killed
      ? `SIGKILL ${grace} → ${m.gone.toFixed(2)}`
      : `exit ≤ ${grace} → ${m.gone.toFixed(2)}`;
    const label = p.native ? `${p.label} (native)` : p.label;
    lines.push(`| ${key} | ${label} | ${start} | ${end} | ${sigterm} | ${death} |`);
  }
  return lines.join('\n');
}
