// The two servers under load, each in its own process as in production: the
// real `prestop-injector serve`, and the floor.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import {
  closeSync,
  constants,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getFreePorts } from '../support/free-port.ts';
import type { DevCerts } from '../support/serve.ts';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const DOCKERFILE = fileURLToPath(new URL('../../Dockerfile', import.meta.url));

/** The NODE_OPTIONS the image runs `serve` with: the webhook is measured as it runs there. */
export function imageNodeOptions(): string {
  return /^ENV NODE_OPTIONS=(.*)$/m.exec(readFileSync(DOCKERFILE, 'utf8'))?.[1]?.trim() ?? '';
}
const FLOOR = fileURLToPath(new URL('./floor.ts', import.meta.url));
const LOG_COUNT = fileURLToPath(new URL('./log-count.ts', import.meta.url));

export interface ServerProcess {
  port: number;
  pid: number;
  healthPort?: number;
  child: ChildProcess;
  stop(): Promise<void>;
}

/**
 * With two CPUs or more, the load generator (this process, and the log
 * reader) runs on CPU 0 and the server under load on CPU 1, so neither
 * waits for the other's core and the scheduler cannot stack them on one:
 * that was most of the run-to-run spread. Null when it cannot be done.
 */
export const CPUS = (() => {
  if (availableParallelism() < 2) return null;
  const probe = spawnSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' });
  return probe.status === 0 ? { client: 0, server: 1 } : null;
})();

/** Every thread of `pid` on `cpu`; new threads inherit it. */
export function pin(pid: number, cpu: number): void {
  const run = spawnSync('taskset', ['-a', '-cp', String(cpu), String(pid)], { stdio: 'ignore' });
  if (run.status !== 0) throw new Error(`taskset could not pin ${pid} to CPU ${cpu}`);
}

function pinServer(child: ChildProcess): void {
  if (CPUS !== null) pin(child.pid!, CPUS.server);
}

function stopper(child: ChildProcess): () => Promise<void> {
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
}

async function waitUntil(check: () => Promise<boolean>, what: string, child: ChildProcess) {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what} did not start in 30 s`);
}

/** Another checkout's CLI: src/cli/main.ts, or src/cli.ts before the rooms (a before/after). */
function checkoutEntry(checkout: string): string {
  const entry = join(checkout, 'src', 'cli', 'main.ts');
  return existsSync(entry) ? entry : join(checkout, 'src', 'cli.ts');
}

export interface WebhookOptions {
  certs: DevCerts;
  /** Extra node flags, such as --cpu-prof. */
  nodeArgs?: string[];
  /** Another checkout of this project (with its node_modules) to run instead of this one. */
  checkout?: string;
}

export interface WebhookProcess extends ServerProcess {
  /** What the webhook's log held, known once it has stopped. */
  log: Promise<{ lines: number; admissions: number }>;
}

/**
 * `prestop-injector serve` with no cluster, injection on by default,
 * Kubernetes 1.33. Its log goes down a pipe of its own, as to a container
 * runtime, read by a process apart from the load generator (log-count.ts)
 * that counts the admissions it records. The pipe is a FIFO opened here for
 * writing: a blocking file description of the webhook's alone. (A pipe end
 * of this process's, handed down, is non-blocking, and a full pipe then
 * makes pino's writer retry on EAGAIN, which no container runtime's pipe
 * does.)
 */
export async function startWebhook(options: WebhookOptions): Promise<WebhookProcess> {
  const [port, healthPort] = await getFreePorts(2);
  const fifo = join(mkdtempSync(join(tmpdir(), 'prestop-bench-log-')), 'log');
  const made = spawnSync('mkfifo', [fifo]);
  if (made.status !== 0) throw new Error(`mkfifo: ${made.stderr.toString()}`);
  // Read end first (a FIFO opened for writing waits for a reader), then the
  // write end, before the reader starts: it never sees a FIFO with no writer.
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const logFd = openSync(fifo, 'w');
  const counter = spawn(process.execPath, [LOG_COUNT], { stdio: [readFd, 'pipe', 'inherit'] });
  closeSync(readFd);
  if (CPUS !== null) pin(counter.pid!, CPUS.client);
  let counted = '';
  counter.stdout!.on('data', (chunk: Buffer) => (counted += chunk.toString()));
  const log = new Promise<{ lines: number; admissions: number }>((resolve, reject) =>
    counter.once('exit', (code) =>
      code === 0
        ? resolve(JSON.parse(counted) as { lines: number; admissions: number })
        : reject(new Error(`the log counter exited with ${code}`)),
    ),
  );
  const child = spawn(
    process.execPath,
    [
      ...(options.nodeArgs ?? []),
      options.checkout === undefined ? CLI : checkoutEntry(options.checkout),
      'serve',
      ...['--host', '127.0.0.1', '--port', String(port), '--health-port', String(healthPort)],
      ...['--tls-cert', options.certs.certPath, '--tls-key', options.certs.keyPath],
      ...['--cluster', 'off', '--kube-version', '1.33', '--inject-default', 'enabled'],
    ],
    {
      stdio: ['ignore', logFd, 'inherit'],
      env: { ...process.env, KUBECONFIG: '', NODE_OPTIONS: imageNodeOptions() },
    },
  );
  pinServer(child);
  // The webhook holds the pipe now; the counter sees its end when the webhook exits.
  closeSync(logFd);
  rmSync(dirname(fifo), { recursive: true, force: true });
  await waitUntil(
    async () => (await fetch(`http://127.0.0.1:${healthPort}/readyz`)).ok,
    'the webhook',
    child,
  );
  return {
    port: port!,
    pid: child.pid!,
    healthPort: healthPort!,
    child,
    stop: stopper(child),
    log,
  };
}

export async function startFloor(certs: DevCerts, nodeArgs: string[] = []): Promise<ServerProcess> {
  const child = spawn(process.execPath, [...nodeArgs, FLOOR, certs.certPath, certs.keyPath, '0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  pinServer(child);
  const port = await new Promise<number>((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('\n')) resolve(Number(text.trim()));
    });
    child.once('exit', (code) => reject(new Error(`the floor exited with ${code}`)));
  });
  return { port, pid: child.pid!, child, stop: stopper(child) };
}
