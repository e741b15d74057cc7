// Processes and temporary directories of the tests, and the one registry that
// undoes them when the test process exits (normally, on an uncaught error, or
// on SIGINT/SIGTERM/SIGHUP): children are SIGKILLed, registered exit actions
// run (unmounts, network namespaces), then directories are removed.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

/** Keep temp dirs (logs, data) after stop, for debugging. */
export const keepTmp = process.env['PRESTOP_E2E_KEEP_TMP'] === '1';

// ------------------------------------------------------ cleanup registry

const liveChildren = new Set<ChildProcess>();
const liveDirs = new Set<string>();
const exitActions = new Set<() => void>();
let exitHooksInstalled = false;

function cleanupSync(): void {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  liveChildren.clear();
  // Last registered first: what was set up last is torn down first.
  for (const action of [...exitActions].reverse()) {
    try {
      action();
    } catch {
      // best effort: the other actions still run
    }
  }
  exitActions.clear();
  if (!keepTmp) {
    for (const dir of liveDirs) {
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  }
  liveDirs.clear();
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.once('exit', cleanupSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      cleanupSync();
      // The `once` listener is gone now: re-raise for the default behaviour.
      process.kill(process.pid, signal);
    });
  }
}

/** Removes `dir` (recursively) when the process exits, unless forgotten first. */
export function trackDirectory(dir: string): void {
  installExitHooks();
  liveDirs.add(dir);
}

/** Removes `dir` now (unless PRESTOP_E2E_KEEP_TMP=1) and forgets it. */
export async function removeDirectory(dir: string): Promise<void> {
  liveDirs.delete(dir);
  if (!keepTmp) await fsp.rm(dir, { recursive: true, force: true });
}

/** A new directory under the OS temp dir, removed on exit. */
export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  trackDirectory(dir);
  return dir;
}

/**
 * Runs `action` (synchronously, best effort) when the process exits, after
 * the children are killed and before the directories are removed. Returns a
 * function that unregisters it, for when the work was undone normally.
 */
export function onExit(action: () => void): () => void {
  installExitHooks();
  exitActions.add(action);
  return () => exitActions.delete(action);
}

// ------------------------------------------------------ managed processes

/** A child process whose output goes to a log file, killed on process exit. */
export interface ManagedProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logPath: string;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True once the process has exited. */
  hasExited(): boolean;
  /** Last `lines` lines of the log file. */
  logTail(lines?: number): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnManagedOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Run as this user and group (e.g. a container's runAsUser). */
  uid?: number;
  gid?: number;
  /**
   * Run in this network namespace (`ip netns add NAME`), entered with
   * nsenter: unlike `ip netns exec`, it keeps the mount namespace, so
   * containerd's and the kubelet's mounts are seen by each other.
   */
  netns?: string;
  /**
   * The kernel SIGKILLs the process when the test process dies, even by
   * SIGKILL, when no exit hook runs.
   */
  dieWithParent?: boolean;
}

/** The argv prefix that enters a network namespace made by `ip netns add`. */
export function netnsArgv(netns: string): string[] {
  return ['nsenter', `--net=/run/netns/${netns}`, '--'];
}

/**
 * Spawns `command args` with stdout and stderr appended to `logPath`. The
 * process is SIGKILLed if this Node process exits (or gets SIGINT/SIGTERM)
 * before it is stopped.
 */
export function spawnManaged(
  name: string,
  command: string,
  args: readonly string[],
  logPath: string,
  options: SpawnManagedOptions = {},
): ManagedProcess {
  installExitHooks();
  // nsenter and setpriv exec the command: the child's pid stays the command's.
  const argv = [
    ...(options.netns === undefined ? [] : netnsArgv(options.netns)),
    ...(options.dieWithParent ? ['setpriv', '--pdeathsig', 'KILL', '--'] : []),
    command,
    ...args,
  ];
  const fd = fs.openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(argv[0]!, argv.slice(1), {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', fd, fd],
      ...(options.uid === undefined ? {} : { uid: options.uid }),
      ...(options.gid === undefined ? {} : { gid: options.gid }),
    });
  } finally {
    fs.closeSync(fd);
  }
  liveChildren.add(child);
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (done) return;
      done = true;
      liveChildren.delete(child);
      resolve({ code, signal });
    };
    child.once('exit', finish);
    child.once('error', (err) => {
      fs.appendFileSync(logPath, `\n[spawn error] ${String(err)}\n`);
      finish(null, null);
    });
  });
  return {
    name,
    child,
    logPath,
    exited,
    hasExited: () => done,
    logTail: (lines = 40) => tailFile(logPath, lines),
    async stop(graceMs = 10_000) {
      if (done) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!done) child.kill('SIGKILL');
      }, graceMs);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

export function tailFile(file: string, lines = 40): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    return `(cannot read ${file}: ${String(err)})`;
  }
  const all = text.trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}

/** Log tails of several processes, for failure messages. */
export function formatTails(procs: readonly ManagedProcess[], lines: number): string {
  return procs
    .map(
      (p) => `----- last ${lines} lines of ${p.name} log (${p.logPath}) -----\n${p.logTail(lines)}`,
    )
    .join('\n');
}

// ------------------------------------------------------- short commands

/** Runs a command to its end, collecting its output; killed after `timeoutMs`. */
export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCommand(
  file: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      env: options.env ?? process.env,
      cwd: options.cwd ?? repoRoot,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    // A command that exits without reading its input closes the pipe (EPIPE).
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** runCommand that rejects, with the command's output, unless it exits 0. */
export async function mustRun(
  file: string,
  args: readonly string[],
  options: Parameters<typeof runCommand>[2] = {},
): Promise<string> {
  const result = await runCommand(file, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${file} ${args.join(' ')} failed (exit ${result.code}):\n${result.stderr}${result.stdout}`,
    );
  }
  return result.stdout;
}

// ------------------------------------------------------------- waiting

/** Thrown from a waitFor check to stop waiting at once (a process exited). */
export class ExitedError extends Error {}

/** Polls `check` every 250 ms until it returns true or `timeoutMs` passes. */
export async function waitFor(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
  intervalMs = 250,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      if (err instanceof ExitedError) throw err;
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const detail = lastError === undefined ? '' : ` (last error: ${String(lastError)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Opens the TCP connection for a request another way (e.g. into a network namespace). */
export type Dialer = (host: string, port: number) => Promise<net.Socket>;

/** A GET for readiness probes: status and body, 5 s timeout, no keep-alive. */
export async function httpGet(
  url: string,
  opts: { ca?: string; token?: string; dial?: Dialer },
): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  const secure = u.protocol === 'https:';
  const raw = opts.dial
    ? await opts.dial(u.hostname, Number(u.port || (secure ? 443 : 80)))
    : undefined;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (opts.token) headers['Authorization'] = `Bearer ${opts.token}`;
    const onResponse = (res: http.IncomingMessage): void => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    };
    let req: http.ClientRequest;
    if (raw === undefined) {
      req = secure
        ? https.get(u, { headers, ca: opts.ca, agent: false }, onResponse)
        : http.get(u, { headers, agent: false }, onResponse);
    } else {
      // A dialled socket: TLS (if any) runs over it, checked against u's host.
      const socket = secure
        ? tls.connect({
            socket: raw,
            ca: opts.ca,
            // `host` is what the certificate is checked against.
            host: u.hostname,
            servername: tlsServerName(u.hostname),
          })
        : raw;
      // Errors before the request takes the socket over are this request's too.
      socket.once('error', reject);
      req = http.get(
        { host: u.hostname, path: u.pathname + u.search, headers, createConnection: () => socket },
        onResponse,
      );
    }
    req.setTimeout(5_000, () => req.destroy(new Error(`request to ${url} timed out`)));
    req.on('error', (err) => {
      raw?.destroy();
      reject(err);
    });
  });
}

/** SNI takes host names only; an IP address is checked against the IP SANs without it. */
function tlsServerName(host: string): string | undefined {
  return net.isIP(host) === 0 ? host : undefined;
}

// ------------------------------------------------------- test failures

/** Anything that can show its log tail. */
export interface HasLogTail {
  logTail(lines: number): string;
}

/**
 * A test-body wrapper that prints the webhook's and the control plane's log
 * tails when the body fails: the logs that explain an e2e failure.
 */
export function logsOnFailure(
  processes: () => {
    webhook?: HasLogTail | undefined;
    cp?: { logTails(lines?: number): string } | undefined;
  },
  webhookLines = 40,
): (fn: () => Promise<void>) => Promise<void> {
  const logs = () => {
    const { webhook, cp } = processes();
    return [
      webhook ? `----- webhook log -----\n${webhook.logTail(webhookLines)}` : '',
      cp ? cp.logTails(20) : '',
    ]
      .filter(Boolean)
      .join('\n');
  };
  return async (fn) => {
    try {
      await fn();
    } catch (err) {
      console.error(logs());
      throw err;
    }
  };
}
