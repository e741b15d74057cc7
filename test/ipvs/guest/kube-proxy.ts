// kube-proxy's IPVS rules for one Service, from its real EndpointSlices, as
// kube-proxy's IPVS proxier writes them (pkg/proxy/ipvs/proxier.go and
// graceful_termination.go, Kubernetes 1.37):
// - a virtual service on the ClusterIP, round robin, real servers in NAT
//   ("Masq") mode with weight 1, for the ready endpoints (the serving
//   terminating ones only when none is ready);
// - a real server whose endpoint left that set is deleted at once if it has
//   no connection entries; otherwise its weight is set to 0 and it waits in
//   a graceful-termination list, checked every minute, until it has none;
// - an endpoint that comes back is taken out of the list (deleted) and
//   added again with weight 1.
// It also answers GET /proxyMode on 127.0.0.1:10249, as kube-proxy does.

import { createServer } from 'node:http';
import { DiscoveryV1Api, type KubeConfig, type V1EndpointSlice } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { parseIpvsTable, type RealServer } from '../../../src/reaper/ipvs-table.ts';
import { DEFAULT_TIMINGS, watchedList } from '../../../src/cluster/watched-list.ts';
import { IPVSADM, run } from './net.ts';
import { readFile } from 'node:fs/promises';

const GRACEFUL_CHECK_MS = 60_000;

export interface KubeProxy {
  /** Resolves once the rules match the endpoints known now. */
  synced(): Promise<void>;
  stop(): Promise<void>;
}

export async function currentRealServers(vip: string, port: number): Promise<RealServer[]> {
  const { realServers } = parseIpvsTable(await readFile('/proc/net/ip_vs', 'utf8'));
  return realServers.filter((s) => s.service.address === vip && s.service.port === port);
}

export async function startKubeProxy(options: {
  kc: KubeConfig;
  namespace: string;
  service: { name: string; clusterIP: string; port: number; targetPort: number };
  logger: Logger;
  log: (line: string) => void;
}): Promise<KubeProxy> {
  const { kc, namespace, service, logger, log } = options;
  const vs = `${service.clusterIP}:${service.port}`;
  await run(IPVSADM, ['-A', '-t', vs, '-s', 'rr']);
  const slices = new Map<string, V1EndpointSlice>();
  const graceful = new Set<string>();
  let queue: Promise<void> = Promise.resolve();

  const wanted = (): Set<string> => {
    const ready = new Set<string>();
    const servingTerminating = new Set<string>();
    for (const slice of slices.values()) {
      for (const endpoint of slice.endpoints ?? []) {
        const address = endpoint.addresses[0];
        if (address === undefined) continue;
        if (endpoint.conditions?.ready === true) ready.add(address);
        else if (endpoint.conditions?.serving === true && endpoint.conditions.terminating === true)
          servingTerminating.add(address);
      }
    }
    return ready.size > 0 ? ready : servingTerminating;
  };

  async function syncOnce(): Promise<void> {
    const want = wanted();
    const current = await currentRealServers(service.clusterIP, service.port);
    const rs = (address: string) => `${address}:${service.targetPort}`;
    for (const address of want) {
      const existing = current.find((s) => s.address === address);
      if (existing !== undefined) {
        if (!graceful.has(address)) continue;
        graceful.delete(address);
        await run(IPVSADM, ['-d', '-t', vs, '-r', rs(address)]);
      }
      await run(IPVSADM, ['-a', '-t', vs, '-r', rs(address), '-m', '-w', '1']);
      log(`kube-proxy: added ${rs(address)}`);
    }
    for (const server of current) {
      if (want.has(server.address) || graceful.has(server.address)) continue;
      if (server.activeConnections + server.inactiveConnections === 0) {
        await run(IPVSADM, ['-d', '-t', vs, '-r', rs(server.address)]);
        log(`kube-proxy: deleted ${rs(server.address)} (no connections)`);
        continue;
      }
      await run(IPVSADM, ['-e', '-t', vs, '-r', rs(server.address), '-m', '-w', '0']);
      graceful.add(server.address);
      log(
        `kube-proxy: ${rs(server.address)} weight 0 (${server.activeConnections} active, ${server.inactiveConnections} inactive connections)`,
      );
    }
  }

  async function gracefulCheck(): Promise<void> {
    const current = await currentRealServers(service.clusterIP, service.port);
    for (const address of [...graceful]) {
      const server = current.find((s) => s.address === address);
      // Someone else deleted it: kube-proxy logs an error and forgets it.
      if (server === undefined) {
        graceful.delete(address);
        continue;
      }
      if (server.activeConnections + server.inactiveConnections !== 0) continue;
      await run(IPVSADM, ['-d', '-t', vs, '-r', `${address}:${service.targetPort}`]);
      graceful.delete(address);
      log(`kube-proxy: deleted ${address}:${service.targetPort} after graceful termination`);
    }
  }

  const enqueue = (step: () => Promise<void>) => {
    queue = queue.then(step).catch((error: unknown) => log(`kube-proxy: ${String(error)}`));
    return queue;
  };

  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const mine = (slice: V1EndpointSlice) =>
    slice.metadata?.namespace === namespace &&
    slice.metadata.labels?.['kubernetes.io/service-name'] === service.name;
  const list = watchedList<V1EndpointSlice>({
    kc,
    path: '/apis/discovery.k8s.io/v1/endpointslices',
    what: 'endpointslice',
    list: () => discovery.listEndpointSliceForAllNamespaces(),
    replaceAll(items) {
      slices.clear();
      for (const slice of items) if (mine(slice)) slices.set(slice.metadata!.name!, slice);
      void enqueue(syncOnce);
    },
    upsert(slice) {
      if (!mine(slice)) return;
      slices.set(slice.metadata!.name!, slice);
      void enqueue(syncOnce);
    },
    remove(slice) {
      if (!mine(slice)) return;
      slices.delete(slice.metadata!.name!);
      void enqueue(syncOnce);
    },
    timings: DEFAULT_TIMINGS,
    logger,
    onRequest: () => {},
  });
  list.start();
  const every = setInterval(() => void enqueue(gracefulCheck), GRACEFUL_CHECK_MS);

  const metrics = createServer((req, res) => {
    res.end(req.url === '/proxyMode' ? 'ipvs' : '');
  });
  await new Promise<void>((resolve) => metrics.listen(10249, '127.0.0.1', resolve));

  return {
    synced: () => enqueue(syncOnce),
    async stop() {
      clearInterval(every);
      metrics.close();
      await list.stop();
      await queue;
    },
  };
}
