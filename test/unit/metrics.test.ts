import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { buildConfig, readRawOptions } from '../../src/cli/config.ts';
import { Annotation } from '../../src/core/annotations.ts';
import { capabilitiesFor, parseKubeVersion } from '../../src/core/capabilities.ts';
import type { PodLike } from '../../src/core/types.ts';
import { createMetrics, type ServerMetrics } from '../../src/webhook/metrics.ts';
import type { ClusterView } from '../../src/cluster/view.ts';
import { startServer, type RunningServer } from '../../src/cli/serve.ts';
import { container, pod } from '../support/pods.ts';
import { httpsPost, review } from '../support/reviews.ts';
import { makeDevCerts, type DevCerts } from '../support/serve.ts';

const LAST_EVENT_MS = Date.UTC(2030, 0, 1);

let server: RunningServer;
let metrics: ServerMetrics;
let certs: DevCerts;

/**
 * A cluster view that fails for two namespaces, the ways to an 'error'
 * admission: a rejected promise, and a throw before any promise exists.
 */
const cluster: ClusterView = {
  namespaceAnnotations: (namespace) => {
    if (namespace === 'broken') return Promise.reject(new Error('namespace cache exploded'));
    if (namespace === 'broken-now') throw new Error('namespace cache exploded at once');
    return undefined;
  },
  versions: () => ({ server: parseKubeVersion('1.33'), oldestKubelet: parseKubeVersion('1.29') }),
  readiness: () => ({ ready: true }),
  stats: () => ({
    requests: { list: 2, watch: 3, read: 0, version: 1, metrics: 0 },
    namespaces: { lastActivityMs: LAST_EVENT_MS, synced: true, restarts: 0 },
    nodes: { lastActivityMs: 0, synced: false, restarts: 2 },
  }),
  stop: async () => {},
};

before(async () => {
  certs = makeDevCerts();
  const config = buildConfig(
    readRawOptions(
      ['--port', '0', '--health-port', '0', '--host', '127.0.0.1', '--kube-version', '1.33'],
      { PRESTOP_INJECT_DEFAULT: 'enabled' },
    ),
  );
  config.tlsCertPath = certs.certPath;
  config.tlsKeyPath = certs.keyPath;
  metrics = createMetrics({
    version: '9.8.7',
    cluster,
    // Read at scrape time, when the server below exists.
    certificateNotAfterMs: () => server?.certificates.current.notAfterMs,
    capabilities: () => server?.capabilities(),
  });
  server = await startServer(config, pino({ level: 'silent' }), {
    cluster,
    observer: metrics,
    metrics: metrics.render,
  });
});

after(async () => {
  await server.close();
});

type Samples = Map<string, number>;

/** `name{a="x",b="y"} value` lines, keyed by name and labels as printed. */
function parseExposition(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

async function scrape(): Promise<{ text: string; samples: Samples; contentType: string }> {
  const res = await fetch(`http://127.0.0.1:${server.healthPort}/metrics`);
  assert.equal(res.status, 200);
  const text = await res.text();
  return { text, samples: parseExposition(text), contentType: res.headers.get('content-type')! };
}

function named(name: string, namespace: string, annotations?: Record<string, string>): PodLike {
  const object = pod([container('web')], {}, annotations);
  object.metadata!.name = name;
  object.metadata!.namespace = namespace;
  return object;
}

async function admit(object: PodLike, overrides: Record<string, unknown> = {}) {
  const namespace = object.metadata?.namespace;
  const reply = await httpsPost(
    server.webhookPort,
    '/mutate',
    JSON.stringify(review(object, { namespace, ...overrides })),
    certs.caPem,
  );
  assert.equal(reply.status, 200);
  return reply.json();
}

const admissions = (result: string, mode: string) =>
  `prestop_injector_admissions_total{result="${result}",mode="${mode}"}`;

describe('GET /metrics', () => {
  it('counts admissions by result and mode, times each one, and counts bad annotations by key', async () => {
    const first = await scrape();
    assert.match(first.contentType, /^text\/plain; version=0\.0\.4/);
    const value = (samples: Samples, key: string) => samples.get(key) ?? 0;
    for (const code of ['400', '413', '415']) {
      const key = `prestop_injector_malformed_requests_total{code="${code}"}`;
      assert.equal(first.samples.get(key), 0, `${key} exists at 0 before any bad request`);
    }

    const secretNames = [
      'checkout-secret-name-a1',
      'checkout-secret-name-a2',
      'checkout-secret-name-a3',
    ];
    for (const name of secretNames) await admit(named(name, 'shop-secret-ns'));
    // A container with its own preStop: nothing to write.
    const kept = named('kept-secret-name', 'shop-secret-ns');
    kept.spec.containers[0]!.lifecycle = { preStop: { sleep: { seconds: 3 } } };
    await admit(kept);
    await admit(kept);
    await admit(named('optout-secret-name', 'shop-secret-ns', { [Annotation.inject]: 'disabled' }));
    await admit(named('delete-secret-name', 'shop-secret-ns'), { operation: 'DELETE' });
    for (const namespace of ['broken', 'broken-now']) {
      const failed = await admit(named('broken-secret-name', namespace));
      assert.equal(failed.response.allowed, true, `${namespace}: fails open`);
      assert.equal(failed.response.patch, undefined);
    }
    const warned = await admit(
      named('warned-secret-name', 'shop-secret-ns', { [Annotation.delaySeconds]: '-5' }),
    );
    assert.ok(warned.response.patch !== undefined, 'the pod with a bad value is still mutated');
    // Not admissions: refused before they are decoded, and counted as such.
    const malformed = await httpsPost(server.webhookPort, '/mutate', '{"kind": 1}', certs.caPem);
    assert.equal(malformed.status, 400);
    const unparsable = await httpsPost(server.webhookPort, '/mutate', '{"kind": ', certs.caPem);
    assert.equal(unparsable.status, 400);

    const second = await scrape();
    const moved = (key: string) => value(second.samples, key) - value(first.samples, key);
    assert.equal(moved(admissions('mutated', 'sleep')), 4);
    assert.equal(moved(admissions('unchanged', 'sleep')), 2);
    assert.equal(moved(admissions('skipped', 'sleep')), 1, 'opted out: settings resolved');
    assert.equal(moved(admissions('skipped', 'none')), 1, 'DELETE: skipped before settings');
    assert.equal(moved(admissions('error', 'none')), 2);
    assert.equal(moved('prestop_injector_malformed_requests_total{code="400"}'), 2);
    assert.equal(moved('prestop_injector_admission_duration_seconds_count'), 10);
    assert.ok(moved('prestop_injector_admission_duration_seconds_sum') > 0);
    assert.equal(
      moved('prestop_injector_admission_duration_seconds_bucket{le="+Inf"}'),
      10,
      'the histogram holds every admission',
    );
    const buckets = [...second.samples]
      .filter(([key]) => key.startsWith('prestop_injector_admission_duration_seconds_bucket'))
      .map(([, count]) => count);
    assert.ok(buckets.length > 2, 'buckets exposed');
    assert.ok(
      buckets.every((count, i) => i === 0 || count >= buckets[i - 1]!),
      'buckets are cumulative',
    );
    assert.equal(
      moved(
        `prestop_injector_policy_warnings_total{annotation="${Annotation.delaySeconds}",source="pod"}`,
      ),
      1,
    );

    for (const name of [...secretNames, 'kept-secret-name', 'broken-secret-name', 'secret-ns']) {
      assert.ok(!second.text.includes(name), `${name} appears in /metrics`);
    }
  });

  it('has every admission series from the start, and the build', async () => {
    const fresh = createMetrics({ version: '1.2.3' });
    const { body } = await fresh.render();
    const samples = parseExposition(body);
    for (const result of ['mutated', 'unchanged', 'skipped', 'error']) {
      for (const mode of ['sleep', 'drain', 'none']) {
        assert.equal(samples.get(admissions(result, mode)), 0, `${result}/${mode}`);
      }
    }
    assert.equal(
      samples.get(
        `prestop_injector_build_info{version="1.2.3",nodejs_version="${process.version}"}`,
      ),
      1,
    );
    // Node's and the process's own, unprefixed, as standard dashboards expect.
    assert.ok(samples.has('process_cpu_seconds_total'));
    assert.ok([...samples.keys()].some((key) => key.startsWith('nodejs_heap_size_total_bytes')));
    assert.ok(![...samples.keys()].some((key) => key.startsWith('prestop_injector_process_')));
  });

  it("exposes the serving certificate's expiry and the namespace cache's last sync and API requests", async () => {
    const { samples } = await scrape();
    const notAfter = Date.parse(new X509Certificate(readFileSync(certs.certPath)).validTo) / 1000;
    assert.ok(notAfter > Date.now() / 1000);
    assert.equal(
      samples.get('prestop_injector_serving_certificate_expiry_timestamp_seconds'),
      notAfter,
    );
    assert.equal(
      samples.get('prestop_injector_namespace_cache_last_sync_timestamp_seconds'),
      LAST_EVENT_MS / 1000,
    );
    assert.equal(samples.get('prestop_injector_namespace_cache_synced'), 1);
    assert.equal(samples.get('prestop_injector_node_cache_synced'), 0);
    assert.equal(samples.get('prestop_injector_node_cache_last_sync_timestamp_seconds'), 0);
    assert.equal(samples.get('prestop_injector_apiserver_requests_total{purpose="watch"}'), 3);
    // A second scrape reports the same totals, not twice them.
    const again = (await scrape()).samples;
    assert.equal(again.get('prestop_injector_apiserver_requests_total{purpose="watch"}'), 3);
  });

  it('names the versions planned for and whether the sleep action is in force', async () => {
    const forCluster = createMetrics({
      version: '1.2.3',
      cluster,
      capabilities: () => capabilitiesFor(cluster.versions()),
    });
    const samples = parseExposition((await forCluster.render()).body);
    assert.equal(
      samples.get('prestop_injector_cluster_versions_info{apiserver="1.33",oldest_kubelet="1.29"}'),
      1,
    );
    // A 1.29 kubelet returns from a sleep action at once: exec sleep until it goes.
    assert.equal(samples.get('prestop_injector_sleep_action_enabled'), 0);
    // The server under test plans with --kube-version 1.33 for both.
    const served = (await scrape()).samples;
    assert.equal(
      served.get('prestop_injector_cluster_versions_info{apiserver="1.33",oldest_kubelet="1.33"}'),
      1,
    );
    assert.equal(served.get('prestop_injector_sleep_action_enabled'), 1);
  });

  it('keeps each server in its own registry', async () => {
    const other = createMetrics({ version: '1.2.3' });
    other.admission({ outcome: 'mutated', mode: 'drain', policyWarnings: [] }, 0.001);
    const mine = parseExposition((await metrics.render()).body);
    const theirs = parseExposition((await other.render()).body);
    assert.equal(theirs.get(admissions('mutated', 'drain')), 1);
    assert.equal(mine.get(admissions('mutated', 'drain')), 0);
    // No cluster, no namespace cache to report on; no server, no certificate yet.
    assert.equal(theirs.has('prestop_injector_namespace_cache_synced'), false);
    assert.ok(
      Number.isNaN(theirs.get('prestop_injector_serving_certificate_expiry_timestamp_seconds')),
    );
  });
});
