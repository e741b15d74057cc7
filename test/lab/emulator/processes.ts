// Every process and network namespace the lab creates goes through here, so
// that one synchronous cleanup can undo all of it on any exit.
//
// Processes are started through `setpriv --pdeathsig KILL`: if the lab itself
// is killed with SIGKILL (no cleanup runs), the kernel still kills them.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';

/** Network namespace names start with this, then the lab's pid. */
export const NS_PREFIX = 'plab-';

const children = new Set<ChildProcess>();
const namespaces = new Set<string>();
const directories = new Set<string>();

export function trackNamespace(name: string): void {
  namespaces.add(name);
}

export function forgetNamespace(name: string): void {
  namespaces.delete(name);
}

export function trackDirectory(path: string): void {
  directories.add(path);
}

/** The pids of every process inside a network namespace. */
export function pidsIn(ns: string): number[] {
  const result = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
  if (result.status !== 0) return [];
  return result.stdout
    .split('\n')
    .map((line) => Number(line.trim()))
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Kills every process in the namespace, then deletes it. Synchronous. */
export function destroyNamespaceSync(ns: string): void {
  for (const pid of pidsIn(ns)) killQuietly(pid, 'SIGKILL');
  spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
}

/** Undoes everything still tracked. Safe to call more than once. */
export function cleanupSync(): void {
  for (const child of children) {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue;
    // Hooks run in their own process group (a shell and its `sleep`).
    killQuietly(-child.pid, 'SIGKILL');
    killQuietly(child.pid, 'SIGKILL');
  }
  children.clear();
  for (const ns of namespaces) destroyNamespaceSync(ns);
  namespaces.clear();
  for (const dir of directories) rmSync(dir, { recursive: true, force: true });
  directories.clear();
}

/**
 * Namespaces left by an earlier lab run that was killed before it could clean
 * up (its pid is gone). Only names with the lab's own prefix are considered.
 */
export function removeStaleNamespaces(): string[] {
  const listed = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  if (listed.status !== 0) return [];
  const removed: string[] = [];
  for (const line of listed.stdout.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const match = new RegExp(`^${NS_PREFIX}(\\d+)-`).exec(name);
    if (match === null || Number(match[1]) === process.pid || isAlive(Number(match[1]))) continue;
    destroyNamespaceSync(name);
    removed.push(name);
  }
  return removed;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let installed = false;

/** Cleanup on normal exit, on signals, and on crashes. */
export function installCleanupHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      process.stderr.write(`\nlab: ${signal}, cleaning up\n`);
      cleanupSync();
      process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
    });
  }
  process.on('uncaughtException', (error) => {
    process.stderr.write(`lab: ${error.stack ?? String(error)}\n`);
    cleanupSync();
    process.exit(1);
  });
  process.on('unhandledRejection', (reason) => {
    process.stderr.write(`lab: unhandled rejection: ${String(reason)}\n`);
    cleanupSync();
    process.exit(1);
  });
}

export interface RunOptions {
  /** Network namespace to run in; the root namespace when absent. */
  ns?: string;
  /** Run as this uid (and the same gid), as a container's user. */
  uid?: number;
  /**
   * With `uid`: may still read any file (CAP_DAC_READ_SEARCH). The lab's
   * container images are scripts in the checkout, which may sit where other
   * uids cannot read (under /root, say). Nothing else about the user changes.
   */
  readAnyFile?: boolean;
  /** A process group of its own, so its children can be killed with it. */
  group?: boolean;
  stdin?: 'pipe' | 'ignore';
  env?: Record<string, string>;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LabProcess {
  child: ChildProcess;
  exited: Promise<Exit>;
  /** Resolves with the first stdout line that satisfies the test. */
  waitForLine(test: (line: string) => boolean, timeoutMs: number): Promise<string>;
  /** The last few KB of stdout and stderr, for error messages. */
  output(): string;
  running(): boolean;
  signal(signal: NodeJS.Signals): void;
}

const CONTAINER_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' };
const OUTPUT_LIMIT = 4096;

/** The argv that runs `argv` in a namespace as a user, dying with the lab. */
export function wrapArgv(argv: readonly string[], options: RunOptions): string[] {
  const user =
    options.uid === undefined
      ? []
      : ['--reuid', String(options.uid), '--regid', String(options.uid), '--clear-groups'];
  if (options.uid !== undefined && options.readAnyFile === true) {
    user.push('--inh-caps', '+dac_read_search', '--ambient-caps', '+dac_read_search');
  }
  const setpriv = ['setpriv', ...user, '--pdeathsig', 'KILL', '--', ...argv];
  return options.ns === undefined ? setpriv : ['ip', 'netns', 'exec', options.ns, ...setpriv];
}

export function runProcess(argv: readonly string[], options: RunOptions = {}): LabProcess {
  const [command, ...args] = wrapArgv(argv, options);
  const child = spawn(command!, args, {
    stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
    detached: options.group === true,
    env: { ...CONTAINER_ENV, ...options.env },
  });
  children.add(child);
  let tail = '';
  let partial = '';
  const lineListeners = new Set<(line: string) => void>();
  const keep = (text: string) => {
    tail = (tail + text).slice(-OUTPUT_LIMIT);
  };
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    keep(chunk);
    partial += chunk;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) for (const listener of lineListeners) listener(line);
  });
  child.stderr!.on('data', keep);

  const exited = new Promise<Exit>((resolve) => {
    child.once('error', (error) => {
      keep(`\n${error.message}\n`);
      children.delete(child);
      resolve({ code: -1, signal: null });
    });
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });

  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    child,
    exited,
    output: () => tail,
    running,
    signal(signal) {
      if (child.pid === undefined || !running()) return;
      killQuietly(options.group === true ? -child.pid : child.pid, signal);
    },
    waitForLine(test, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          lineListeners.delete(listener);
          reject(new Error(`no matching output within ${timeoutMs} ms from ${argv.join(' ')}`));
        }, timeoutMs);
        const listener = (line: string) => {
          if (!test(line)) return;
          clearTimeout(timer);
          lineListeners.delete(listener);
          resolve(line);
        };
        lineListeners.add(listener);
        void exited.then((exit) => {
          if (!lineListeners.has(listener)) return;
          clearTimeout(timer);
          lineListeners.delete(listener);
          reject(
            new Error(
              `${argv.join(' ')} exited (${exit.code ?? exit.signal}) before it was ready:\n${tail}`,
            ),
          );
        });
      });
    },
  };
}

/** Runs a short command to completion; throws with its stderr on failure. */
export function runCommand(argv: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const [command, ...args] = argv;
    const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${argv.join(' ')} failed (${code}): ${err.trim()}`));
    });
  });
}
