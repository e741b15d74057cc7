// The node diagnosis: exposed or not from the kernel, the two IPVS sysctls
// and kube-proxy's mode (the rules are in src/reaper/diagnose.ts; the lab
// measured the 6.1 ones), and the facts read from a procfs stand-in.

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import {
  diagnose,
  formatDiagnosis,
  kernelVersion,
  type NodeFacts,
} from '../../src/reaper/diagnose.ts';
import { ipvsNode } from '../../src/reaper/node.ts';

const facts = (overrides: Partial<NodeFacts>): NodeFacts => ({
  kernel: '6.1.0-18-amd64',
  connReuseMode: 0,
  expireNodestConn: 0,
  kubeProxyMode: 'ipvs',
  kubeProxyModeSource: 'kube-proxy',
  virtualServices: 3,
  ...overrides,
});

describe('diagnose', () => {
  const cases: [string, Partial<NodeFacts>, string, boolean][] = [
    [
      'the report’s sysctls, any kernel',
      { connReuseMode: 0, expireNodestConn: 0 },
      'exposed',
      false,
    ],
    [
      'kube-proxy’s sysctls on an old kernel (< 5.9 sets conn_reuse_mode=0)',
      { kernel: '5.4.0-42-generic', expireNodestConn: 1 },
      'possibly exposed',
      true,
    ],
    [
      'kube-proxy’s sysctls on 5.16+',
      { kernel: '5.16.0', expireNodestConn: 1 },
      'not exposed',
      true,
    ],
    [
      'conn_reuse_mode=1 with expire_nodest_conn=1',
      { connReuseMode: 1, expireNodestConn: 1 },
      'not exposed',
      true,
    ],
    [
      'conn_reuse_mode=1 alone',
      { connReuseMode: 1, expireNodestConn: 0 },
      'possibly exposed',
      false,
    ],
    ['no IPVS module', { connReuseMode: null, expireNodestConn: null }, 'not exposed', false],
    [
      'kube-proxy in iptables mode, no IPVS service',
      { kubeProxyMode: 'iptables', virtualServices: 0 },
      'not exposed',
      false,
    ],
    [
      'kube-proxy mode unknown, IPVS services present',
      { kubeProxyMode: null, kubeProxyModeSource: 'unknown' },
      'exposed',
      false,
    ],
  ];
  for (const [name, overrides, exposure, expire] of cases) {
    it(`${name}: ${exposure}`, () => {
      const diagnosis = diagnose(facts(overrides));
      assert.equal(diagnosis.exposure, exposure);
      assert.equal(diagnosis.reapedEntriesExpire, expire);
      assert.ok(diagnosis.reasons.length > 0);
    });
  }

  it('says when the sysctl alone is the fix, and warns about old kernels with conn_reuse_mode=1', () => {
    assert.match(
      diagnose(facts({ kernel: '6.1.176' })).reasons.join(' '),
      /on kernel 6\.1\.176 that alone fixes it/,
    );
    assert.doesNotMatch(diagnose(facts({ kernel: '5.4.0' })).reasons.join(' '), /alone fixes it/);
    assert.match(
      diagnose(facts({ kernel: '4.19.0', connReuseMode: 1, expireNodestConn: 1 })).reasons.join(
        ' ',
      ),
      /older than 5\.9/,
    );
  });

  it('prints every fact and the verdict', () => {
    const text = formatDiagnosis(diagnose(facts({})));
    for (const line of [
      'kernel:             6.1.0-18-amd64',
      'conn_reuse_mode:    0',
      'expire_nodest_conn: 0',
      'kube-proxy mode:    ipvs (from kube-proxy)',
      'exposed:            exposed',
    ]) {
      assert.ok(text.includes(line), line);
    }
  });

  it('reads kernel versions', () => {
    assert.deepEqual(kernelVersion('6.1.176'), { major: 6, minor: 1 });
    assert.deepEqual(kernelVersion('5.15.0-1051-aws'), { major: 5, minor: 15 });
    assert.equal(kernelVersion('unknown'), null);
  });
});

describe('the node edge on a procfs stand-in', () => {
  let root: string;
  after(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('reads the sysctls and counts virtual services; nothing for kube-proxy when it does not answer', async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'prestop-reaper-proc-'));
    await mkdir(path.join(root, 'sys/net/ipv4/vs'), { recursive: true });
    await mkdir(path.join(root, 'net'), { recursive: true });
    await writeFile(path.join(root, 'sys/net/ipv4/vs/conn_reuse_mode'), '0\n');
    await writeFile(path.join(root, 'sys/net/ipv4/vs/expire_nodest_conn'), '1\n');
    await writeFile(
      path.join(root, 'net/ip_vs'),
      'Prot LocalAddress:Port Scheduler Flags\nTCP  0A60000A:0050 rr \n  -> 0AF40102:1F90      Masq    0      1          2         \nUDP  0A60000A:0035 rr \n',
    );
    await writeFile(
      path.join(root, 'net/ip_vs_conn'),
      'Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\nTCP 0AF4C80A 9C40 0A60000A 0050 0AF40102 1F90 TIME_WAIT        118\n',
    );
    // Port 9 (discard) answers nothing over HTTP: kube-proxy is not there.
    const node = ipvsNode({
      procRoot: root,
      ipvsadm: 'ipvsadm',
      kubeProxyMetricsUrl: 'http://127.0.0.1:9',
    });
    const read = await node.facts();
    assert.equal(read.connReuseMode, 0);
    assert.equal(read.expireNodestConn, 1);
    assert.equal(read.virtualServices, 2);
    assert.equal(read.kernel, os.release());
    assert.deepEqual(
      (await node.realServers()).map((s) => [s.address, s.weight]),
      [['10.244.1.2', 0]],
    );
    assert.equal((await node.entriesTo('10.244.1.2')).length, 1);
    assert.equal((await node.entriesTo('10.244.1.3')).length, 0);
  });

  it('without IPVS: no sysctls, no table', async () => {
    const empty = await mkdtemp(path.join(os.tmpdir(), 'prestop-reaper-proc-'));
    try {
      const node = ipvsNode({
        procRoot: empty,
        ipvsadm: 'ipvsadm',
        kubeProxyMetricsUrl: 'http://127.0.0.1:9',
      });
      const read = await node.facts();
      assert.equal(read.connReuseMode, null);
      assert.equal(read.virtualServices, 0);
      assert.deepEqual(await node.realServers(), []);
      assert.equal(diagnose(read).exposure, 'not exposed');
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });

  it('a failed ipvsadm is an error naming the command and its message', async () => {
    const node = ipvsNode({
      procRoot: '/nonexistent',
      ipvsadm: '/bin/false',
      kubeProxyMetricsUrl: 'http://127.0.0.1:9',
    });
    const server = {
      service: { protocol: 'TCP' as const, address: '10.96.0.10', port: 80 },
      address: '10.244.1.2',
      port: 8080,
      weight: 0,
      activeConnections: 0,
      inactiveConnections: 0,
    };
    await assert.rejects(
      node.deleteRealServer(server),
      /\/bin\/false -d -t 10\.96\.0\.10:80 -r 10\.244\.1\.2:8080/,
    );
  });
});
