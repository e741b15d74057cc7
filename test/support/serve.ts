// The one way a test starts `prestop-injector serve`: a real process, on
// loopback ports the OS picks (read back from its startup log line, so two
// tests never race for a port), with development certificates, its log in a
// file, and the one cleanup registry stopping it if the test process exits.
// Inside a real node's network namespace too, where the API server reaches
// it at that namespace's 127.0.0.1.

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import {
  ExitedError,
  httpGet,
  repoRoot,
  spawnManaged,
  waitFor,
  type Dialer,
  type ManagedProcess,
} from './cluster/processes.ts';
import { scratchDir } from './scratch.ts';

export const CLI_SOURCE = path.join(repoRoot, 'src', 'cli', 'main.ts');

/** Both listeners on loopback, on ports the OS picks. */
export const LOOPBACK_LISTENERS = ['--host', '127.0.0.1', '--port', '0', '--health-port', '0'];

export interface DevCerts {
  dir: string;
  /** PEM of the CA that signed the serving certificate (a caBundle). */
  caPem: string;
  certPath: string;
  keyPath: string;
}

export interface DevCertsOptions {
  /** Where to write ca.crt, ca.key, tls.crt and tls.key; default a new scratch directory. */
  dir?: string;
  /** SANs besides localhost and 127.0.0.1 (Service names, node IPs). */
  extraSans?: readonly string[];
  /** Sign a new serving certificate with this CA (a leaf rotation), not a new CA. */
  signedBy?: DevCerts;
}

/** The development certificates `npm start` makes too: certs/generate.sh. */
export function makeDevCerts(options: DevCertsOptions = {}): DevCerts {
  const dir = options.dir ?? scratchDir('prestop-certs-');
  execFileSync(
    'bash',
    [path.join(repoRoot, 'certs', 'generate.sh'), dir, ...(options.extraSans ?? [])],
    {
      stdio: 'ignore',
      env: { ...process.env, ...(options.signedBy ? { CA_DIR: options.signedBy.dir } : {}) },
    },
  );
  return {
    dir,
    caPem: readFileSync(path.join(dir, 'ca.crt'), 'utf8'),
    certPath: path.join(dir, 'tls.crt'),
    keyPath: path.join(dir, 'tls.key'),
  };
}

export interface ServeOptions {
  /** More `serve` flags. Listeners, certificates and the cluster are set here. */
  args?: readonly string[];
  certs?: DevCerts;
  /** The cluster's kubeconfig (`--cluster on`); omitted: `--cluster off`. */
  kubeconfig?: string;
  /** Extra environment; PRESTOP_*, KUBECONFIG and in-cluster variables are cleared first. */
  env?: NodeJS.ProcessEnv;
  /** Run inside a real node's network namespace; its dialer reaches the health port. */
  netns?: { name: string; dial: Dialer };
  /** Another entry point (the built dist/cli/main.js, another checkout). */
  entry?: string;
  cwd?: string;
  /** Wait for /readyz (default); false: return once it listens. */
  waitReady?: boolean;
  readyTimeoutMs?: number;
}

export interface ServeProcess {
  proc: ManagedProcess;
  certs: DevCerts;
  webhookPort: number;
  healthPort: number;
  /** https://127.0.0.1:PORT/mutate, as a webhook configuration names it. */
  url: string;
  /** Every JSON line of its log so far. */
  logs(): Record<string, unknown>[];
  /** The log's last lines, for a failure message. */
  logTail(lines?: number): string;
  /** GET on its health listener: /healthz, /readyz, /metrics. */
  health(route: string): Promise<{ status: number; body: string }>;
  /** Exit code, or null when killed by a signal. */
  exited: Promise<number | null>;
  /** Sends the signal (SIGTERM: a graceful stop) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

function parsedLines(text: string): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // A line still being written.
    }
  }
  return lines;
}

export async function startServe(options: ServeOptions = {}): Promise<ServeProcess> {
  const certs = options.certs ?? makeDevCerts();
  const logPath = path.join(scratchDir('prestop-serve-'), 'serve.log');
  // The server reads these as option defaults: only the flags given count.
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith('PRESTOP_') || key === 'KUBECONFIG' || key === 'POD_NAMESPACE') {
      delete env[key];
    }
  }
  delete env['KUBERNETES_SERVICE_HOST'];
  const args = [
    options.entry ?? CLI_SOURCE,
    'serve',
    ...LOOPBACK_LISTENERS,
    ...['--tls-cert', certs.certPath, '--tls-key', certs.keyPath],
    ...(options.kubeconfig === undefined
      ? ['--cluster', 'off']
      : ['--cluster', 'on', '--kubeconfig', options.kubeconfig]),
    ...(options.args ?? []),
  ];
  const proc = spawnManaged('serve', process.execPath, args, logPath, {
    cwd: options.cwd ?? repoRoot,
    env: { ...env, ...options.env },
    ...(options.netns === undefined ? {} : { netns: options.netns.name, dieWithParent: true }),
  });
  const logs = () => parsedLines(readFileSync(logPath, 'utf8'));
  const timeoutMs = options.readyTimeoutMs ?? 30_000;
  let ports: { webhookPort: number; healthPort: number } | undefined;
  await waitFor('serve to listen', timeoutMs, async () => {
    if (proc.hasExited())
      throw new ExitedError(`serve exited before serving:\n${proc.logTail(30)}`);
    const serving = logs().find((line) => line['msg'] === 'prestop-injector serving');
    if (serving === undefined) return false;
    const port = (url: unknown) => Number(new URL(String(url)).port);
    ports = { webhookPort: port(serving['webhook']), healthPort: port(serving['health']) };
    return true;
  });
  const { webhookPort, healthPort } = ports!;
  const dial = options.netns?.dial;
  const health = (route: string) =>
    httpGet(`http://127.0.0.1:${healthPort}${route}`, dial === undefined ? {} : { dial });
  if (options.waitReady !== false) {
    await waitFor('serve /readyz', timeoutMs, async () => {
      if (proc.hasExited()) throw new ExitedError(`serve exited:\n${proc.logTail(30)}`);
      return (await health('/readyz').catch(() => ({ status: 0 }))).status === 200;
    });
  }
  const exited = proc.exited.then(({ code }) => code);
  return {
    proc,
    certs,
    webhookPort,
    healthPort,
    url: `https://127.0.0.1:${webhookPort}/mutate`,
    logs,
    logTail: (lines = 40) => proc.logTail(lines),
    health,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      // A graceful stop that hangs is ended after 30 s.
      if (signal === 'SIGTERM') await proc.stop(30_000);
      else if (!proc.hasExited()) proc.child.kill(signal);
      return exited;
    },
  };
}

/** Certificates mounted as Kubernetes mounts a Secret: tls.* -> ..data/tls.*, ..data -> ..vN. */
export interface SecretMount {
  /** The mount; serve reads `dir`/tls.crt and `dir`/tls.key. */
  dir: string;
  certs: DevCerts;
  /**
   * Swaps in new certificates as the kubelet updates a Secret (a new
   * ..vN, then one rename of the ..data link). The same CA signs them (as
   * cert-manager renews) unless `newCa`. Returns the new certificates.
   */
  rotate(newCa?: boolean): DevCerts;
}

export function secretMount(): SecretMount {
  const dir = scratchDir('prestop-secret-');
  const version = (n: number) => {
    mkdirSync(path.join(dir, `..v${n}`));
    return path.join(dir, `..v${n}`);
  };
  const first = makeDevCerts({ dir: version(1) });
  symlinkSync('..v1', path.join(dir, '..data'));
  symlinkSync('..data/tls.crt', path.join(dir, 'tls.crt'));
  symlinkSync('..data/tls.key', path.join(dir, 'tls.key'));
  let current = 1;
  return {
    dir,
    certs: { ...first, certPath: path.join(dir, 'tls.crt'), keyPath: path.join(dir, 'tls.key') },
    rotate(newCa = false) {
      current++;
      const next = makeDevCerts({
        dir: version(current),
        ...(newCa ? {} : { signedBy: first }),
      });
      symlinkSync(`..v${current}`, path.join(dir, '..data_tmp'));
      renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
      return next;
    },
  };
}
