// Cluster awareness end to end: the webhook runs as its own process with its
// own ServiceAccount (namespaces get/list/watch, nothing else), and learns
// the opt-in of each namespace from its informer. The API server's audit log
// counts every request that identity makes.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import {
  createNamespace,
  createPod,
  createServiceAccountIdentity,
  deleteNode,
  registerNode,
  registerWebhook,
  simplePod,
  waitForWebhookActive,
  type ServiceAccountIdentity,
} from '../support/cluster/api.ts';
import {
  restartApiserver,
  startControlPlane,
  type ControlPlane,
} from '../support/cluster/apiserver.ts';
import {
  countViewRequests,
  prepareAuditLog,
  type AuditEvent,
  type AuditLog,
  type ViewRequestCounts,
} from '../support/cluster/audit.ts';
import { logsOnFailure, waitFor, type ManagedProcess } from '../support/cluster/processes.ts';
import { startServe, type ServeProcess } from '../support/serve.ts';

const PREFIX = 'prestop-injector.io/';
const INJECT = `${PREFIX}inject`;
const DELAY = `${PREFIX}delay-seconds`;
const MODE = `${PREFIX}mode`;
const STATUS = `${PREFIX}status`;

const OWN_NAMESPACE = 'prestop-system';
const SERVICE_ACCOUNT = 'prestop-injector';
const WEBHOOK_USER = `system:serviceaccount:${OWN_NAMESPACE}:${SERVICE_ACCOUNT}`;
const SYSTEM_NAMESPACES = ['kube-system', 'kube-public', 'kube-node-lease'];
const EXCLUDED = [...SYSTEM_NAMESPACES, OWN_NAMESPACE];
/** Pods with this label also reach the webhook through a configuration with no namespaceSelector. */
const BYPASS_LABEL = 'e2e.prestop-injector.io/no-namespace-selector';

const OPTED_IN = 'e2e-opted-in';
const PLAIN = 'e2e-plain';
const FLIP = 'e2e-flip';
const BURST = 'e2e-burst';
/** "A few seconds": how long a namespace change may take to reach admissions. */
const PROPAGATION_LIMIT_MS = 5_000;

const suffix = () => randomBytes(3).toString('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function isInjected(pod: V1Pod): boolean {
  return pod.metadata?.annotations?.[STATUS] !== undefined;
}

function appPreStop(pod: V1Pod) {
  return pod.spec?.containers[0]?.lifecycle?.preStop;
}

/** The app's preStop as a sleep action of `seconds`, the only handler. */
function assertSleepAction(pod: V1Pod, seconds: number, what = ''): void {
  const preStop = appPreStop(pod);
  assert.equal(
    preStop?.sleep?.seconds,
    seconds,
    `${what} sleep action: ${JSON.stringify(preStop)}`,
  );
  assert.equal(preStop?.exec, undefined, `${what} no exec hook`);
}

function assertUntouched(pod: V1Pod, what: string): void {
  assert.equal(pod.metadata?.annotations?.[STATUS], undefined, `${what}: no status annotation`);
  assert.equal(appPreStop(pod), undefined, `${what}: no preStop`);
  assert.equal(pod.spec?.terminationGracePeriodSeconds, 30, `${what}: grace period untouched`);
}

/** Requests by one user, each once (a watch logs ResponseStarted and later ResponseComplete). */
function requestsBy(audit: AuditLog, username: string): Map<string, AuditEvent> {
  const byId = new Map<string, AuditEvent>();
  for (const event of audit.events()) {
    if (event.user.username === username && !byId.has(event.auditID)) {
      byId.set(event.auditID, event);
    }
  }
  return byId;
}

function describeRequests(events: Iterable<AuditEvent>): string {
  return [...events].map((e) => `${e.verb} ${e.requestURI}`).join('\n') || '(none)';
}

/** One request per admission would name the namespace: a get of namespaces/NAME. */
function isPerNamespaceRead(event: AuditEvent): boolean {
  return event.objectRef?.resource === 'namespaces' && event.objectRef.name !== undefined;
}

describe('cluster awareness: namespace opt-in from an informer cache', () => {
  let cp: ControlPlane | undefined;
  let audit: AuditLog;
  let identity: ServiceAccountIdentity;
  let webhook: ServeProcess | undefined;
  let restarted: ManagedProcess | undefined;

  const plane = () => cp!;
  const withLogs = logsOnFailure(() => ({ webhook, cp }), 60);

  /** The webhook's JSON log lines so far (complete lines only: it may be writing one). */
  const webhookLog = (): Record<string, unknown>[] =>
    fs
      .readFileSync(webhook!.proc.logPath, 'utf8')
      .split('\n')
      .slice(0, -1)
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  /** Lines with this message. */
  const logLines = (msg: string) => webhookLog().filter((line) => line['msg'] === msg);
  /**
   * The first matching line once `count` have been written (pino writes
   * asynchronously: a line can land after the response it describes), or
   * undefined after 5 s.
   */
  const logged = async (
    msg: string,
    matches: (line: Record<string, unknown>) => boolean,
    count: number,
  ): Promise<Record<string, unknown> | undefined> => {
    let found: Record<string, unknown>[] = [];
    await waitFor(`${count} "${msg}" log lines`, 5_000, async () => {
      found = logLines(msg).filter(matches);
      return found.length >= count;
    }).catch(() => {});
    return found[0];
  };

  const metrics = async () => (await webhook!.health('/metrics')).body;
  /** The webhook's own count of its API requests, from its /metrics. */
  const ownRequestCounts = async (): Promise<ViewRequestCounts> => {
    const counts = { list: 0, watch: 0, read: 0, version: 0, metrics: 0 };
    const pattern = /^prestop_injector_apiserver_requests_total\{purpose="(\w+)"\} (\d+)$/gm;
    for (const [, purpose, value] of (await metrics()).matchAll(pattern)) {
      if (purpose! in counts) counts[purpose as keyof typeof counts] = Number(value);
    }
    return counts;
  };

  const dryRun = (namespace: string) =>
    createPod(plane(), namespace, simplePod(`probe-${suffix()}`), { dryRun: true });

  /** Sets annotations on a namespace; null removes one. */
  const setAnnotations = async (name: string, changes: Record<string, string | null>) => {
    const namespace = await plane().core.readNamespace({ name });
    const annotations = { ...namespace.metadata?.annotations };
    for (const [key, value] of Object.entries(changes)) {
      if (value === null) delete annotations[key];
      else annotations[key] = value;
    }
    namespace.metadata = { ...namespace.metadata, annotations };
    await plane().core.replaceNamespace({ name, body: namespace });
  };

  /** Polls dry-run creates until `check` holds; returns the milliseconds it took. */
  const untilAdmissions = async (
    what: string,
    namespace: string,
    check: (pod: V1Pod) => boolean,
    since: number,
  ): Promise<number> => {
    await waitFor(what, 30_000, async () => check(await dryRun(namespace)), 100);
    return Date.now() - since;
  };

  before(async () => {
    audit = await prepareAuditLog({ users: [WEBHOOK_USER] });
    cp = await startControlPlane({ extraApiserverArgs: audit.args });
    await withLogs(async () => {
      identity = await createServiceAccountIdentity(plane(), {
        namespace: OWN_NAMESPACE,
        name: SERVICE_ACCOUNT,
        // What docs/rbac.md documents, and nothing more.
        rules: [
          { apiGroups: [''], resources: ['namespaces', 'nodes'], verbs: ['get', 'list', 'watch'] },
          { nonResourceURLs: ['/metrics'], verbs: ['get'] },
        ],
      });
      // The kubelet that will run the pods: the sleep action needs it at 1.30+.
      await registerNode(plane(), 'node-a', plane().version);
      await createNamespace(plane(), OPTED_IN, { [INJECT]: 'enabled', [DELAY]: '20' });
      await createNamespace(plane(), PLAIN);
      await createNamespace(plane(), FLIP);
      await createNamespace(plane(), BURST, { [INJECT]: 'enabled' });
      webhook = await startServe({
        kubeconfig: identity.kubeconfigPath,
        // No --kube-version: capabilities come from /version and the nodes.
        args: ['--inject-default', 'disabled', '--own-namespace', OWN_NAMESPACE],
      });
      await registerWebhook(plane(), {
        name: 'prestop-injector',
        url: webhook.url,
        caBundlePem: webhook.certs.caPem,
        failurePolicy: 'Ignore',
        namespaceSelector: {
          matchExpressions: [
            { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: EXCLUDED },
          ],
        },
      });
      // The same webhook again, without the namespace selector, for labelled
      // pods only: it shows the exclusion in code, behind the one in config.
      await registerWebhook(plane(), {
        name: 'prestop-injector-no-namespace-selector',
        url: webhook.url,
        caBundlePem: webhook.certs.caPem,
        failurePolicy: 'Ignore',
        objectSelector: { matchLabels: { [BYPASS_LABEL]: 'true' } },
      });
      await waitForWebhookActive(plane(), { namespace: OPTED_IN, pod: simplePod('probe') });
    });
  });

  after(async () => {
    await webhook?.stop();
    await restarted?.stop();
    await cp?.stop();
  });

  it('plans exec sleep while any kubelet is older than 1.30, at once, and the sleep action again after', () =>
    withLogs(async () => {
      const preStopOf = async () => {
        const pod = await dryRun(OPTED_IN);
        return JSON.stringify(pod.spec?.containers[0]?.lifecycle?.preStop);
      };
      const sleepAction = JSON.stringify({ sleep: { seconds: 20 } });
      const execSleep = JSON.stringify({ exec: { command: ['/bin/sh', '-c', 'sleep 20'] } });
      assert.equal(await preStopOf(), sleepAction);
      // A 1.29 kubelet returns from a sleep action at once.
      await registerNode(plane(), 'node-old', 'v1.29.15');
      await waitFor('exec sleep once the 1.29 node is seen', 10_000, async () => {
        return (await preStopOf()) === execSleep;
      });
      const gauge =
        /^prestop_injector_cluster_versions_info\{apiserver="([\d.]+)",oldest_kubelet="([\w.]+)"\} 1$/m;
      assert.deepEqual((await metrics()).match(gauge)?.slice(1), [plane().minorVersion, '1.29']);
      assert.match(await metrics(), /^prestop_injector_sleep_action_enabled 0$/m);
      await deleteNode(plane(), 'node-old');
      await waitFor('the sleep action once the old node is gone', 10_000, async () => {
        return (await preStopOf()) === sleepAction;
      });
      assert.match(await metrics(), /^prestop_injector_sleep_action_enabled 1$/m);
    }));

  it('runs on least privilege and reads the server version with it', () =>
    withLogs(async () => {
      const asWebhook = new KubeConfig();
      asWebhook.loadFromFile(identity.kubeconfigPath);
      await assert.rejects(
        asWebhook.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: OPTED_IN }),
        (error: { code?: number }) => error.code === 403,
        'the identity cannot read pods',
      );
      const version = await logged('API server version', () => true, 1);
      assert.equal(version?.['version'], plane().version, 'version read from /version');
      const serving = logLines('prestop-injector serving')[0];
      assert.equal(serving?.['kubeVersion'], plane().minorVersion);
      // At start the nodes are not listed yet: no sleep action until they are.
      assert.equal(serving?.['oldestKubelet'], 'unknown');
      assert.equal(serving?.['sleepAction'], false);
      const oldest = await logged('oldest kubelet', () => true, 1);
      assert.equal(oldest?.['oldestKubelet'], plane().minorVersion, 'read from the nodes');
      assert.match(await metrics(), /^prestop_injector_sleep_action_enabled 1$/m);
      const synced = logLines('namespace cache synced')[0];
      assert.equal(synced?.['first'], true);
      const requests = [...requestsBy(audit, WEBHOOK_USER).values()];
      assert.ok(
        requests.some((e) => e.requestURI === '/version' && e.responseStatus?.code === 200),
        `GET /version as the webhook:\n${describeRequests(requests)}`,
      );
      assert.ok(
        requests.some((e) => e.verb === 'list' && e.responseStatus?.code === 200),
        'list namespaces allowed',
      );
      assert.ok(
        requests.some((e) => e.verb === 'watch' && e.responseStatus?.code === 200),
        'watch namespaces allowed',
      );
    }));

  it("an annotated namespace's new pods are injected, with its settings", () =>
    withLogs(async () => {
      const pod = await createPod(plane(), OPTED_IN, simplePod(`ns-default-${suffix()}`));
      assert.ok(isInjected(pod), 'status annotation');
      assertSleepAction(pod, 20, "the namespace's delay");
      assert.equal(pod.spec?.terminationGracePeriodSeconds, 50, '30 + 20');
    }));

  it("an unannotated namespace's pods are untouched", () =>
    withLogs(async () => {
      assertUntouched(await createPod(plane(), PLAIN, simplePod(`plain-${suffix()}`)), 'plain');
      // The pod's own opt-in still counts there.
      const optedIn = await createPod(
        plane(),
        PLAIN,
        simplePod(`plain-opt-in-${suffix()}`, { annotations: { [INJECT]: 'enabled' } }),
      );
      assertSleepAction(optedIn, 10, 'server default delay');
    }));

  it("a pod's annotations override its namespace's: disabled, delay-seconds, mode", () =>
    withLogs(async () => {
      const create = (annotations: Record<string, string>) =>
        createPod(plane(), OPTED_IN, simplePod(`override-${suffix()}`, { annotations }));

      assertUntouched(await create({ [INJECT]: 'disabled' }), 'inject disabled');

      const delayed = await create({ [DELAY]: '25' });
      assertSleepAction(delayed, 25);
      assert.equal(delayed.spec?.terminationGracePeriodSeconds, 55);

      const drained = await create({ [MODE]: 'drain' });
      const command = appPreStop(drained)?.exec?.command;
      assert.equal(command?.[0], '/bin/sh', `drain is an exec hook: ${JSON.stringify(command)}`);
      assert.match(command?.[2] ?? '', /^sleep 20\n/, "drain waits the namespace's delay first");
      assert.equal(JSON.parse(drained.metadata!.annotations![STATUS]!).mode, 'drain');
    }));

  it('a namespace annotation change reaches admissions within seconds', () =>
    withLogs(async () => {
      assertUntouched(await dryRun(FLIP), 'before the change');
      let since = Date.now();
      await setAnnotations(FLIP, { [INJECT]: 'enabled' });
      const onMs = await untilAdmissions('opt-in to reach admissions', FLIP, isInjected, since);
      since = Date.now();
      await setAnnotations(FLIP, { [INJECT]: null });
      const offMs = await untilAdmissions(
        'opt-out to reach admissions',
        FLIP,
        (pod) => !isInjected(pod),
        since,
      );
      console.log(`namespace annotation to admission: on ${onMs} ms, off ${offMs} ms`);
      assert.ok(onMs < PROPAGATION_LIMIT_MS, `opt-in took ${onMs} ms`);
      assert.ok(offMs < PROPAGATION_LIMIT_MS, `opt-out took ${offMs} ms`);
    }));

  it('a namespace created a moment before its first pod gets the right decision', () =>
    withLogs(async () => {
      const run = suffix();
      const names = Array.from({ length: 10 }, (_, i) => `e2e-fresh-${run}-${i}`);
      const optedIn = (i: number) => i % 2 === 0;
      const pods = await Promise.all(
        names.map(async (name, i) => {
          await createNamespace(
            plane(),
            name,
            optedIn(i) ? { [INJECT]: 'enabled', [DELAY]: '7' } : undefined,
          );
          return createPod(plane(), name, simplePod('first'));
        }),
      );
      pods.forEach((pod, i) => {
        if (optedIn(i)) assertSleepAction(pod, 7, names[i]);
        else assertUntouched(pod, names[i]!);
      });
      // Whichever came first, the watch event or the admission, at most one read each.
      const reads = [...requestsBy(audit, WEBHOOK_USER).values()].filter(
        (e) => isPerNamespaceRead(e) && names.includes(e.objectRef?.name ?? ''),
      );
      const perNamespace = new Map<string, number>();
      for (const read of reads) {
        const name = read.objectRef!.name!;
        perNamespace.set(name, (perNamespace.get(name) ?? 0) + 1);
      }
      console.log(`fresh namespaces read directly: ${perNamespace.size} of ${names.length}`);
      for (const [name, count] of perNamespace) assert.equal(count, 1, `${name} read once`);
    }));

  it('excluded namespaces are untouched even when annotated, by selector and in code', () =>
    withLogs(async () => {
      for (const namespace of EXCLUDED) await setAnnotations(namespace, { [INJECT]: 'enabled' });
      // The selector-free configuration takes effect asynchronously: until the
      // webhook logs an admission from kube-system, it has not.
      await waitFor('the selector-free webhook to be called', 30_000, async () => {
        await createPod(
          plane(),
          'kube-system',
          simplePod(`bypass-probe-${suffix()}`, { labels: { [BYPASS_LABEL]: 'true' } }),
          { dryRun: true },
        );
        return logLines('admission').some((line) => line['namespace'] === 'kube-system');
      });
      for (const namespace of EXCLUDED) {
        const bySelector = await createPod(plane(), namespace, simplePod(`sel-${suffix()}`));
        assertUntouched(bySelector, `${namespace}, behind the namespaceSelector`);
        const name = `code-${suffix()}`;
        const inCode = await createPod(
          plane(),
          namespace,
          simplePod(name, { labels: { [BYPASS_LABEL]: 'true' } }),
        );
        assertUntouched(inCode, `${namespace}, reaching the webhook`);
        const seen = await logged('admission', (line) => line['pod'] === name, 1);
        assert.ok(seen, `the webhook saw ${namespace}/${name}`);
        assert.equal(seen['outcome'], 'skipped');
        assert.equal(seen['reason'], `namespace ${namespace} is excluded`);
      }
    }));

  it('makes no API request per admission: 200 pod creations', () =>
    withLogs(async () => {
      const count = 200;
      const concurrency = 10;
      const before = new Set(requestsBy(audit, WEBHOOK_USER).keys());
      const ownBefore = await ownRequestCounts();
      const started = Date.now();
      const pods: V1Pod[] = [];
      let next = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < count) {
            const i = next++;
            pods.push(await createPod(plane(), BURST, simplePod(`burst-${i}`)));
          }
        }),
      );
      const seconds = (Date.now() - started) / 1000;
      const during = [...requestsBy(audit, WEBHOOK_USER).values()].filter(
        (e) => !before.has(e.auditID),
      );
      await logged('admission', (line) => line['namespace'] === BURST, count);
      const admissions = logLines('admission').filter((line) => line['namespace'] === BURST);
      console.log(
        `${count} pods in ${seconds.toFixed(1)} s; webhook admissions ${admissions.length}; ` +
          `webhook API requests meanwhile: ${during.length}\n${describeRequests(during)}`,
      );
      assert.equal(pods.length, count);
      assert.equal(pods.filter(isInjected).length, count, 'every pod injected');
      assert.equal(admissions.length, count, 'every creation went through the webhook');
      assert.deepEqual(
        during.filter(isPerNamespaceRead),
        [],
        'no namespace read on the admission path',
      );
      // A watch the server ended may be renewed meanwhile; that is not per admission.
      assert.ok(
        during.every((e) => e.verb === 'watch' || e.verb === 'list'),
        `only the informer's own requests:\n${describeRequests(during)}`,
      );
      assert.ok(during.length <= 2, `${during.length} requests during the burst`);

      // Its own counters (what /metrics publishes) agree with the server's record.
      const ownAfter = await ownRequestCounts();
      assert.equal(ownAfter.read, ownBefore.read, 'no read counted by the webhook either');
      let audited = countViewRequests(audit, WEBHOOK_USER);
      await waitFor('own counts to match the audit log', 5_000, async () => {
        audited = countViewRequests(audit, WEBHOOK_USER);
        return JSON.stringify(await ownRequestCounts()) === JSON.stringify(audited);
      }).catch(() => {});
      assert.deepEqual(await ownRequestCounts(), audited, 'own counts vs the audit log');
    }));

  it('recovers its watch when the API server restarts, and stays ready', () =>
    withLogs(async () => {
      const syncsBefore = logLines('namespace cache synced').length;
      const notReady: string[] = [];
      let polling = true;
      const readiness = (async () => {
        while (polling) {
          const res = await fetch(`http://127.0.0.1:${webhook!.healthPort}/readyz`).catch(
            () => null,
          );
          await res?.text();
          if (res?.status !== 200) notReady.push(String(res?.status ?? 'no answer'));
          await sleep(200);
        }
      })();

      const seenBefore = new Set(requestsBy(audit, WEBHOOK_USER).keys());
      const downAt = Date.now();
      restarted = await restartApiserver(plane());
      const upAt = Date.now();
      await waitFor('the webhook to list namespaces again', 60_000, async () => {
        return logLines('namespace cache synced').length > syncsBefore;
      });
      const resync = logLines('namespace cache synced')[syncsBefore]!;
      polling = false;
      await readiness;
      const relistMs = (resync['time'] as number) - upAt;
      console.log(
        `API server down and back in ${upAt - downAt} ms; namespace cache relisted ` +
          `${relistMs} ms from its /readyz turning 200 (negative: before)`,
      );
      assert.ok(logLines('namespace watch stopped; restarting').length > 0, 'the error was seen');
      // The published last sync is the relist's, or a later event's.
      const lastSync = /^prestop_injector_namespace_cache_last_sync_timestamp_seconds (\S+)$/m.exec(
        await metrics(),
      );
      assert.ok(
        lastSync && Number(lastSync[1]) * 1000 >= (resync['time'] as number) - 500,
        `last sync at ${lastSync?.[1]} s, relisted at ${resync['time']} ms`,
      );
      assert.deepEqual(notReady, [], 'readiness stayed on: the cache outlived the outage');

      // The cached namespace changes after recovery: only a live watch can tell.
      const since = Date.now();
      await setAnnotations(FLIP, { [INJECT]: 'enabled' });
      const ms = await untilAdmissions('a change after the restart', FLIP, isInjected, since);
      console.log(`namespace annotation to admission after the restart: ${ms} ms`);
      assert.ok(ms < PROPAGATION_LIMIT_MS, `took ${ms} ms`);
      const afterRestart = [...requestsBy(audit, WEBHOOK_USER).values()].filter(
        (e) => !seenBefore.has(e.auditID),
      );
      assert.ok(
        afterRestart.some((e) => e.verb === 'list' && e.responseStatus?.code === 200) &&
          afterRestart.some((e) => e.verb === 'watch' && e.responseStatus?.code === 200),
        `a new list and watch:\n${describeRequests(afterRestart)}`,
      );
    }));
});
