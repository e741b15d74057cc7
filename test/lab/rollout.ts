// One scenario on the real node, and one measured rollout in it.
//
// A scenario gets a namespace (labelled for the webhook), the Service `web`,
// and its load generator: a client pod for the ClusterIP paths, a process in
// the node's network namespace in front of HAProxy for the others; a mesh
// scenario also gets the backend its app calls. A rollout then creates the
// Deployment `web` with one strategy's template, waits until it serves, starts
// the load, changes the template and lets the real Deployment controller
// replace the pods (maxSurge 1, maxUnavailable 0), the real kubelet stop the
// old ones, and the real EndpointSlice controller, kube-proxy or the
// HAProxy feed move the traffic. It ends when the last old pod is gone and
// the last endpoint change has landed.

import fs from 'node:fs';
import path from 'node:path';
import {
  PatchStrategy,
  setHeaderOptions,
  type AppsV1Api,
  type CoreV1Api,
  type DiscoveryV1Api,
  type KubeConfig,
} from '@kubernetes/client-node';
import {
  repoRoot,
  spawnManaged,
  waitFor,
  type ManagedProcess,
} from '../support/cluster/processes.ts';
import type { RealNode } from '../support/node/node.ts';
import {
  LoadControl,
  PodTracker,
  readyAddresses,
  waitForRolledOut,
  type PodTimes,
} from './cluster.ts';
import { Haproxy, FRONTEND_PORT } from './haproxy.ts';
import type { LoadConfig, LoadResult } from './load.ts';
import {
  APP_PORT,
  backendDeployment,
  CLIENT_CONTROL_PORT,
  clientPod,
  labNamespace,
  REVISION_ANNOTATION,
  service,
  SERVICE_PORT,
  webDeployment,
} from './manifests.ts';
import type { Scenario } from './scenarios.ts';
import type { Strategy } from './strategies.ts';
import { EndpointFeed } from './watcher.ts';

export const CLIENT_CONNECT_TIMEOUT_MS = 2000;
export const CLIENT_TOTAL_TIMEOUT_MS = 5000;
/**
 * Pooled connections per client. Through a ClusterIP a few, used in turn, so
 * that every old pod carries some; in front of HAProxy enough for the slow
 * scenario's requests in flight, so that none waits for a free connection.
 */
const CLUSTERIP_POOL_SIZE = 6;
const LB_POOL_SIZE = 512;
const LB_CLIENT_CONTROL_PORT = 9100;
const MAX_LOAD_MS = 15 * 60_000;
/** kube-proxy applies an EndpointSlice change within about a second (its minSyncPeriod). */
const KUBE_PROXY_SETTLE_MS = 2000;
/** Load keeps running this long after the last change has landed. */
const TAIL_MS = 1000;
/** The control's load, about as long as a rollout with the injected delay. */
const CONTROL_MS = 15_000;
const STATUS_ANNOTATION = 'prestop-injector.io/status';

export interface Lab {
  node: RealNode;
  image: string;
  kubeConfig: KubeConfig;
  core: CoreV1Api;
  apps: AppsV1Api;
  discovery: DiscoveryV1Api;
  replicas: number;
  log(line: string): void;
  verbose: boolean;
}

export interface ScenarioRun {
  scenario: Scenario;
  namespace: string;
  recordDir: string;
  backendUrl?: string;
  load: LoadControl;
  close(): Promise<void>;
}

export interface RolloutResult {
  scenario: Scenario;
  strategy: string;
  load: LoadResult;
  /** From the template change to the last old pod gone. */
  rolloutSeconds: number;
  /** The admitted pods' terminationGracePeriodSeconds. */
  grace: number;
  /** The hooks the webhook wrote (its status annotation), by container. */
  injectedHooks: Record<string, string> | null;
  /** For each old pod: SIGTERM to the app, seconds after its deletion. */
  appSigtermSeconds: number[];
  /** For each old pod with a proxy: SIGTERM to the proxy. */
  proxySigtermSeconds: number[];
  /** For each old pod on the lb paths: out of HAProxy's rotation, seconds after its deletion. */
  lbRemovalSeconds: number[];
  /** FailedPreStopHook events of the old pods. */
  failedHooks: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function usesLoadBalancer(scenario: Scenario): boolean {
  return scenario.path === 'lb' || scenario.path === 'mesh';
}

async function clusterIPOf(lab: Lab, namespace: string, name: string): Promise<string> {
  const svc = await lab.core.readNamespacedService({ namespace, name });
  const ip = svc.spec?.clusterIP;
  if (!ip) throw new Error(`service ${namespace}/${name} has no ClusterIP`);
  return ip;
}

async function waitForPodReady(lab: Lab, namespace: string, name: string): Promise<string> {
  let ip = '';
  await waitFor(`pod ${namespace}/${name} Ready`, 90_000, async () => {
    const pod = await lab.core.readNamespacedPod({ namespace, name });
    ip = pod.status?.podIP ?? '';
    return (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
  });
  return ip;
}

export async function openScenario(
  lab: Lab,
  scenario: Scenario,
  index: number,
): Promise<ScenarioRun> {
  const namespace = `lab-${index}-${scenario.name}`.slice(0, 63);
  const { node } = lab;
  await node.apply(labNamespace(namespace), service(namespace, 'web'));
  // Pods are refused until the namespace's ServiceAccount exists.
  await waitFor(`the default ServiceAccount of ${namespace}`, 60_000, async () => {
    await lab.core.readNamespacedServiceAccount({ namespace, name: 'default' });
    return true;
  });
  const recordDir = path.join(node.dir, 'records', namespace);
  fs.mkdirSync(recordDir, { recursive: true });
  // The app and proxies write here as their own uids.
  fs.chmodSync(recordDir, 0o777);

  let backendUrl: string | undefined;
  if (scenario.mesh !== undefined) {
    await node.apply(backendDeployment(namespace, lab.image), service(namespace, 'backend'));
    await waitForRolledOut(lab.apps, namespace, 'backend', 2, 90_000);
    backendUrl = `http://${await clusterIPOf(lab, namespace, 'backend')}/`;
  }

  const base = {
    rate: scenario.rate,
    connectTimeoutMs: CLIENT_CONNECT_TIMEOUT_MS,
    totalTimeoutMs: CLIENT_TOTAL_TIMEOUT_MS,
    maxRunMs: MAX_LOAD_MS,
  };
  let loadProcess: ManagedProcess | undefined;
  let load: LoadControl;
  if (usesLoadBalancer(scenario)) {
    const config: LoadConfig = {
      ...base,
      host: '127.0.0.1',
      port: FRONTEND_PORT,
      connections: 'mixed',
      poolSize: LB_POOL_SIZE,
      controlPort: LB_CLIENT_CONTROL_PORT,
    };
    loadProcess = spawnManaged(
      'load',
      process.execPath,
      [path.join(repoRoot, 'test', 'lab', 'load.ts'), JSON.stringify(config)],
      path.join(node.dir, `load-${namespace}.log`),
      { netns: node.netns, dieWithParent: true },
    );
    await waitFor('the load generator', 20_000, async () =>
      /^ready$/m.test(loadProcess!.logTail(5)),
    );
    load = new LoadControl(node.dial, '127.0.0.1', LB_CLIENT_CONTROL_PORT);
  } else {
    const config: LoadConfig = {
      ...base,
      host: await clusterIPOf(lab, namespace, 'web'),
      port: SERVICE_PORT,
      connections: scenario.path === 'clusterip-pooled' ? 'pooled' : 'fresh',
      poolSize: CLUSTERIP_POOL_SIZE,
      controlPort: CLIENT_CONTROL_PORT,
    };
    await node.apply(clientPod(namespace, lab.image, config));
    const ip = await waitForPodReady(lab, namespace, 'load-client');
    load = new LoadControl(node.dial, ip, CLIENT_CONTROL_PORT);
  }
  return {
    scenario,
    namespace,
    recordDir,
    ...(backendUrl === undefined ? {} : { backendUrl }),
    load,
    async close() {
      await loadProcess?.stop(5_000);
      await node.kubectl('delete', 'namespace', namespace, '--wait=false');
    },
  };
}

interface Records {
  [event: string]: number;
}

function readRecords(file: string): Records {
  const records: Records = {};
  if (!fs.existsSync(file)) return records;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    const entry = JSON.parse(line) as { event: string; t: number };
    records[entry.event] ??= entry.t;
  }
  return records;
}

/** Removes the Deployment and its pods at once (a 1 s grace), whatever their hooks. */
async function removeWeb(lab: Lab, namespace: string): Promise<void> {
  const k = (...args: string[]) => lab.node.kubectl('-n', namespace, ...args);
  await k('delete', 'deployment', 'web', '--cascade=orphan', '--ignore-not-found');
  await k('delete', 'replicaset', '-l', 'app=web', '--cascade=orphan', '--ignore-not-found');
  await k('delete', 'pod', '-l', 'app=web', '--grace-period=1', '--timeout=60s');
}

export async function runRollout(
  lab: Lab,
  run: ScenarioRun,
  strategy: Strategy,
): Promise<RolloutResult> {
  const { node, replicas } = lab;
  const { scenario, namespace } = run;
  const web = (revision: number) =>
    webDeployment({
      namespace,
      image: lab.image,
      scenario,
      strategy,
      replicas,
      revision,
      recordDir: run.recordDir,
      ...(run.backendUrl === undefined ? {} : { backendUrl: run.backendUrl }),
    });
  const tracker = new PodTracker();
  let haproxy: Haproxy | undefined;
  let feed: EndpointFeed | undefined;
  let haproxyDir: string | undefined;
  try {
    await node.apply(web(1));
    await waitForRolledOut(lab.apps, namespace, 'web', replicas, 120_000);
    await waitFor('the Service to list every pod', 30_000, async () => {
      return (await readyAddresses(lab.discovery, namespace, 'web')).length === replicas;
    });
    const oldPods = (
      await lab.core.listNamespacedPod({ namespace, labelSelector: 'app=web' })
    ).items.filter((p) => p.metadata?.deletionTimestamp === undefined);
    const admitted = oldPods[0]!;
    const status = admitted.metadata?.annotations?.[STATUS_ANNOTATION];
    if ((status !== undefined) !== (strategy.inject !== undefined)) {
      throw new Error(
        `strategy ${strategy.name}: the webhook ${status === undefined ? 'did not inject' : 'injected'}: ${status ?? ''}`,
      );
    }
    const injectedHooks =
      status === undefined ? null : (JSON.parse(status) as { hooks: Record<string, string> }).hooks;

    if (usesLoadBalancer(scenario)) {
      haproxyDir = fs.mkdtempSync(path.join(node.dir, 'haproxy-'));
      haproxy = new Haproxy(haproxyDir);
      const dir = haproxyDir;
      await haproxy.start((argv) => {
        const proc = spawnManaged(
          'haproxy',
          argv[0]!,
          argv.slice(1),
          path.join(dir, 'haproxy.log'),
          {
            netns: node.netns,
            dieWithParent: true,
          },
        );
        return {
          running: () => !proc.hasExited(),
          stop: () => void proc.stop(2_000),
          output: () => proc.logTail(40),
        };
      });
      feed = new EndpointFeed(haproxy, APP_PORT);
      await feed.start(lab.kubeConfig, namespace, 'web');
      const want = oldPods.map((p) => p.status?.podIP ?? '').sort();
      await waitFor('HAProxy to have every pod', 30_000, async () => {
        return JSON.stringify(feed!.rotation()) === JSON.stringify(want);
      });
      feed.delay(scenario.delaySeconds ?? 0);
    } else {
      await sleep(KUBE_PROXY_SETTLE_MS);
    }

    await tracker.start(lab.kubeConfig, namespace, 'app=web');
    await run.load.start();
    await sleep(scenario.warmupMs);
    const graceSeconds = admitted.spec?.terminationGracePeriodSeconds ?? 30;
    if (strategy.control === true) {
      await sleep(CONTROL_MS);
      return {
        scenario,
        strategy: strategy.name,
        load: await run.load.stop(),
        rolloutSeconds: 0,
        grace: graceSeconds,
        injectedHooks,
        appSigtermSeconds: [],
        proxySigtermSeconds: [],
        lbRemovalSeconds: [],
        failedHooks: 0,
      };
    }

    const started = Date.now();
    await lab.apps.patchNamespacedDeployment(
      {
        namespace,
        name: 'web',
        body: { spec: { template: { metadata: { annotations: { [REVISION_ANNOTATION]: '2' } } } } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const oldNames = oldPods.map((p) => p.metadata!.name!);
    await waitFor('the rollout to end', (graceSeconds + 120) * 1000, async () => {
      tracker.check();
      if (!oldNames.every((name) => tracker.pods.get(name)?.goneAt !== undefined)) return false;
      const s = await lab.apps.readNamespacedDeployment({ namespace, name: 'web' });
      return (
        s.status?.updatedReplicas === replicas &&
        s.status?.readyReplicas === replicas &&
        s.status?.replicas === replicas
      );
    });
    const old = oldNames.map((name) => tracker.pods.get(name)!);
    const finished = Math.max(...old.map((p) => p.goneAt!));
    if (feed !== undefined) await feed.settled();
    await sleep(feed === undefined ? KUBE_PROXY_SETTLE_MS : TAIL_MS);
    const load = await run.load.stop();
    if (haproxy !== undefined && !haproxy.running()) {
      throw new Error(`haproxy died during the run:\n${haproxy.log()}`);
    }

    const after = (pod: PodTimes, t: number | undefined) =>
      t === undefined || pod.deletingAt === undefined ? [] : [(t - pod.deletingAt) / 1000];
    const appSigtermSeconds = old.flatMap((pod) =>
      after(pod, readRecords(path.join(run.recordDir, `${pod.name}.app.jsonl`))['SIGTERM']),
    );
    const proxySigtermSeconds = old.flatMap((pod) =>
      after(pod, readRecords(path.join(run.recordDir, `${pod.name}.proxy.jsonl`))['SIGTERM']),
    );
    const lbRemovalSeconds = old.flatMap((pod) =>
      after(pod, feed?.changes.find((c) => c.change === 'removed' && c.ip === pod.ip)?.landedAt),
    );
    const events = await lab.core.listNamespacedEvent({
      namespace,
      fieldSelector: 'reason=FailedPreStopHook',
    });
    const failedHooks = events.items.filter((e) =>
      oldNames.includes(e.involvedObject?.name ?? ''),
    ).length;

    if (lab.verbose) {
      if (feed !== undefined) {
        lab.log(
          `    HAProxy: ${feed.changes
            .filter((c) => c.seenAt >= started)
            .map((c) => `${((c.landedAt - started) / 1000).toFixed(2)}s ${c.change} ${c.ip}`)
            .join('; ')}`,
        );
      }
      const since = (t: number) => ((t - started) / 1000).toFixed(1);
      if (load.failures.length > 0) {
        lab.log(
          `    failures (s after the template change, request start): ${load.failures
            .map((f) => `${since(f.at)} ${f.kind}/${f.detail}`)
            .join(', ')}`,
        );
      }
      const fresh = [...tracker.pods.values()].filter((p) => !oldNames.includes(p.name));
      lab.log(
        `    new pods ready at: ${fresh.map((p) => `${p.ip} ${p.readyAt === undefined ? '-' : since(p.readyAt)}s`).join(', ')}; ` +
          `old: ${old.map((p) => p.ip).join(', ')}`,
      );
      for (const pod of old) {
        const app = readRecords(path.join(run.recordDir, `${pod.name}.app.jsonl`));
        const proxy = readRecords(path.join(run.recordDir, `${pod.name}.proxy.jsonl`));
        const at = (t: number | undefined) =>
          t === undefined || pod.deletingAt === undefined
            ? '-'
            : `${((t - pod.deletingAt) / 1000).toFixed(2)}s`;
        lab.log(
          `    ${pod.name}: deleted at ${((pod.deletingAt! - started) / 1000).toFixed(2)}s; ` +
            `app SIGTERM ${at(app['SIGTERM'])} exit ${at(app['exit'])}; ` +
            (Object.keys(proxy).length > 0
              ? `proxy drain ${at(proxy['drain'])} SIGTERM ${at(proxy['SIGTERM'])} exit ${at(proxy['exit'])}; `
              : '') +
            (feed === undefined
              ? ''
              : `out of HAProxy ${at(feed.changes.find((c) => c.change === 'removed' && c.ip === pod.ip)?.landedAt)}; `) +
            `gone ${at(pod.goneAt)}`,
        );
      }
    }
    return {
      scenario,
      strategy: strategy.name,
      load,
      rolloutSeconds: (finished - started) / 1000,
      grace: graceSeconds,
      injectedHooks,
      appSigtermSeconds,
      proxySigtermSeconds,
      lbRemovalSeconds,
      failedHooks,
    };
  } finally {
    tracker.stop();
    feed?.stop();
    haproxy?.stop();
    await removeWeb(lab, namespace);
    if (haproxyDir !== undefined) fs.rmSync(haproxyDir, { recursive: true, force: true });
  }
}
