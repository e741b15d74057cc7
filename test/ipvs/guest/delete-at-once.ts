// The field report's fix, for comparison: a daemon that deletes every IPVS
// real server of weight 0 as soon as kube-proxy sets it (it watched
// Endpoints; a weight 0 follows each endpoint removal, so reading the IPVS
// table every 100 ms is the same trigger, a little sooner). It uses the
// project's IPVS edge for reading and deleting; only the rule differs.
//
//   node delete-at-once.ts IPVSADM

import { ipvsNode } from '../../../src/reaper/node.ts';
import { realServerName } from '../../../src/reaper/ipvs-table.ts';

const node = ipvsNode({
  procRoot: '/proc',
  ipvsadm: process.argv[2] ?? 'ipvsadm',
  kubeProxyMetricsUrl: 'http://127.0.0.1:10249',
});

async function sweep(): Promise<void> {
  for (const server of await node.realServers()) {
    if (server.weight !== 0) continue;
    await node.deleteRealServer(server);
    process.stdout.write(`deleted ${realServerName(server)} at ${Date.now()}\n`);
  }
}

async function loop(): Promise<void> {
  for (;;) {
    await sweep().catch((error: unknown) => process.stdout.write(`error ${String(error)}\n`));
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

process.on('SIGTERM', () => process.exit(0));
process.stdout.write('ready\n');
void loop();
