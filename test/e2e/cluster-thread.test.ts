// The cluster view in its worker thread (src/cluster-thread.ts), against a
// real API server: the main thread's copy follows the cluster, reads a
// namespace it lacks through the worker, outlives a worker that dies (a new
// one takes over, counters carried), and its counts match the audit log.

import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { startClusterThread, type ThreadedClusterView } from '../../src/cluster-thread.ts';
import { buildConfig, readRawOptions } from '../../src/config.ts';
import { NO_CLUSTER } from '../../src/serve.ts';
import {
  countNamespaceRequests,
  createNamespace,
  createServiceAccountIdentity,
  prepareAuditLog,
  startControlPlane,
  waitFor,
  type AuditLog,
  type ControlPlane,
  type ServiceAccountIdentity,
} from '../support/control-plane.ts';

const THREAD_NAMESPACE = 'e2e-thread';
const INJECT = 'prestop-injector.io/inject';
const DELAY = 'prestop-injector.io/delay-seconds';

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

describe('cluster view in its own thread, against a real API server', () => {
  let cp: ControlPlane | undefined;
  let audit: AuditLog;
  let who: ServiceAccountIdentity;
  let view: ThreadedClusterView | undefined;
  const log = capturedLogger();
  const plane = () => cp!;
  const subject = () => view!;

  const setDelay = async (name: string, value: string) => {
    const namespace = await plane().core.readNamespace({ name });
    namespace.metadata = {
      ...namespace.metadata,
      annotations: { ...namespace.metadata?.annotations, [DELAY]: value },
    };
    await plane().core.replaceNamespace({ name, body: namespace });
  };
  const delayIn = async (name: string) => (await subject().namespaceAnnotations(name))?.[DELAY];

  before(async () => {
    audit = await prepareAuditLog({ groups: [`system:serviceaccounts:${THREAD_NAMESPACE}`] });
    cp = await startControlPlane({ extraApiserverArgs: audit.args });
    who = await createServiceAccountIdentity(plane(), {
      namespace: THREAD_NAMESPACE,
      name: 'thread-view',
      rules: [{ apiGroups: [''], resources: ['namespaces'], verbs: ['get', 'list', 'watch'] }],
    });
    await createNamespace(plane(), 'e2e-thread-shop', { [INJECT]: 'enabled', [DELAY]: '7' });
    const config = buildConfig(readRawOptions(['--kubeconfig', who.kubeconfigPath], {}));
    view = (await startClusterThread(config, log.logger)) as ThreadedClusterView;
  });

  after(async () => {
    await view?.stop();
    await cp?.stop();
  });

  it('follows the cluster from the worker: version, first list, then changes', async () => {
    assert.match(subject().serverVersion() ?? '', /^v1\.\d+/);
    await waitFor('the first list', 10_000, async () => subject().readiness().ready);
    assert.equal(await delayIn('e2e-thread-shop'), '7');
    await setDelay('e2e-thread-shop', '8');
    await waitFor('the change to reach the main thread', 5_000, async () => {
      return (await delayIn('e2e-thread-shop')) === '8';
    });
    // The worker's log lines reach the main logger, whole.
    assert.ok(log.lines.some((line) => line['msg'] === 'namespace cache synced'));
  });

  it('reads a namespace it lacks once, through the worker', async () => {
    const before = subject().stats().requests.read;
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => subject().namespaceAnnotations('e2e-thread-none')),
    );
    assert.deepEqual(answers, Array(10).fill(undefined), 'no such namespace: server defaults');
    assert.equal(subject().stats().requests.read, before + 1, 'ten admissions, one read');
  });

  it('answers from its copy while a dead worker is replaced, and counts never go back', async () => {
    const first = subject().worker();
    assert.ok(first !== undefined);
    const counted = subject().stats();
    await first.terminate();
    // Meanwhile: the copy, and still ready (a stale cache beats no webhook).
    assert.equal(await delayIn('e2e-thread-shop'), '8');
    assert.equal(subject().readiness().ready, true);
    await waitFor('a new worker', 10_000, async () => {
      const now = subject().worker();
      return now !== undefined && now !== first;
    });
    assert.equal(subject().stats().restarts, counted.restarts + 1);
    for (const purpose of ['list', 'watch', 'read', 'version'] as const) {
      assert.ok(subject().stats().requests[purpose] >= counted.requests[purpose], purpose);
    }
    // The new worker lists and watches: a change made now arrives.
    await setDelay('e2e-thread-shop', '9');
    await waitFor('a change after the restart', 10_000, async () => {
      return (await delayIn('e2e-thread-shop')) === '9';
    });
    assert.ok(log.lines.some((line) => line['msg'] === 'cluster thread ended; starting it again'));
  });

  it("counts, over both workers, exactly the requests the API server's audit log records", async () => {
    let audited = countNamespaceRequests(audit, who.username);
    await waitFor('the counts to agree', 5_000, async () => {
      audited = countNamespaceRequests(audit, who.username);
      return JSON.stringify(audited) === JSON.stringify(subject().stats().requests);
    }).catch(() => {});
    assert.deepEqual(subject().stats().requests, audited);
  });

  it('stops its worker for good', async () => {
    const worker = subject().worker();
    assert.ok(worker !== undefined);
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    await subject().stop();
    await exited;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(subject().worker(), undefined, 'not started again');
  });

  it('fails to start on a kubeconfig that does not exist; starts no worker with no cluster', async () => {
    const missing = buildConfig(readRawOptions(['--kubeconfig', '/nonexistent/kubeconfig'], {}));
    await assert.rejects(startClusterThread(missing, log.logger), /does not exist/);
    const off = buildConfig(readRawOptions(['--cluster', 'off'], {}));
    assert.equal(await startClusterThread(off, log.logger), NO_CLUSTER);
  });
});
