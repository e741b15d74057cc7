// The cluster view (src/cluster/informer.ts) in process, against a real API server,
// for what the webhook process cannot be made to show on demand: a direct
// read of an unknown namespace, a read that hangs, a list that is refused,
// a watch whose connection goes silent. Each view has its own
// ServiceAccount, and the API server's audit log checks its request counts.

import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { KubeConfig, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import pino from 'pino';
import { createClusterView, type LiveClusterView } from '../../src/cluster/informer.ts';
import { DEFAULT_TIMINGS, type ClusterTimings } from '../../src/cluster/watched-list.ts';
import {
  createNamespace,
  createServiceAccountIdentity,
  type ServiceAccountIdentity,
} from '../support/cluster/api.ts';
import { startControlPlane, type ControlPlane } from '../support/cluster/apiserver.ts';
import { countViewRequests, prepareAuditLog, type AuditLog } from '../support/cluster/audit.ts';
import { waitFor } from '../support/cluster/processes.ts';

const VIEWS_NAMESPACE = 'e2e-views';
const INJECT = 'prestop-injector.io/inject';
const DELAY = 'prestop-injector.io/delay-seconds';
const NAMESPACE_RULE = { apiGroups: [''], resources: ['namespaces'] };
/** As the chart grants: the view also keeps each node's kubelet version. */
const NODE_RULE = { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'] };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A logger whose JSON lines the test can read. */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) {
        if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

function kubeConfigFor(cp: ControlPlane, server: string, token: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'e2e', server, caData: Buffer.from(cp.caPem).toString('base64') }],
    users: [{ name: 'view', token }],
    contexts: [{ name: 'e2e', cluster: 'e2e', user: 'view' }],
    currentContext: 'e2e',
  });
  return kc;
}

/** Accepts connections and never answers: a server that hangs. */
async function startSilentServer(): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/**
 * A TCP relay to the API server. `freeze()` stops the traffic of every open
 * connection while keeping it open (a dead NAT entry, a vanished node); new
 * connections still pass.
 */
async function startFreezableRelay(
  target: URL,
): Promise<{ port: number; freeze(): number; close(): void }> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    freeze() {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
      const frozen = pairs.size;
      pairs.clear();
      return frozen;
    },
    close() {
      server.close();
    },
  };
}

describe('cluster view against a real API server', () => {
  let cp: ControlPlane | undefined;
  let audit: AuditLog;
  const views: LiveClusterView[] = [];
  const cleanups: (() => void)[] = [];
  const plane = () => cp!;

  const identity = (name: string, verbs: string[]): Promise<ServiceAccountIdentity> =>
    createServiceAccountIdentity(plane(), {
      namespace: VIEWS_NAMESPACE,
      name,
      rules: [{ ...NAMESPACE_RULE, verbs }, NODE_RULE],
    });

  const view = (kc: KubeConfig, timings: Partial<ClusterTimings> = {}) => {
    const log = capturedLogger();
    const created = createClusterView(kc, log.logger, { ...DEFAULT_TIMINGS, ...timings });
    views.push(created);
    return { view: created, lines: log.lines };
  };

  /** The counters are what metrics publish: they must agree with the server's record. */
  const assertCountsMatchAudit = async (subject: LiveClusterView, username: string) => {
    let audited = countViewRequests(audit, username);
    await waitFor('the audit log to catch up', 5_000, async () => {
      audited = countViewRequests(audit, username);
      return JSON.stringify(audited) === JSON.stringify(subject.stats().requests);
    }).catch(() => {});
    assert.deepEqual(subject.stats().requests, audited, 'own counts vs the audit log');
  };

  before(async () => {
    audit = await prepareAuditLog({ groups: [`system:serviceaccounts:${VIEWS_NAMESPACE}`] });
    cp = await startControlPlane({ extraApiserverArgs: audit.args });
  });

  after(async () => {
    for (const v of views) await v.stop();
    for (const cleanup of cleanups) cleanup();
    await cp?.stop();
  });

  it('reads a namespace missing from the cache once, directly, and keeps only its own keys', async () => {
    const who = await identity('view-direct', ['get', 'list', 'watch']);
    // Never started: its cache is empty, as for a namespace the watch has not delivered.
    const { view: unstarted, lines } = view(kubeConfigFor(plane(), plane().server, who.token));
    await createNamespace(plane(), 'e2e-direct', {
      [INJECT]: 'enabled',
      [DELAY]: '12',
      'example.com/unrelated': 'x'.repeat(1000),
    });
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => unstarted.namespaceAnnotations('e2e-direct')),
    );
    for (const answer of answers) assert.deepEqual(answer, { [INJECT]: 'enabled', [DELAY]: '12' });
    assert.equal(unstarted.stats().requests.read, 1, '20 concurrent admissions, one read');
    assert.deepEqual(await unstarted.namespaceAnnotations('e2e-direct'), answers[0]);
    assert.equal(unstarted.stats().requests.read, 1, 'then served from the cache');
    assert.equal(lines.filter((l) => l['namespace'] === 'e2e-direct').length, 1, 'logged once');
    assert.equal(unstarted.readiness().ready, false, 'never listed: not ready');

    // Unreadable: the admission goes on with server defaults, and the next
    // ones do not hammer the API server.
    assert.equal(await unstarted.namespaceAnnotations('e2e-missing'), undefined);
    assert.equal(await unstarted.namespaceAnnotations('e2e-missing'), undefined);
    assert.equal(unstarted.stats().requests.read, 2, 'a failed read is not retried at once');
    assert.ok(lines.some((l) => l['namespace'] === 'e2e-missing' && l['level'] === 40));
    await assertCountsMatchAudit(unstarted, who.username);
  });

  it('gives up a read that hangs within its timeout', async () => {
    const silent = await startSilentServer();
    cleanups.push(() => silent.close());
    const { view: hanging } = view(
      kubeConfigFor(plane(), `https://127.0.0.1:${silent.port}`, 'no-token'),
    );
    const started = Date.now();
    assert.equal(await hanging.namespaceAnnotations('anything'), undefined);
    const waited = Date.now() - started;
    console.log(`hanging read answered after ${waited} ms`);
    assert.ok(waited >= DEFAULT_TIMINGS.directReadTimeoutMs - 100, `waited ${waited} ms`);
    assert.ok(waited < DEFAULT_TIMINGS.directReadTimeoutMs + 2_000, `waited ${waited} ms`);
  });

  it('turns ready only after its first full list, retrying with backoff meanwhile', async () => {
    const who = await identity('view-refused', ['get']);
    const { view: refused, lines } = view(kubeConfigFor(plane(), plane().server, who.token), {
      initialBackoffMs: 200,
      maxBackoffMs: 1_000,
    });
    await refused.startWatching();
    await waitFor(
      'three refused lists',
      15_000,
      async () => refused.stats().namespaces.restarts >= 3,
    );
    assert.equal(refused.readiness().ready, false);
    assert.equal(refused.stats().namespaces.synced, false);
    const delays = lines
      .filter((l) => l['msg'] === 'namespace watch stopped; restarting')
      .map((l) => l['retryInMs'] as number);
    console.log(`restart delays while the list was refused: ${delays.join(', ')} ms`);
    assert.ok(
      delays.every((ms) => ms >= 160 && ms <= 1_200),
      'jittered, capped',
    );
    assert.ok(delays[2]! > delays[0]!, 'growing');
    assert.match(String(lines[lines.length - 1]?.['reason']), /^HTTP 403/);

    const rbac = plane().kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    const role = await rbac.readClusterRole({ name: 'view-refused' });
    role.rules = [{ ...NAMESPACE_RULE, verbs: ['get', 'list', 'watch'] }, NODE_RULE];
    await rbac.replaceClusterRole({ name: 'view-refused', body: role });
    await waitFor('readiness once the list is allowed', 15_000, async () => {
      return refused.readiness().ready;
    });
    assert.ok(refused.stats().namespaces.lastActivityMs > 0);
    assert.ok(await refused.namespaceAnnotations('kube-system'), 'listed');
    assert.equal(refused.stats().requests.read, 0, 'from the list, not a read');
    await assertCountsMatchAudit(refused, who.username);
  });

  it('replaces a watch whose connection went silent, and says how long it was', async () => {
    const who = await identity('view-frozen', ['get', 'list', 'watch']);
    const relay = await startFreezableRelay(new URL(plane().server));
    cleanups.push(() => relay.close());
    const staleAfterMs = 6_000;
    const { view: frozen, lines } = view(
      kubeConfigFor(plane(), `https://127.0.0.1:${relay.port}`, who.token),
      { staleAfterMs, staleCheckMs: 250 },
    );
    await createNamespace(plane(), 'e2e-frozen');
    await frozen.startWatching();
    await waitFor('the first list', 10_000, async () => frozen.readiness().ready);
    assert.deepEqual(await frozen.namespaceAnnotations('e2e-frozen'), {});
    await sleep(300); // the watch request is on its way
    assert.ok(relay.freeze() >= 1, 'the watch connection frozen');

    await plane().core.patchNamespace({
      name: 'e2e-frozen',
      body: [{ op: 'add', path: '/metadata/annotations', value: { [INJECT]: 'enabled' } }],
    });
    await sleep(2_000);
    // What client-node's informer alone would show forever: no error, no news.
    assert.deepEqual(await frozen.namespaceAnnotations('e2e-frozen'), {}, 'stale meanwhile');
    assert.equal(frozen.stats().namespaces.restarts, 0);
    const silentFor = Date.now() - frozen.stats().namespaces.lastActivityMs;
    assert.ok(silentFor >= 2_000, `last activity ${silentFor} ms ago`);

    await waitFor('the silent watch to be replaced', staleAfterMs + 10_000, async () => {
      const annotations = await frozen.namespaceAnnotations('e2e-frozen');
      return annotations?.[INJECT] === 'enabled';
    });
    const silence = lines.find((l) => l['msg'] === 'namespace watch silent; restarting');
    assert.ok(silence, 'the silence was noticed');
    assert.ok((silence['silentForMs'] as number) >= staleAfterMs);
    assert.equal(frozen.stats().namespaces.restarts, 1);
    assert.ok(Date.now() - frozen.stats().namespaces.lastActivityMs < 2_000, 'fresh again');
    assert.equal(frozen.readiness().ready, true);
    await assertCountsMatchAudit(frozen, who.username);
  });
});
