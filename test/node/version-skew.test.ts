// An older cluster, for real (issue 21): a v1.31 control plane with real
// kubelets of v1.31 and v1.29, and a v1.31 API server with the
// PodLifecycleSleepAction gate off. The webhook (a process in the node's
// network namespace, the chart's RBAC, no --kube-version) must emit the
// sleep action only where every kubelet runs it and the API server keeps
// it; each pod's stop is measured from inside its container.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import { createPod, simplePod } from '../support/cluster/api.ts';
import { httpGet, waitFor } from '../support/cluster/processes.ts';
import { startNode, type RealNode, type StartNodeOptions } from '../support/node/node.ts';
import {
  compare,
  explainStored,
  recorderPod,
  startRecorder,
  stopAndMeasure,
  stopPlan,
  storedPod,
  timelineTable,
  TOLERANCE_SECONDS,
  type Recorder,
  type RecorderPodSpec,
} from './support-stops.ts';
import {
  startNetnsWebhook,
  webhookIdentity,
  webhookNamespace,
  type NetnsWebhook,
} from './support-webhook.ts';

const A = 'prestop-injector.io/';
const DELAY = 3;
const OLD = 'node-old';
const STATUS = `${A}status`;

const optedIn = { [`${A}inject`]: 'enabled', [`${A}delay-seconds`]: String(DELAY) };

/** A pod that exits as soon as SIGTERM comes: its SIGTERM is its delay. */
const quickPod = (name: string, namespace: string, extra: Partial<RecorderPodSpec> = {}) => ({
  name,
  namespace,
  annotations: optedIn,
  grace: 2,
  containers: [{ name: 'app', exitAfterSigtermMs: 0 }],
  ...extra,
});

/** What an admission now writes into a probe pod (dry run): its app's preStop. */
async function admittedHook(node: RealNode, namespace: string): Promise<string> {
  const probe = simplePod('probe', { annotations: optedIn });
  return describeHook(await createPod(node.controlPlane, namespace, probe, { dryRun: true }));
}

function describeHook(pod: V1Pod): string {
  const preStop = pod.spec?.containers[0]?.lifecycle?.preStop;
  if (preStop === undefined) return 'none';
  if (preStop.sleep !== undefined) return `sleep action ${preStop.sleep.seconds}s`;
  if (preStop.exec !== undefined) return `exec ${(preStop.exec.command ?? []).join(' ')}`;
  return JSON.stringify(preStop);
}

const SLEEP_ACTION = `sleep action ${DELAY}s`;
const EXEC_SLEEP = `exec /bin/sh -c sleep ${DELAY}`;

/** Every version a node runs, as one line. */
function versionsLine(node: RealNode): string {
  const v = node.versions;
  return [
    `kube-apiserver ${v.kubeApiserver}`,
    `kube-controller-manager ${v.kubeControllerManager}`,
    `kube-scheduler ${v.kubeScheduler}`,
    `kube-proxy ${v.kubeProxy}`,
    ...Object.entries(v.kubelets).map(([name, version]) => `kubelet ${version} (${name})`),
    `etcd ${v.etcd}`,
    v.containerd,
    v.runc,
  ].join(', ');
}

/** A node of the skew release, with a webhook per flag set; torn down by the returned stop. */
async function skewCluster(
  options: Pick<StartNodeOptions, 'extraApiserverArgs'>,
  webhooks: Record<string, string[]>,
) {
  const begun = Date.now();
  const node = await startNode({ controlPlane: 'skew', kubelet: 'skew', ...options });
  const started: NetnsWebhook[] = [];
  let recorder: Recorder | undefined;
  try {
    console.log(
      `node Ready in ${((Date.now() - begun) / 1000).toFixed(1)} s: ${versionsLine(node)}`,
    );
    assert.match(node.versions.kubeApiserver, /^v1\.31\./);
    assert.match(node.versions.kubelets['node-1'] ?? '', /^v1\.31\./);
    recorder = await startRecorder(path.join(node.dir, 'records'));
    const kubeconfig = await webhookIdentity(node);
    for (const [namespace, flags] of Object.entries(webhooks)) {
      const webhook = await startNetnsWebhook(node, { name: namespace, kubeconfig, flags });
      started.push(webhook);
      await webhookNamespace(node, namespace, webhook);
    }
    const running = recorder;
    return {
      node,
      recorder: running,
      webhooks: started,
      async stop() {
        for (const webhook of started) await webhook.stop();
        await running.stop();
        await node.stop();
      },
    };
  } catch (err) {
    console.error(node.logTails(30));
    for (const webhook of started) await webhook.stop();
    // An open listener would keep the test process alive.
    await recorder?.stop();
    await node.stop();
    throw err;
  }
}

/** The webhook's own view, from its /metrics: [API server, oldest kubelet], sleep action on. */
async function webhookView(webhook: NetnsWebhook): Promise<[string[], boolean]> {
  const text = await webhook.metrics();
  const versions =
    /^prestop_injector_cluster_versions_info\{apiserver="([\w.]+)",oldest_kubelet="([\w.]+)"\} 1$/m.exec(
      text,
    );
  const sleep = /^prestop_injector_sleep_action_enabled (\d)$/m.exec(text);
  assert.ok(versions && sleep, `the webhook's metrics:\n${text}`);
  return [versions.slice(1), sleep[1] === '1'];
}

describe('a v1.31 control plane with kubelets of v1.31 and v1.29', () => {
  const NAMESPACE = 'skew';
  let cluster: Awaited<ReturnType<typeof skewCluster>> | undefined;
  let node: RealNode;
  let recorder: Recorder;

  const onFailure = async (fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      if (cluster !== undefined) {
        console.error(node.logTails(30));
        for (const webhook of cluster.webhooks) console.error(webhook.serve.logTail(20));
      }
      throw err;
    }
  };

  /** Stops the pods and compares each with `inject --explain` asked of this cluster. */
  const stopAndCompare = async (specs: RecorderPodSpec[]) => {
    const stored = await Promise.all(specs.map((s) => storedPod(node, s.namespace, s.name)));
    const explained = await explainStored(
      node,
      stored,
      [],
      path.join(node.dir, `${specs[0]!.name}.json`),
    );
    for (const pod of explained.injected) {
      const same = stored.find((s) => s.metadata.name === pod.metadata.name)!;
      assert.deepEqual(stopPlan(pod), stopPlan(same), `the CLI plans ${pod.metadata.name} alike`);
    }
    const measured = await stopAndMeasure(node, recorder, specs);
    const rows = specs.map((spec) => {
      const predicted = explained.pods.get(spec.name)!;
      const app = predicted.containers.get('app')!;
      return compare(`${spec.name}/app`, app, predicted.grace, measured.get(`${spec.name}/app`)!);
    });
    console.log(`${explained.text}\n${timelineTable(rows)}\n`);
    for (const row of rows) assert.deepEqual(row.disagreements, [], row.key);
    return { stored, rows };
  };

  before(async () => {
    cluster = await skewCluster({}, { [NAMESPACE]: [] });
    ({ node, recorder } = cluster);
  });
  after(() => cluster?.stop());

  it('(a) every kubelet v1.31: admissions get the sleep action, and the v1.31 kubelet runs it', () =>
    onFailure(async () => {
      assert.equal(await admittedHook(node, NAMESPACE), SLEEP_ACTION);
      assert.deepEqual(await webhookView(cluster!.webhooks[0]!), [['1.31', '1.31'], true]);
      await node.apply(recorderPod(node, recorder, quickPod('on-v1-31', NAMESPACE)));
      const { rows } = await stopAndCompare([quickPod('on-v1-31', NAMESPACE)]);
      assert.equal(rows[0]!.predicted.label, SLEEP_ACTION);
      assert.ok(Math.abs(rows[0]!.measured.sigterm! - DELAY) <= TOLERANCE_SECONDS);
    }));

  it('(b) a v1.29 kubelet joins: exec sleep at once, its pod keeps the delay; it leaves: the sleep action again', () =>
    onFailure(async () => {
      const joining = node.addNode({ name: OLD, kubelet: 'oldest' });
      // Not awaited yet: a failure must not go unhandled meanwhile.
      joining.catch(() => undefined);
      let registeredAt = 0;
      await waitFor(
        `Node ${OLD} to register`,
        120_000,
        async () => {
          await node.controlPlane.core.readNode({ name: OLD });
          registeredAt = Date.now();
          return true;
        },
        50,
      );
      await waitFor(
        'exec sleep once the v1.29 node is there',
        10_000,
        async () => {
          return (await admittedHook(node, NAMESPACE)) === EXEC_SLEEP;
        },
        50,
      );
      const switchMs = Date.now() - registeredAt;
      await joining;
      const registered = await node.controlPlane.core.readNode({ name: OLD });
      console.log(
        `${OLD} joined: kubelet ${registered.status?.nodeInfo?.kubeletVersion}; ` +
          `admissions switched to exec sleep ${switchMs} ms after its Node object was seen; ` +
          `now ${versionsLine(node)}`,
      );
      assert.match(registered.status?.nodeInfo?.kubeletVersion ?? '', /^v1\.29\./);
      assert.ok(switchMs <= TOLERANCE_SECONDS * 1000, `switched after ${switchMs} ms`);
      assert.deepEqual(await webhookView(cluster!.webhooks[0]!), [['1.31', '1.29'], false]);

      // Injected now: exec sleep. Beside it, as the baseline, an opted-in
      // pod with its author's own sleep action, which the planner keeps and
      // the v1.29 kubelet skips.
      const injected = quickPod('on-v1-29', NAMESPACE, { nodeName: OLD });
      const own = quickPod('own-sleep-on-v1-29', NAMESPACE, {
        nodeName: OLD,
        grace: DELAY + 2,
        containers: [
          { name: 'app', exitAfterSigtermMs: 0, preStop: { sleep: { seconds: DELAY } } },
        ],
      });
      await node.apply(recorderPod(node, recorder, injected), recorderPod(node, recorder, own));
      const { stored, rows } = await stopAndCompare([injected, own]);
      assert.deepEqual(stored[0]!.spec.containers[0]!.lifecycle?.preStop, {
        exec: { command: ['/bin/sh', '-c', `sleep ${DELAY}`] },
      });
      assert.deepEqual(stored[1]!.spec.containers[0]!.lifecycle?.preStop, {
        sleep: { seconds: DELAY },
      });
      const [onOld, ownOnOld] = rows;
      assert.equal(onOld!.predicted.label, `exec sleep ${DELAY}s`);
      assert.ok(
        Math.abs(onOld!.measured.sigterm! - DELAY) <= TOLERANCE_SECONDS,
        `SIGTERM at the delay: ${onOld!.measured.sigterm} s`,
      );
      // --explain says the sleep action may not wait, and the kubelet did not.
      assert.equal(ownOnOld!.predicted.sigtermMin, 0, ownOnOld!.predicted.label);
      assert.ok(
        ownOnOld!.measured.sigterm! < TOLERANCE_SECONDS,
        `the v1.29 kubelet returns from a sleep action at once: SIGTERM at ${ownOnOld!.measured.sigterm} s`,
      );

      // The node leaves: its kubelet stops and its Node object is deleted.
      await node.nodes.find((n) => n.name === OLD)!.kubelet.stop();
      const removedAt = Date.now();
      await node.controlPlane.core.deleteNode({ name: OLD });
      await waitFor(
        'the sleep action once the v1.29 node is gone',
        10_000,
        async () => {
          return (await admittedHook(node, NAMESPACE)) === SLEEP_ACTION;
        },
        50,
      );
      const backMs = Date.now() - removedAt;
      console.log(`${OLD} removed: admissions back to the sleep action after ${backMs} ms`);
      assert.ok(backMs <= TOLERANCE_SECONDS * 1000, `switched back after ${backMs} ms`);
      assert.deepEqual(await webhookView(cluster!.webhooks[0]!), [['1.31', '1.31'], true]);
    }));
});

describe('a v1.31 API server with --feature-gates=PodLifecycleSleepAction=false', () => {
  const FORCED = 'gate-off-forced';
  const AUTO = 'gate-off-auto';
  let cluster: Awaited<ReturnType<typeof skewCluster>> | undefined;
  const measured = new Map<string, { sigterm: number | null; gone: number }>();
  const stored = new Map<string, Awaited<ReturnType<typeof storedPod>>>();

  before(async () => {
    cluster = await skewCluster(
      { extraApiserverArgs: ['--feature-gates=PodLifecycleSleepAction=false'] },
      { [FORCED]: ['--sleep-action', 'on'], [AUTO]: ['--sleep-action', 'auto'] },
    );
    const { node, recorder } = cluster;
    const pods = [quickPod('forced-on', FORCED), quickPod('auto', AUTO)];
    await node.apply(...pods.map((pod) => recorderPod(node, recorder, pod)));
    for (const pod of pods) stored.set(pod.name, await storedPod(node, pod.namespace, pod.name));
    for (const [key, value] of await stopAndMeasure(node, recorder, pods)) measured.set(key, value);
  });
  after(() => cluster?.stop());

  it('the server says its gate is off in /metrics, and the auto webhook reads it there', async () => {
    const { node, webhooks } = cluster!;
    const metrics = await httpGet(`${node.controlPlane.server}/metrics`, {
      ca: node.controlPlane.caPem,
      token: node.controlPlane.adminToken,
    });
    const gate =
      /^kubernetes_feature_enabled\{name="PodLifecycleSleepAction",stage="\w*"\} (\d)$/m.exec(
        metrics.body,
      );
    console.log(`kube-apiserver /metrics: ${gate?.[0]}`);
    assert.equal(gate?.[1], '0');
    assert.deepEqual(await webhookView(webhooks.find((w) => w.name === AUTO)!), [
      ['1.31', '1.31'],
      false,
    ]);
  });

  it('--sleep-action on: the webhook wrote the sleep action, the API server dropped it, SIGTERM at once', () => {
    const pod = stored.get('forced-on')!;
    const status = JSON.parse(pod.metadata.annotations?.[STATUS] ?? '{}') as {
      hooks?: Record<string, string>;
      sleep?: Record<string, number>;
      grace?: { to: number };
    };
    // The status annotation came in the same patch as the hook.
    assert.deepEqual(status.hooks, { app: 'sleep-action' });
    assert.deepEqual(status.sleep, { app: DELAY });
    assert.equal(pod.spec.terminationGracePeriodSeconds, 2 + DELAY, 'the raised grace was kept');
    assert.equal(pod.spec.containers[0]!.lifecycle, undefined, 'no preStop stored');
    const sigterm = measured.get('forced-on/app')!.sigterm!;
    console.log(
      `forced sleep action, dropped by the API server: SIGTERM ${sigterm} s after the delete`,
    );
    assert.ok(sigterm < TOLERANCE_SECONDS, `SIGTERM at ${sigterm} s`);
  });

  it('--sleep-action auto: exec sleep, and the pod keeps its delay', () => {
    const pod = stored.get('auto')!;
    assert.deepEqual(pod.spec.containers[0]!.lifecycle?.preStop, {
      exec: { command: ['/bin/sh', '-c', `sleep ${DELAY}`] },
    });
    const sigterm = measured.get('auto/app')!.sigterm!;
    console.log(`auto, exec sleep ${DELAY}s: SIGTERM ${sigterm} s after the delete`);
    assert.ok(Math.abs(sigterm - DELAY) <= TOLERANCE_SECONDS, `SIGTERM at ${sigterm} s`);
  });
});
