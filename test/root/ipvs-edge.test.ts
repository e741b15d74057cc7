// The reaper's IPVS edge on a live IPVS kernel (Debian's 6.1, in a
// User-Mode Linux guest; no API server): what the parsers read from
// /proc/net/ip_vs and /proc/net/ip_vs_conn is what ipvsadm prints, a
// real server is deleted through ipvsadm, and the diagnosis on the guest
// says what the lab measured for each pair of sysctls. Needs root; runs
// under the machine's heavy-run lock.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Diagnosis } from '../../src/reaper/diagnose.ts';
import type { ConnectionEntry, RealServer } from '../../src/reaper/ipvs-table.ts';
import { fileURLToPath } from 'node:url';
import { makeTempDir, removeDirectory } from '../support/cluster/processes.ts';

interface EdgeReport {
  weightZero: RealServer;
  before: {
    realServers: RealServer[];
    ipvsadm: string;
    entriesToA: ConnectionEntry[];
    entriesToB: ConnectionEntry[];
    ipvsadmConnections: string;
  };
  after: { realServers: RealServer[] };
  diagnoses: { sysctls: [number, number]; diagnosis: Diagnosis }[];
}

const BOOT = fileURLToPath(new URL('../ipvs/boot.ts', import.meta.url));

/** Real servers as ipvsadm -Ln --exact lists them: "  -> 10.244.1.1:8080  Masq  1  0  5". */
function ipvsadmRealServers(text: string): string[] {
  return text
    .split('\n')
    .filter((line) => line.trim().startsWith('->') && !line.includes('RemoteAddress'))
    .map((line) => {
      const [, address, , weight, active, inactive] = line.trim().split(/\s+/);
      return `${address} w${weight} a${active} i${inactive}`;
    });
}

const asIpvsadm = (s: RealServer) =>
  `${s.address.includes(':') ? `[${s.address}]` : s.address}:${s.port} w${s.weight} a${s.activeConnections} i${s.inactiveConnections}`;

describe(
  'the IPVS edge on a live kernel (User-Mode Linux guest)',
  { skip: process.getuid?.() !== 0 ? 'needs root' : false },
  () => {
    let report: EdgeReport;
    let dir: string;

    before(async () => {
      dir = await makeTempDir('prestop-ipvs-edge-');
      await fsp.chmod(dir, 0o755);
      const out = path.join(dir, 'out');
      await fsp.mkdir(out);
      // The guest runs under the machine's heavy-run lock (boot.ts takes it).
      const boot = spawnSync(process.execPath, [BOOT, 'test/ipvs/guest/edge-check.ts', out], {
        encoding: 'utf8',
        timeout: 1_800_000,
      });
      assert.equal(boot.status, 0, `the guest run failed:\n${boot.stderr}`);
      report = JSON.parse(await fsp.readFile(path.join(out, 'edge.json'), 'utf8')) as EdgeReport;
    });
    after(async () => {
      if (dir) await removeDirectory(dir);
    });

    it('reads the same real servers, weights and counts from /proc/net/ip_vs as ipvsadm prints', () => {
      const fromIpvsadm = ipvsadmRealServers(report.before.ipvsadm).filter(
        (line) => !line.startsWith('10.0.0.1:'),
      );
      assert.deepEqual(report.before.realServers.map(asIpvsadm).sort(), fromIpvsadm.sort());
      assert.deepEqual(
        report.before.realServers
          .map(
            (s) =>
              `${s.service.protocol} ${s.service.address}:${s.service.port} -> ${s.address}:${s.port}`,
          )
          .sort(),
        [
          'TCP 10.96.0.10:80 -> 10.244.1.1:8080',
          'TCP 10.96.0.10:80 -> 10.244.1.2:8080',
          'TCP fd00::a:80 -> fd00::1:2:8080',
          'UDP 10.96.0.10:53 -> 10.244.1.3:53',
        ],
      );
    });

    it('leaves out the firewall-mark service, which ipvsadm does list', () => {
      assert.match(report.before.ipvsadm, /FWM\s+16 wlc/);
      assert.equal(
        report.before.realServers.some((s) => s.address === '10.0.0.1'),
        false,
      );
    });

    it('reads each connection entry with its client port, destination and state', () => {
      const entries = [...report.before.entriesToA, ...report.before.entriesToB];
      assert.deepEqual(
        entries.map((e) => e.client.port).sort(),
        Array.from({ length: 10 }, (_, i) => 40000 + i),
      );
      for (const entry of entries) {
        assert.equal(entry.client.address, '10.244.200.1');
        assert.deepEqual(entry.service, { address: '10.96.0.10', port: 80 });
        assert.ok(['10.244.1.1', '10.244.1.2'].includes(entry.destination.address));
        // ipvsadm lists the same entry, in the same state.
        assert.match(
          report.before.ipvsadmConnections,
          new RegExp(
            `TCP\\s+\\S+\\s+${entry.state}\\s+10\\.244\\.200\\.1:${entry.client.port}\\s+10\\.96\\.0\\.10:80\\s+${entry.destination.address.replaceAll('.', '\\.')}:8080`,
          ),
        );
      }
      // Round robin: both real servers got some.
      assert.ok(report.before.entriesToA.length > 0 && report.before.entriesToB.length > 0);
    });

    it('deletes a weight-0 real server through ipvsadm', () => {
      assert.equal(report.weightZero.weight, 0);
      assert.deepEqual(
        report.after.realServers
          .filter((s) => s.service.protocol === 'TCP' && s.service.address === '10.96.0.10')
          .map((s) => s.address),
        ['10.244.1.1'],
      );
    });

    it('diagnoses the guest as the lab measured it on this kernel', () => {
      const verdicts = Object.fromEntries(
        report.diagnoses.map(({ sysctls, diagnosis }) => [sysctls.join('/'), diagnosis.exposure]),
      );
      assert.deepEqual(verdicts, {
        '0/0': 'exposed',
        '0/1': 'not exposed',
        '1/0': 'possibly exposed',
        '1/1': 'not exposed',
      });
      const { facts } = report.diagnoses[0]!.diagnosis;
      assert.match(facts.kernel, /^6\.1\./);
      assert.equal(facts.kubeProxyMode, 'ipvs');
      assert.equal(facts.kubeProxyModeSource, 'kube-ipvs0 interface');
      assert.equal(facts.virtualServices, 3);
    });
  },
);
