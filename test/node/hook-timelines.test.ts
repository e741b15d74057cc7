// The real kubelet runs every hook the planner writes, as `prestop-injector
// inject --explain` says it will. The webhook (a process in the node's
// network namespace, registered by URL, with the chart's RBAC) injects the
// pods; each container records, from the inside, when its preStop ran,
// when SIGTERM came and when it died; the CLI's --explain on the same
// stored pods must agree within 1 s.
//
// One node, one round: the pods are deleted a second apart and stop side
// by side.

import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startNode, type RealNode } from '../support/node/node.ts';
import {
  compare,
  containersOf,
  explainStored,
  recorderPod,
  startRecorder,
  stopAndMeasure,
  stopPlan,
  storedPod,
  timelineTable,
  type Comparison,
  type Explained,
  type MeasuredContainer,
  type Recorder,
  type RecorderPodSpec,
  type StoredPod,
} from './support-stops.ts';
import {
  startNetnsWebhook,
  webhookIdentity,
  webhookNamespace,
  type NetnsWebhook,
} from './support-webhook.ts';

const A = 'prestop-injector.io/';
/** Pods here go to the webhook with the default sleep-action (auto: on, at 1.37). */
const AUTO = 'timelines';
/** Pods here go to the webhook started with --sleep-action off. */
const EXEC = 'timelines-exec';
const HELPER = 'log-shipper';
const APP_PORT = 8080;
/** What both webhooks are started with, and what --explain is given too. */
const SHARED_FLAGS = ['--helper-sidecars', HELPER];
const FLAGS: Record<string, string[]> = {
  [AUTO]: SHARED_FLAGS,
  [EXEC]: [...SHARED_FLAGS, '--sleep-action', 'off'],
};

const inject = (settings: Record<string, string>) => ({
  [`${A}inject`]: 'enabled',
  ...Object.fromEntries(Object.entries(settings).map(([k, v]) => [`${A}${k}`, v])),
});

/**
 * One pod for each hook the planner writes. Delays and grace periods are
 * short, so the whole round takes ~20 s; containers that stay until SIGKILL
 * show the deadline, those that exit show the ordering.
 */
const CASES: readonly (RecorderPodSpec & { inbound?: boolean })[] = [
  {
    name: 'sleep-action',
    namespace: AUTO,
    annotations: inject({ 'delay-seconds': '4' }),
    grace: 3,
    containers: [{ name: 'app' }],
  },
  {
    name: 'exec-sleep',
    namespace: EXEC,
    annotations: inject({ 'delay-seconds': '4' }),
    grace: 3,
    containers: [{ name: 'app' }],
  },
  {
    // An idle inbound connection, open until the end: the drain runs to its timeout.
    name: 'drain',
    namespace: AUTO,
    annotations: inject({ mode: 'drain', 'delay-seconds': '2', 'drain-timeout-seconds': '4' }),
    grace: 3,
    containers: [{ name: 'app', port: APP_PORT }],
    inbound: true,
  },
  {
    // The same idle connection: the quiet period ends the drain long before its timeout.
    name: 'drain-quiet',
    namespace: AUTO,
    annotations: inject({
      mode: 'drain',
      'delay-seconds': '2',
      'drain-timeout-seconds': '8',
      'drain-quiet-seconds': '2',
    }),
    grace: 3,
    containers: [{ name: 'app', port: APP_PORT }],
    inbound: true,
  },
  {
    // Istio classic: the app holds a connection for 1.5 s after SIGTERM; the
    // proxy (uid 1337) is held until it is gone.
    name: 'istio-classic',
    namespace: AUTO,
    annotations: {
      ...inject({ 'delay-seconds': '4' }),
      'sidecar.istio.io/status': '{"containers":["istio-proxy"]}',
    },
    grace: 3,
    containers: [
      { name: 'app', uid: 1000, port: APP_PORT, holdLoopback: true, exitAfterSigtermMs: 1_500 },
      { name: 'istio-proxy', uid: 1337 },
    ],
  },
  {
    // The app exits 1 s after SIGTERM; Kubernetes then stops the sidecar.
    name: 'native-sidecar',
    namespace: AUTO,
    annotations: inject({ 'delay-seconds': '4' }),
    grace: 3,
    containers: [
      { name: HELPER, native: true },
      { name: 'app', exitAfterSigtermMs: 1_000 },
    ],
  },
  {
    // A classic helper held through the app's latest exit (exec sleep, so
    // that its hook is seen from inside).
    name: 'held-helper',
    namespace: EXEC,
    annotations: inject({ 'delay-seconds': '4' }),
    grace: 3,
    containers: [{ name: 'app', exitAfterSigtermMs: 1_000 }, { name: HELPER }],
  },
];

describe('the real kubelet runs the hooks as --explain predicts', () => {
  let node: RealNode | undefined;
  let recorder: Recorder | undefined;
  const webhooks: NetnsWebhook[] = [];
  const stored = new Map<string, StoredPod>();
  const explained = new Map<string, Explained>();
  let measured = new Map<string, MeasuredContainer>();
  const comparisons = new Map<string, Comparison[]>();

  const inbound: Socket[] = [];

  /** An inbound connection from outside the pod (the node's dialer), open and idle until the pod dies. */
  const holdInbound = async (n: RealNode, spec: RecorderPodSpec): Promise<void> => {
    const ip = await n.kubectl(
      'get',
      'pod',
      '-n',
      spec.namespace,
      spec.name,
      '-o',
      'jsonpath={.status.podIP}',
    );
    const socket = await n.dial(ip.trim(), APP_PORT);
    socket.on('error', () => undefined);
    inbound.push(socket);
  };

  const onFailure = async (fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      if (node !== undefined) console.error(node.logTails(30));
      for (const webhook of webhooks) console.error(webhook.serve.logTail(20));
      throw err;
    }
  };

  before(() =>
    onFailure(async () => {
      const begun = Date.now();
      node = await startNode();
      const n = node;
      const v = n.versions;
      console.log(
        `node Ready in ${((Date.now() - begun) / 1000).toFixed(1)} s: ` +
          `kubelet ${v.kubelets[n.nodes[0]!.name]}, kube-proxy ${v.kubeProxy}, ` +
          `kube-apiserver ${v.kubeApiserver}, kube-controller-manager ${v.kubeControllerManager}, ` +
          `kube-scheduler ${v.kubeScheduler}, etcd ${v.etcd}, ${v.containerd}, ${v.runc}`,
      );
      recorder = await startRecorder(path.join(n.dir, 'records'));
      const kubeconfig = await webhookIdentity(n);
      for (const namespace of [AUTO, EXEC]) {
        const webhook = await startNetnsWebhook(n, {
          name: namespace,
          kubeconfig,
          flags: FLAGS[namespace]!,
        });
        webhooks.push(webhook);
        await webhookNamespace(n, namespace, webhook);
      }
      await n.apply(...CASES.map((spec) => recorderPod(n, recorder!, spec)));
      // Admitted once: what the webhook wrote is what the kubelet runs.
      for (const spec of CASES)
        stored.set(spec.name, await storedPod(n, spec.namespace, spec.name));
      for (const namespace of [AUTO, EXEC]) {
        const pods = CASES.filter((c) => c.namespace === namespace).map((c) => stored.get(c.name)!);
        explained.set(
          namespace,
          await explainStored(n, pods, FLAGS[namespace]!, path.join(n.dir, `${namespace}.json`)),
        );
      }
      const measuring = Date.now();
      measured = await stopAndMeasure(
        n,
        recorder,
        CASES.map((spec) => ({
          namespace: spec.namespace,
          name: spec.name,
          ...(spec.inbound ? { beforeDelete: () => holdInbound(n, spec) } : {}),
        })),
      );
      console.log(
        `stopped ${CASES.length} pods in ${((Date.now() - measuring) / 1000).toFixed(1)} s`,
      );
      for (const spec of CASES) {
        const predicted = explained.get(spec.namespace)!.pods.get(spec.name);
        assert.ok(predicted, `--explain shows pod ${spec.name}`);
        assert.deepEqual(
          [...predicted.containers.keys()].sort(),
          containersOf(stored.get(spec.name)!)
            .map((c) => c.name)
            .sort(),
          `--explain shows every container of ${spec.name}`,
        );
        comparisons.set(
          spec.name,
          [...predicted.containers.values()].map((c) => {
            const key = `${spec.name}/${c.name}`;
            return compare(key, c, predicted.grace, measured.get(key)!);
          }),
        );
      }
      for (const namespace of [AUTO, EXEC]) {
        console.log(
          `\nprestop-injector inject --explain ${FLAGS[namespace]!.join(' ')} (pods of ${namespace}):\n` +
            explained.get(namespace)!.text,
        );
      }
      console.log(
        `\nmeasured (predicted → measured, s after the delete):\n${timelineTable([...comparisons.values()].flat())}\n`,
      );
    }),
  );

  after(async () => {
    for (const socket of inbound) socket.destroy();
    for (const webhook of webhooks) await webhook.stop();
    await recorder?.stop();
    await node?.stop();
  });

  it('--explain describes the hooks the webhook stored (the CLI plans the same pods)', () => {
    for (const namespace of [AUTO, EXEC]) {
      for (const pod of explained.get(namespace)!.injected) {
        assert.deepEqual(
          stopPlan(pod),
          stopPlan(stored.get(pod.metadata.name)!),
          pod.metadata.name,
        );
      }
    }
  });

  /** The hook --explain names for a container. */
  const hook = (pod: string, container: string): string => {
    for (const e of explained.values()) {
      const label = e.pods.get(pod)?.containers.get(container)?.label;
      if (label !== undefined) return label;
    }
    return '(not in --explain)';
  };
  const agree = (pod: string) => {
    const rows = comparisons.get(pod)!;
    const disagreements = rows.flatMap((r) => r.disagreements.map((d) => `${r.key}: ${d}`));
    assert.deepEqual(disagreements, [], `\n${timelineTable(rows)}`);
    return rows;
  };
  const m = (key: string) => measured.get(key)!;

  it('sleep action: SIGTERM when the kubelet has slept, SIGKILL at the raised grace', () => {
    assert.match(hook('sleep-action', 'app'), /^sleep action 4s$/);
    agree('sleep-action');
  });

  it('exec sleep (--sleep-action off): the hook runs in the container, then SIGTERM', () => {
    assert.match(hook('exec-sleep', 'app'), /^exec sleep 4s$/);
    agree('exec-sleep');
    assert.match(m('exec-sleep/app').hookCommands.join(' '), /sleep 4/);
  });

  it('drain: an open inbound connection keeps it to its timeout', () => {
    assert.match(hook('drain', 'app'), /^drain 2s \+ up to 4s$/);
    const [row] = agree('drain');
    assert.ok(
      row!.measured.hookEnd! >= 6 - 1,
      `ran to its timeout (6 s): ${row!.measured.hookEnd}`,
    );
  });

  it('drain with a quiet period: an idle connection ends it after the quiet period', () => {
    assert.match(hook('drain-quiet', 'app'), /^drain 2s \+ up to 8s$/);
    const [row] = agree('drain-quiet');
    // delay 2 s + quiet 2 s (one sample a second), long before the timeout (10 s).
    assert.ok(
      within1(row!.measured.hookEnd!, 4),
      `ended after the quiet period: ${row!.measured.hookEnd}`,
    );
  });

  it('Istio classic: the proxy (uid 1337) is held until the app has closed its connections', () => {
    assert.match(
      hook('istio-classic', 'istio-proxy'),
      /^hold 4s, then until app connections close/,
    );
    agree('istio-classic');
    const app = m('istio-classic/app');
    const proxy = m('istio-classic/istio-proxy');
    assert.equal(app.killed, false, 'the app exited by itself');
    // The hold samples once a second: it ends within a second of the app's exit.
    assert.ok(
      proxy.hookEnd! >= app.gone && proxy.hookEnd! <= app.gone + 1.5,
      `hold ended ${proxy.hookEnd} s, app gone ${app.gone} s`,
    );
  });

  it('native sidecar: SIGTERM once the app has exited', () => {
    agree('native-sidecar');
    const app = m('native-sidecar/app');
    const sidecar = m(`native-sidecar/${HELPER}`);
    assert.ok(
      sidecar.sigterm! >= app.gone,
      `sidecar SIGTERM ${sidecar.sigterm} s, app gone ${app.gone} s`,
    );
  });

  it('held helper sidecar: held through the app latest exit, then SIGTERM', () => {
    assert.match(hook('held-helper', HELPER), /^exec sleep 7s$/);
    agree('held-helper');
  });
});

const within1 = (value: number, expected: number) => Math.abs(value - expected) <= 1;
