// `prestop-injector serve`: wires config, certificates, the cluster view and
// the two listeners together, and stops gracefully on SIGTERM.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { configuredCapabilities, OPTIONS, type ServerConfig } from './config.ts';
import type { Capabilities } from './core/capabilities.ts';
import type { AdmissionEnvironment, NamespaceAnnotations } from './webhook/handler.ts';
import { SYSTEM_NAMESPACES } from './webhook/handler.ts';
import {
  createHealthApp,
  createWebhookApp,
  type AdmissionObserver,
  type WebhookApp,
} from './webhook/server.ts';
import { CertificateWatcher } from './webhook/tls.ts';

/** What the webhook knows of the cluster. Without one, it knows nothing. */
export interface ClusterView {
  /** From the cache at once when it knows the namespace; a promise when it must ask. */
  namespaceAnnotations(namespace: string): NamespaceAnnotations | Promise<NamespaceAnnotations>;
  /** gitVersion of the API server, or null when unknown. */
  serverVersion(): string | null;
  readiness(): { ready: boolean; reason?: string };
  /** Counters for metrics; absent without a cluster. */
  stats?(): ClusterStats;
  stop(): Promise<void>;
}

export interface ClusterStats {
  /** Requests this process made to the API server, by purpose. */
  requests: Record<'list' | 'watch' | 'read' | 'version', number>;
  /** ms since the epoch of the last full list or watch event; 0 before the first. */
  lastActivityMs: number;
  synced: boolean;
  restarts: number;
}

export const NO_CLUSTER: ClusterView = {
  namespaceAnnotations: () => undefined,
  serverVersion: () => null,
  readiness: () => ({ ready: true }),
  stop: async () => {},
};

const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Dev certificates on first start, only where the defaults point. */
function ensureDevCertificates(config: ServerConfig, logger: Logger): void {
  const usingDefaults =
    config.tlsCertPath === OPTIONS.tlsCert.default && config.tlsKeyPath === OPTIONS.tlsKey.default;
  if (!usingDefaults || (existsSync(config.tlsCertPath) && existsSync(config.tlsKeyPath))) return;
  const script = resolve(PACKAGE_ROOT, 'certs', 'generate.sh');
  logger.info({ script }, 'no serving certificate: generating development certificates');
  execFileSync('bash', [script, dirname(resolve(config.tlsCertPath))], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

export interface RunningServer {
  webhook: WebhookApp;
  health: FastifyInstance;
  webhookPort: number;
  healthPort: number;
  certificates: CertificateWatcher;
  capabilities(): Capabilities;
  /** Readiness off; admissions still served. */
  stopReady(): void;
  /** Readiness off, in-flight requests answered, listeners closed. */
  close(): Promise<void>;
}

export interface StartOptions {
  cluster?: ClusterView;
  observe?: AdmissionObserver;
  metrics?: () => Promise<{ contentType: string; body: string }>;
}

export async function startServer(
  config: ServerConfig,
  logger: Logger,
  options: StartOptions = {},
): Promise<RunningServer> {
  const cluster = options.cluster ?? NO_CLUSTER;
  ensureDevCertificates(config, logger);

  // The watcher exists before the app it reconfigures: the app needs its first pair.
  const serving: { app?: WebhookApp } = {};
  const certificates = new CertificateWatcher({
    certPath: config.tlsCertPath,
    keyPath: config.tlsKeyPath,
    pollMs: config.certPollMs,
    onChange: (pair) => {
      serving.app?.server.setSecureContext({
        cert: pair.cert,
        key: pair.key,
        minVersion: 'TLSv1.2',
      });
      logger.info(
        { notAfter: new Date(pair.notAfterMs).toISOString() },
        'serving certificate reloaded',
      );
    },
    onError: (error) =>
      logger.error(
        { error: error.message },
        'serving certificate not reloaded; keeping the current one',
      ),
  });

  // Capabilities change only when the cluster's version does: cache by version.
  let cachedFor: string | null | undefined;
  let cached: Capabilities = configuredCapabilities(config);
  const capabilities = () => {
    const version = cluster.serverVersion();
    if (version !== cachedFor) {
      cached = configuredCapabilities(config, version);
      cachedFor = version;
    }
    return cached;
  };

  const excluded = new Set([
    ...SYSTEM_NAMESPACES,
    ...(config.ownNamespace === '' ? [] : [config.ownNamespace]),
  ]);
  const environment: AdmissionEnvironment = {
    defaults: config.defaults,
    planner: config.planner,
    capabilities,
    namespaceAnnotations: (namespace) => cluster.namespaceAnnotations(namespace),
    excludedNamespaces: excluded,
  };

  const webhook = createWebhookApp({
    keyPair: certificates.current,
    environment,
    logger,
    admissionLog: config.admissionLog,
    ...(options.observe === undefined ? {} : { observe: options.observe }),
  });
  serving.app = webhook;
  let closing = false;
  const health = createHealthApp({
    isReady: () => (closing ? { ready: false, reason: 'shutting down' } : cluster.readiness()),
    ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
  });

  await webhook.listen({ port: config.port, host: config.host });
  await health.listen({ port: config.healthPort, host: config.host });
  certificates.start();
  const portOf = (app: { server: { address(): unknown } }) => {
    const address = app.server.address();
    return typeof address === 'object' && address !== null ? (address as { port: number }).port : 0;
  };
  const running: RunningServer = {
    webhook,
    health,
    webhookPort: portOf(webhook),
    healthPort: portOf(health),
    certificates,
    capabilities,
    stopReady: () => {
      closing = true;
    },
    close: async () => {
      closing = true;
      certificates.stop();
      await webhook.close();
      await health.close();
      await cluster.stop();
    },
  };
  const caps = capabilities();
  logger.info(
    {
      webhook: `https://${config.host}:${running.webhookPort}/mutate`,
      health: `http://${config.host}:${running.healthPort}/readyz`,
      kubeVersion:
        caps.kubeVersion === null
          ? 'unknown'
          : `${caps.kubeVersion.major}.${caps.kubeVersion.minor}`,
      sleepAction: caps.sleepAction,
      injectDefault: config.defaults.inject ? 'enabled' : 'disabled',
    },
    'prestop-injector serving',
  );
  return running;
}
