// Starts `prestop-injector serve` as a real child process and finds its ports
// from its startup log line.

import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Both listeners on loopback, on ports the OS picks. */
export const LOOPBACK_LISTENERS = ['--port', '0', '--health-port', '0', '--host', '127.0.0.1'];

export const CLI_SOURCE = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface ServeProcess {
  child: ChildProcess;
  webhookPort: number;
  healthPort: number;
  /** Every log line so far, parsed. */
  logs: Record<string, unknown>[];
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startServeProcess(
  args: string[],
  options: { entry?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<ServeProcess> {
  const child = spawn(
    process.execPath,
    [options.entry ?? CLI_SOURCE, 'serve', ...LOOPBACK_LISTENERS, ...args],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, KUBECONFIG: '', ...options.env },
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    },
  );
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  const ports = await new Promise<{ webhookPort: number; healthPort: number }>(
    (resolve, reject) => {
      let buffer = '';
      const timer = setTimeout(
        () => reject(new Error(`serve did not start in 20 s: ${stderr}`)),
        20_000,
      );
      child.stdout!.on('data', (chunk: Buffer) => {
        buffer += chunk.toString();
        let newline: number;
        while ((newline = buffer.indexOf('\n')) !== -1) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          try {
            const entry = JSON.parse(line) as Record<string, unknown>;
            logs.push(entry);
            if (entry['msg'] === 'prestop-injector serving') {
              clearTimeout(timer);
              const port = (url: unknown) => Number(new URL(String(url)).port);
              resolve({ webhookPort: port(entry['webhook']), healthPort: port(entry['health']) });
            }
          } catch {
            // not a log line
          }
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`serve exited with ${code} before serving: ${stderr}`));
      });
    },
  );
  return {
    child,
    ...ports,
    logs,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
}
