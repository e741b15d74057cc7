// The webhook as a process on the host for the e2e tests: development
// certificates from certs/generate.sh and `serve` on 127.0.0.1.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { getFreePort } from '../free-port.ts';
import {
  ExitedError,
  httpGet,
  makeTempDir,
  removeDirectory,
  repoRoot,
  runCommand,
  spawnManaged,
  waitFor,
  type ManagedProcess,
} from './processes.ts';

export interface DevCerts {
  dir: string;
  caPem: string;
  certPath: string;
  keyPath: string;
}

/** Runs certs/generate.sh into a new temp dir (SANs localhost, 127.0.0.1, extras). */
export async function generateDevCerts(extraSans: string[] = []): Promise<DevCerts> {
  const dir = await makeTempDir('prestop-e2e-certs-');
  const result = await runCommand('bash', [
    path.join(repoRoot, 'certs', 'generate.sh'),
    dir,
    ...extraSans,
  ]);
  if (result.code !== 0) {
    throw new Error(`certs/generate.sh failed (${result.code}):\n${result.stdout}${result.stderr}`);
  }
  return {
    dir,
    caPem: await fsp.readFile(path.join(dir, 'ca.crt'), 'utf8'),
    certPath: path.join(dir, 'tls.crt'),
    keyPath: path.join(dir, 'tls.key'),
  };
}

export interface WebhookProcess {
  /** https://127.0.0.1:PORT/mutate */
  url: string;
  /** http://127.0.0.1:HEALTH_PORT */
  healthBase: string;
  port: number;
  healthPort: number;
  /** PEM of the CA that signed the serving certificate (for caBundle). */
  caPem: string;
  certs: DevCerts;
  proc: ManagedProcess;
  logTail(lines?: number): string;
  /** SIGTERM (graceful), SIGKILL after 25 s; removes its temp dirs. */
  stop(): Promise<void>;
}

export interface StartWebhookOptions {
  /** Kubeconfig for the webhook's cluster view; omitted: `--cluster off`. */
  kubeconfigPath?: string;
  injectDefault?: 'enabled' | 'disabled';
  /** e.g. "1.37"; omitted: read from the cluster (or unknown without one). */
  kubeVersion?: string;
  /** More `--flag value` arguments for `serve`. */
  extraArgs?: string[];
  /** Reuse certificates (e.g. to restart the webhook behind the same caBundle). */
  certs?: DevCerts;
  readyTimeoutMs?: number;
}

/**
 * Starts `node src/cli/main.ts serve` on 127.0.0.1 with dev certificates and waits
 * for its /readyz. Uses this process's Node (the pinned Node 24).
 */
export async function startWebhook(opts: StartWebhookOptions = {}): Promise<WebhookProcess> {
  const certs = opts.certs ?? (await generateDevCerts());
  const dir = await makeTempDir('prestop-e2e-webhook-');
  const logPath = path.join(dir, 'webhook.log');
  const env: NodeJS.ProcessEnv = { ...process.env };
  // The server reads these as option defaults; keep the test deterministic.
  for (const key of Object.keys(env)) {
    if (key.startsWith('PRESTOP_') || key === 'KUBECONFIG' || key === 'POD_NAMESPACE') {
      delete env[key];
    }
  }
  delete env['KUBERNETES_SERVICE_HOST'];
  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await getFreePort();
    const healthPort = await getFreePort();
    const args = [
      path.join(repoRoot, 'src', 'cli', 'main.ts'),
      'serve',
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
      '--health-port',
      String(healthPort),
      '--tls-cert',
      certs.certPath,
      '--tls-key',
      certs.keyPath,
      '--inject-default',
      opts.injectDefault ?? 'disabled',
      ...(opts.kubeVersion ? ['--kube-version', opts.kubeVersion] : []),
      ...(opts.kubeconfigPath
        ? ['--cluster', 'on', '--kubeconfig', opts.kubeconfigPath]
        : ['--cluster', 'off']),
      ...(opts.extraArgs ?? []),
    ];
    fs.appendFileSync(logPath, `\n[e2e] attempt ${attempt}: node ${args.join(' ')}\n`);
    const proc = spawnManaged('webhook', process.execPath, args, logPath, { cwd: repoRoot, env });
    const healthBase = `http://127.0.0.1:${healthPort}`;
    try {
      await waitFor('webhook /readyz', opts.readyTimeoutMs ?? 30_000, async () => {
        if (proc.hasExited()) throw new ExitedError('webhook exited');
        const res = await httpGet(`${healthBase}/readyz`, {});
        return res.status === 200;
      });
      let stopping: Promise<void> | undefined;
      return {
        url: `https://127.0.0.1:${port}/mutate`,
        healthBase,
        port,
        healthPort,
        caPem: certs.caPem,
        certs,
        proc,
        logTail: (lines = 40) => proc.logTail(lines),
        stop() {
          stopping ??= (async () => {
            await proc.stop(25_000);
            await removeDirectory(dir);
            if (!opts.certs) await removeDirectory(certs.dir);
          })();
          return stopping;
        },
      };
    } catch (err) {
      await proc.stop(5_000);
      const tail = proc.logTail(40);
      lastError = new Error(
        `webhook did not become ready: ${(err as Error).message}\n` +
          `----- last lines of ${logPath} -----\n${tail}`,
      );
      if (!/EADDRINUSE|address already in use/i.test(tail)) break;
    }
  }
  throw lastError ?? new Error('webhook failed to start');
}
