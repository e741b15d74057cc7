// The reaper's scan against a node stand-in (the real table parser, a
// recorded ipvsadm) and a real address book: which weight-0 real servers
// go, which stay, and what is counted.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import pino from 'pino';
import { AddressBook, type PodFacts } from '../../src/reaper/address-book.ts';
import { createReaper } from '../../src/reaper/agent.ts';
import { decide } from '../../src/reaper/decide.ts';
import { parseIpvsTable, realServerName, type RealServer } from '../../src/reaper/ipvs-table.ts';
import { createReaperMetrics } from '../../src/reaper/metrics.ts';
import type { IpvsNode } from '../../src/reaper/node.ts';

const silent = pino({ level: 'silent' });

function hex(address: string): string {
  return address
    .split('.')
    .map((part) => Number(part).toString(16).padStart(2, '0'))
    .join('')
    .toUpperCase();
}

/** A /proc/net/ip_vs of one Service with these real servers (address, weight). */
function table(servers: [string, number][]): string {
  return [
    'IP Virtual Server version 1.2.1 (size=4096)',
    'Prot LocalAddress:Port Scheduler Flags',
    '  -> RemoteAddress:Port Forward Weight ActiveConn InActConn',
    `TCP  ${hex('10.96.0.10')}:0050 rr `,
    ...servers.map(
      ([address, weight]) =>
        `  -> ${hex(address)}:1F90      Masq    ${weight}      0          12        `,
    ),
    '',
  ].join('\n');
}

/** A node whose table loses each deleted real server, as the kernel's does. */
function fakeNode(servers: [string, number][], failDeletes = false) {
  let current = [...servers];
  const deleted: string[] = [];
  const node: IpvsNode = {
    realServers: async () => parseIpvsTable(table(current)).realServers,
    entriesTo: async () => [],
    async deleteRealServer(server: RealServer) {
      if (failDeletes) throw new Error('ipvsadm: Operation not permitted');
      deleted.push(realServerName(server));
      current = current.filter(([address]) => address !== server.address);
    },
    facts: async () => {
      throw new Error('not used');
    },
  };
  return { node, deleted };
}

const pod = (key: string, address: string, extra: Partial<PodFacts> = {}): PodFacts => ({
  key,
  addresses: [address],
  terminating: false,
  finished: false,
  hostNetwork: false,
  ...extra,
});

/** a: running; b: terminating; c: gone; d: never a pod's. */
function scene(): AddressBook {
  const book = new AddressBook();
  book.upsertPod(pod('web/a', '10.244.1.1'));
  book.upsertPod(pod('web/b', '10.244.1.2', { terminating: true }));
  book.upsertPod(pod('web/c', '10.244.1.3'));
  book.removePod('web/c');
  return book;
}

const SERVERS: [string, number][] = [
  ['10.244.1.1', 0],
  ['10.244.1.2', 0],
  ['10.244.1.3', 0],
  ['10.244.1.4', 0],
  ['10.244.1.5', 1],
];

describe('the reaper scan', () => {
  it('removes only the weight-0 real server whose pod is gone', async () => {
    const { node, deleted } = fakeNode(SERVERS);
    const reaper = createReaper({
      node,
      book: scene(),
      synced: () => true,
      dryRun: false,
      logger: silent,
    });
    const result = await reaper.scan();
    assert.deepEqual(deleted, ['TCP 10.96.0.10:80 -> 10.244.1.3:8080']);
    assert.deepEqual(result, {
      decided: true,
      weightZero: 4,
      stale: 1,
      reaped: ['TCP 10.96.0.10:80 -> 10.244.1.3:8080'],
      failed: [],
    });
    // The kernel's table no longer has it: the next scan finds nothing to do.
    assert.equal((await reaper.scan()).stale, 0);
  });

  it('keeps the terminating pod’s real server until the pod is gone, then removes it', async () => {
    const book = scene();
    const { node, deleted } = fakeNode([['10.244.1.2', 0]]);
    const reaper = createReaper({ node, book, synced: () => true, dryRun: false, logger: silent });
    await reaper.scan();
    assert.deepEqual(deleted, []);
    book.removePod('web/b');
    await reaper.scan();
    assert.deepEqual(deleted, ['TCP 10.96.0.10:80 -> 10.244.1.2:8080']);
  });

  it('decides nothing before both caches have synced', async () => {
    const { node, deleted } = fakeNode(SERVERS);
    const reaper = createReaper({
      node,
      book: scene(),
      synced: () => false,
      dryRun: false,
      logger: silent,
    });
    assert.equal((await reaper.scan()).decided, false);
    assert.deepEqual(deleted, []);
  });

  it('in dry-run mode reports and counts each stale real server once, and removes none', async () => {
    const { node, deleted } = fakeNode(SERVERS);
    const metrics = createReaperMetrics({
      version: 'test',
      cachesSynced: () => ({ pod: true, endpointslice: true }),
    });
    const reaper = createReaper({
      node,
      book: scene(),
      synced: () => true,
      dryRun: true,
      logger: silent,
      metrics,
    });
    await reaper.scan();
    await reaper.scan();
    assert.deepEqual(deleted, []);
    const text = (await metrics.render()).body;
    assert.match(text, /^prestop_injector_ipvs_stale_real_servers_seen_total 1$/m);
    assert.match(text, /^prestop_injector_ipvs_stale_real_servers 1$/m);
    assert.match(text, /^prestop_injector_ipvs_weight_zero_real_servers 4$/m);
    assert.match(text, /^prestop_injector_ipvs_real_servers_reaped_total 0$/m);
    assert.match(text, /^prestop_injector_ipvs_reaper_cache_synced\{cache="pod"\} 1$/m);
  });

  it('counts a failed removal and tries again on the next scan', async () => {
    const { node } = fakeNode(SERVERS, true);
    const metrics = createReaperMetrics({
      version: 'test',
      cachesSynced: () => ({ pod: true, endpointslice: true }),
    });
    const reaper = createReaper({
      node,
      book: scene(),
      synced: () => true,
      dryRun: false,
      logger: silent,
      metrics,
    });
    assert.deepEqual((await reaper.scan()).failed, ['TCP 10.96.0.10:80 -> 10.244.1.3:8080']);
    assert.deepEqual((await reaper.scan()).failed, ['TCP 10.96.0.10:80 -> 10.244.1.3:8080']);
    const text = (await metrics.render()).body;
    assert.match(text, /^prestop_injector_ipvs_reap_errors_total 2$/m);
    assert.match(text, /^prestop_injector_ipvs_stale_real_servers_seen_total 1$/m);
  });

  it('counts real servers reaped', async () => {
    const { node } = fakeNode(SERVERS);
    const metrics = createReaperMetrics({
      version: 'test',
      cachesSynced: () => ({ pod: true, endpointslice: false }),
    });
    await createReaper({
      node,
      book: scene(),
      synced: () => true,
      dryRun: false,
      logger: silent,
      metrics,
    }).scan();
    const text = (await metrics.render()).body;
    assert.match(text, /^prestop_injector_ipvs_real_servers_reaped_total 1$/m);
    assert.match(text, /^prestop_injector_ipvs_reaper_cache_synced\{cache="endpointslice"\} 0$/m);
  });

  it('a scan requested during a scan runs once more after it', async () => {
    const { node } = fakeNode(SERVERS);
    let scans = 0;
    const counting: IpvsNode = {
      ...node,
      realServers: async () => {
        scans++;
        await new Promise((resolve) => setTimeout(resolve, 30));
        return node.realServers();
      },
    };
    const reaper = createReaper({
      node: counting,
      book: scene(),
      synced: () => true,
      dryRun: true,
      logger: silent,
    });
    const first = reaper.scan();
    void reaper.scan();
    void reaper.scan();
    await first;
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(scans, 2);
  });
});

describe('decide (property)', () => {
  const address = fc.integer({ min: 1, max: 6 }).map((n) => `10.244.1.${n}`);
  const podArb = fc.record({
    address,
    terminating: fc.boolean(),
    finished: fc.boolean(),
    removed: fc.boolean(),
  });

  it('never removes a real server with weight, nor one whose address a running or terminating pod holds', () => {
    fc.assert(
      fc.property(
        fc.array(podArb, { maxLength: 8 }),
        fc.array(fc.tuple(address, fc.integer({ min: 0, max: 2 })), { maxLength: 8 }),
        (pods, servers) => {
          const book = new AddressBook();
          pods.forEach((p, i) => {
            book.upsertPod(
              pod(`ns/p${i}`, p.address, { terminating: p.terminating, finished: p.finished }),
            );
          });
          pods.forEach((p, i) => {
            if (p.removed) book.removePod(`ns/p${i}`);
          });
          const held = new Set(pods.filter((p) => !p.removed && !p.finished).map((p) => p.address));
          const decisions = decide(parseIpvsTable(table(servers)).realServers, (a) =>
            book.state(a),
          );
          for (const d of decisions) {
            assert.equal(d.server.weight, 0);
            if (d.verdict.action === 'reap') assert.equal(held.has(d.server.address), false);
          }
          // Every weight-0 server whose address some pod held and none holds now goes.
          const everHeld = new Set(pods.map((p) => p.address));
          for (const d of decisions) {
            const gone = everHeld.has(d.server.address) && !held.has(d.server.address);
            assert.equal(d.verdict.action === 'reap', gone, d.name);
          }
        },
      ),
    );
  });
});
