// `prestop-injector serve`: wires config, certificates, the cluster view and
// the two listeners together, and stops gracefully on SIGTERM.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ManagedCertificates } from '../cluster/certificates.ts';
import { NO_CLUSTER, type ClusterView } from '../cluster/view.ts';
import { formatKubeVersion, type Capabilities } from '../core/capabilities.ts';
import { SYSTEM_NAMESPACES, type AdmissionEnvironment } from '../webhook/admission.ts';
import { createHealthApp } from '../webhook/health.ts';
import { createWebhookApp, type AdmissionObserver, type WebhookApp } from '../webhook/server.ts';
import { CertificateWatcher, type KeyPair } from '../webhook/tls.ts';
import { configuredCapabilities, OPTIONS, type ServerConfig } from './config.ts';

const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

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

/** Where the serving pair comes from: files (CertificateWatcher) or run-time certificates. */
interface CertificateSource {
  readonly current: KeyPair;
  start(): void;
  stop(): void;
}

export interface RunningServer {
  webhook: WebhookApp;
  health: FastifyInstance;
  webhookPort: number;
  healthPort: number;
  certificates: CertificateSource;
  capabilities(): Capabilities;
  /** Readiness off; admissions still served. */
  stopReady(): void;
  /** Readiness off, in-flight requests answered, listeners closed. */
  close(): Promise<void>;
}

export interface StartOptions {
  cluster?: ClusterView;
  observer?: AdmissionObserver;
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** Run-time certificates (--tls-secret), started already; else the files are served. */
  certificates?: ManagedCertificates;
}

export async function startServer(
  config: ServerConfig,
  logger: Logger,
  options: StartOptions = {},
): Promise<RunningServer> {
  const cluster = options.cluster ?? NO_CLUSTER;
  const managed = options.certificates;
  if (managed === undefined) ensureDevCertificates(config, logger);

  // The source exists before the app it reconfigures: the app needs its first pair.
  const serving: { app?: WebhookApp } = {};
  const reload = (pair: KeyPair) => {
    serving.app?.server.setSecureContext({
      cert: pair.cert,
      key: pair.key,
      minVersion: 'TLSv1.2',
    });
    logger.info(
      { notAfter: new Date(pair.notAfterMs).toISOString() },
      'serving certificate reloaded',
    );
  };
  const certificates: CertificateSource =
    managed ??
    new CertificateWatcher({
      certPath: config.tlsCertPath,
      keyPath: config.tlsKeyPath,
      pollMs: config.certPollMs,
      onChange: reload,
      onError: (error) =>
        logger.error(
          { error: error.message },
          'serving certificate not reloaded; keeping the current one',
        ),
    });
  managed?.onChange(reload);

  // From the cluster's versions as the view knows them now: a node that
  // joins with an older kubelet changes the next admission's plan.
  const capabilities = () => configuredCapabilities(config, cluster.versions());

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

  let closing = false;
  const webhook = createWebhookApp({
    keyPair: certificates.current,
    environment,
    logger,
    draining: () => closing,
    ...(options.observer === undefined ? {} : { observer: options.observer }),
  });
  serving.app = webhook;
  const health = createHealthApp({
    isReady: () => {
      if (closing) return { ready: false, reason: 'shutting down' };
      const view = cluster.readiness();
      // Run-time certificates: ready once the webhook configuration trusts them.
      return view.ready && managed !== undefined ? managed.readiness() : view;
    },
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
      // Idle pooled connections go now; busy ones close after their answer.
      webhook.server.closeIdleConnections();
      // Another replica takes over the certificates at once.
      void managed?.release();
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
      kubeVersion: formatKubeVersion(caps.versions.server),
      oldestKubelet: formatKubeVersion(caps.versions.oldestKubelet),
      sleepAction: caps.sleepAction,
      injectDefault: config.defaults.inject ? 'enabled' : 'disabled',
    },
    'prestop-injector serving',
  );
  return running;
}
