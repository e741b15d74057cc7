// For test/root/ipvs-edge.test.ts, inside the guest (no API server): the
// reaper's IPVS edge against a live IPVS kernel. It writes rules as
// kube-proxy does (plus an IPv6, a UDP and a firewall-mark service), makes
// connection entries with a client, and records what the project's parsers
// read next to what ipvsadm prints; then deletes a real server through the
// edge, and runs `ipvs-reaper --diagnose --json` under each pair of sysctls.
// The host side asserts on /out/edge.json.
//
//   node test/ipvs/guest/edge-check.ts /out

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { ipvsNode } from '../../../src/reaper/node.ts';
import { addNetns, inNetns, IPVSADM, run, setUpNode, writeSysctl } from './net.ts';

const outDir = process.argv[2] ?? '/out';
const CLI = path.resolve(import.meta.dirname, '../../../src/cli/main.ts');
const APP = path.join(import.meta.dirname, 'app.ts');
const VIP = '10.96.0.10';
const PODS = { 'web-a': '10.244.1.1', 'web-b': '10.244.1.2' };

function startApp(name: string, netns: string): Promise<ChildProcess> {
  const [command, ...args] = inNetns(netns, [process.execPath, APP, name, '8080']);
  const app = spawn(command!, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    createInterface({ input: app.stdout! }).on('line', (line) => {
      if (line.startsWith('listening')) resolve(app);
    });
    app.once('exit', () => reject(new Error(`${name} exited`)));
  });
}

/** Ten requests from the client namespace, from source ports 40000-40009. */
const CLIENT_PROGRAM = `
const net = require('node:net');
let done = 0;
for (let i = 0; i < 10; i++) {
  const s = net.connect({ host: '${VIP}', port: 80, localAddress: '10.244.200.1', localPort: 40000 + i });
  s.on('connect', () => s.write('GET /?ms=1 HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'));
  s.resume();
  s.on('close', () => { if (++done === 10) process.exit(0); });
  s.on('error', (e) => { console.error(e.message); process.exit(1); });
}`;

async function main(): Promise<void> {
  await setUpNode(VIP);
  const node = ipvsNode({
    procRoot: '/proc',
    ipvsadm: IPVSADM,
    kubeProxyMetricsUrl: 'http://127.0.0.1:10249',
  });
  const apps: ChildProcess[] = [];
  for (const [name, address] of Object.entries(PODS)) {
    await addNetns(name, address);
    apps.push(await startApp(name, name));
  }
  await addNetns('client', '10.244.200.1');

  await run(IPVSADM, ['-A', '-t', `${VIP}:80`, '-s', 'rr']);
  for (const address of Object.values(PODS)) {
    await run(IPVSADM, ['-a', '-t', `${VIP}:80`, '-r', `${address}:8080`, '-m', '-w', '1']);
  }
  await run(IPVSADM, ['-A', '-u', `${VIP}:53`, '-s', 'rr']);
  await run(IPVSADM, ['-a', '-u', `${VIP}:53`, '-r', '10.244.1.3:53', '-m', '-w', '1']);
  await run(IPVSADM, ['-A', '-t', '[fd00::a]:80', '-s', 'rr']);
  await run(IPVSADM, ['-a', '-t', '[fd00::a]:80', '-r', '[fd00::1:2]:8080', '-m', '-w', '0']);
  await run(IPVSADM, ['-A', '-f', '16', '-s', 'wlc']);
  await run(IPVSADM, ['-a', '-f', '16', '-r', '10.0.0.1', '-g', '-w', '1']);

  const [ip, ...clientArgs] = inNetns('client', [process.execPath, '-e', CLIENT_PROGRAM]);
  await run(ip!, clientArgs);

  const before = {
    realServers: await node.realServers(),
    ipvsadm: await run(IPVSADM, ['-Ln', '--exact']),
    entriesToA: await node.entriesTo(PODS['web-a']),
    entriesToB: await node.entriesTo(PODS['web-b']),
    ipvsadmConnections: await run(IPVSADM, ['-Lnc']),
  };

  // kube-proxy's graceful removal, then the reaper's deletion through the edge.
  await run(IPVSADM, ['-e', '-t', `${VIP}:80`, '-r', `${PODS['web-b']}:8080`, '-m', '-w', '0']);
  const weightZero = (await node.realServers()).find(
    (s) => s.address === PODS['web-b'] && s.service.protocol === 'TCP',
  )!;
  await node.deleteRealServer(weightZero);
  const after = { realServers: await node.realServers() };

  const diagnoses: { sysctls: [number, number]; diagnosis: unknown }[] = [];
  for (const [connReuseMode, expireNodestConn] of [
    [0, 0],
    [0, 1],
    [1, 0],
    [1, 1],
  ] as const) {
    await writeSysctl('net.ipv4.vs.conn_reuse_mode', connReuseMode);
    await writeSysctl('net.ipv4.vs.expire_nodest_conn', expireNodestConn);
    const text = await run(process.execPath, [CLI, 'ipvs-reaper', '--diagnose', '--json']);
    diagnoses.push({ sysctls: [connReuseMode, expireNodestConn], diagnosis: JSON.parse(text) });
  }
  for (const app of apps) app.kill('SIGKILL');
  writeFileSync(
    path.join(outDir, 'edge.json'),
    JSON.stringify({ weightZero, before, after, diagnoses }, null, 2),
  );
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stdout.write(`edge-check failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
