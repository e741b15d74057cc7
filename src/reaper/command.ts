// `prestop-injector ipvs-reaper`: the node agent (a DaemonSet with
// hostNetwork and NET_ADMIN), or with --diagnose a one-off report on the
// node it runs on.

import { createHealthApp } from '../webhook/health.ts';
import { parseArgs } from 'node:util';
import { PACKAGE_VERSION } from '../cli/config.ts';
import { createLogger } from '../webhook/log.ts';
import { AddressBook, parseCidr, type Cidr } from './address-book.ts';
import { createReaper } from './agent.ts';
import { diagnose, formatDiagnosis } from './diagnose.ts';
import { createReaperMetrics } from './metrics.ts';
import { DEFAULT_NODE_OPTIONS, ipvsNode } from './node.ts';

const REAPER_USAGE = `Usage: prestop-injector ipvs-reaper [--dry-run] [--kubeconfig FILE] [--interval-seconds N]
                                   [--pod-cidrs CIDR,...] [--health-port N] [--health-host ADDR]
                                   [--ipvsadm PATH] [--kube-proxy-metrics-url URL] [--log-level L]
       prestop-injector ipvs-reaper --diagnose [--json]
  Removes IPVS real servers of weight 0 once the pod behind them is gone (not while it terminates).
  --dry-run only reports them. --pod-cidrs: addresses in them count as pods' even if no pod was
  seen with them (after a restart). --health-port serves /healthz, /readyz and /metrics (0: off).
  --diagnose prints the node's kernel, IPVS sysctls, kube-proxy mode and whether it is exposed.
`;

interface ReaperArgs {
  diagnose: boolean;
  json: boolean;
  dryRun: boolean;
  kubeconfig: string;
  intervalMs: number;
  podCidrs: Cidr[];
  healthPort: number;
  healthHost: string;
  ipvsadm: string;
  kubeProxyMetricsUrl: string;
  logLevel: string;
}

class ReaperUsageError extends Error {}

export function parseReaperArgs(argv: readonly string[]): ReaperArgs | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: 'boolean', short: 'h' },
        diagnose: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        'dry-run': { type: 'boolean', default: false },
        kubeconfig: { type: 'string', default: '' },
        'interval-seconds': { type: 'string', default: '2' },
        'pod-cidrs': { type: 'string', default: '' },
        'health-port': { type: 'string', default: '9811' },
        'health-host': { type: 'string', default: '0.0.0.0' },
        ipvsadm: { type: 'string', default: DEFAULT_NODE_OPTIONS.ipvsadm },
        'kube-proxy-metrics-url': {
          type: 'string',
          default: DEFAULT_NODE_OPTIONS.kubeProxyMetricsUrl,
        },
        'log-level': { type: 'string', default: 'info' },
      },
    }));
  } catch (error) {
    throw new ReaperUsageError((error as Error).message);
  }
  if (values.help) return 'help';
  const interval = Number(values['interval-seconds']);
  if (!Number.isFinite(interval) || interval < 0.1 || interval > 3600) {
    throw new ReaperUsageError('--interval-seconds: expected a number of seconds, 0.1..3600');
  }
  const port = values['health-port'];
  if (!/^\d+$/.test(port) || Number(port) > 65535) {
    throw new ReaperUsageError(`--health-port: ${JSON.stringify(port)} is not a port`);
  }
  const podCidrs: Cidr[] = [];
  for (const text of values['pod-cidrs'].split(',').filter((t) => t.trim() !== '')) {
    const cidr = parseCidr(text);
    if (cidr === null)
      throw new ReaperUsageError(`--pod-cidrs: ${JSON.stringify(text)} is not a CIDR`);
    podCidrs.push(cidr);
  }
  if (values.json && !values.diagnose) throw new ReaperUsageError('--json goes with --diagnose');
  return {
    diagnose: values.diagnose,
    json: values.json,
    dryRun: values['dry-run'],
    kubeconfig: values.kubeconfig,
    intervalMs: interval * 1000,
    podCidrs,
    healthPort: Number(port),
    healthHost: values['health-host'],
    ipvsadm: values.ipvsadm,
    kubeProxyMetricsUrl: values['kube-proxy-metrics-url'],
    logLevel: values['log-level'],
  };
}

/** Loaded only by the agent: --diagnose has no use for the Kubernetes client. */
async function loadKubeConfig(file: string) {
  const { loadKubeConfig: load } = await import('../cluster/kubeconfig.ts');
  return load({ cluster: 'on', kubeconfig: file });
}

/** Exit status, or -1 while the agent runs. */
export async function runIpvsReaper(argv: readonly string[]): Promise<number> {
  let args: ReaperArgs | 'help';
  try {
    args = parseReaperArgs(argv);
  } catch (error) {
    if (!(error instanceof ReaperUsageError)) throw error;
    process.stderr.write(`prestop-injector ipvs-reaper: ${error.message}\n\n${REAPER_USAGE}`);
    return 2;
  }
  if (args === 'help') {
    process.stdout.write(REAPER_USAGE);
    return 0;
  }
  const node = ipvsNode({
    procRoot: DEFAULT_NODE_OPTIONS.procRoot,
    ipvsadm: args.ipvsadm,
    kubeProxyMetricsUrl: args.kubeProxyMetricsUrl,
  });
  if (args.diagnose) {
    const diagnosis = diagnose(await node.facts());
    process.stdout.write(args.json ? `${JSON.stringify(diagnosis)}\n` : formatDiagnosis(diagnosis));
    return 0;
  }

  const logger = createLogger(args.logLevel);
  const book = new AddressBook({ podCidrs: args.podCidrs });
  const diagnosis = diagnose(await node.facts());
  logger.info(
    {
      ...diagnosis.facts,
      exposure: diagnosis.exposure,
      reasons: diagnosis.reasons,
      dryRun: args.dryRun,
    },
    'node diagnosis',
  );
  if (!diagnosis.reapedEntriesExpire) {
    logger.warn(
      'expire_nodest_conn=0: connection entries of removed real servers drop new connections until they time out',
    );
  }
  const { watchCluster } = await import('./watch.ts');
  const kc = await loadKubeConfig(args.kubeconfig);
  // The three refer to each other only in callbacks that run after all exist.
  const metrics = createReaperMetrics({
    version: PACKAGE_VERSION,
    cachesSynced: () => {
      const stats = watch.stats();
      return { pod: stats.pods.synced, endpointslice: stats.endpointSlices.synced };
    },
  });
  metrics.diagnosed(diagnosis);
  const reaper = createReaper({
    node,
    book,
    synced: () => watch.synced(),
    dryRun: args.dryRun,
    logger,
    metrics,
  });
  const watch = watchCluster({ kc, book, logger, onRemoval: () => reaper.requestScan() });
  const every = setInterval(() => reaper.requestScan(), args.intervalMs);
  // The sysctls can change under a running agent.
  const rediagnose = setInterval(() => {
    node.facts().then(
      (facts) => metrics.diagnosed(diagnose(facts)),
      (error: unknown) =>
        logger.warn({ error: (error as Error).message }, 'cannot read node facts'),
    );
  }, 60_000);

  const health = createHealthApp({
    isReady: () =>
      watch.synced() ? { ready: true } : { ready: false, reason: 'caches not yet synced' },
    metrics: () => metrics.render(),
  });
  if (args.healthPort !== 0) await health.listen({ port: args.healthPort, host: args.healthHost });
  logger.info(
    {
      healthPort: args.healthPort,
      intervalMs: args.intervalMs,
      podCidrs: args.podCidrs.map((c) => c.text),
    },
    'ipvs-reaper started',
  );

  const stop = (signal: string) => {
    logger.info({ signal }, 'stopping');
    clearInterval(every);
    clearInterval(rediagnose);
    void health.close();
    watch.stop().finally(() => {
      logger.flush();
      process.exit(0);
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  return -1;
}
