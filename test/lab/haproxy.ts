// The load balancer: HAProxy (Debian package) in the node's network
// namespace, with server slots that the endpoint propagation fills and empties
// through the runtime API, as an ingress controller does when EndpointSlices
// change.
//
// Retries mirror ingress-nginx's defaults (`proxy-next-upstream: error
// timeout`, 3 tries, `proxy-connect-timeout: 5s`) with nginx's rule for
// non-idempotent methods: a failed connection is retried for every method,
// since nothing was sent; once a request has been sent, only idempotent ones
// are retried (POST, PATCH and LOCK are not). A 5xx answer is never retried.

import { connect } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const FRONTEND_PORT = 8000;
export const BACKEND = 'pods';
export const SLOTS = 16;
export const CONNECT_TIMEOUT_SECONDS = 5;

export function haproxyConfig(adminSocket: string): string {
  return [
    'global',
    `  stats socket ${adminSocket} mode 600 level admin`,
    '  nbthread 1',
    '  maxconn 4096',
    '',
    'defaults',
    '  mode http',
    `  timeout connect ${CONNECT_TIMEOUT_SECONDS}s`,
    '  timeout client 60s',
    '  timeout server 60s',
    '  timeout http-keep-alive 60s',
    // 3 tries in all, each on another server when one is left.
    '  retries 2',
    '  option redispatch 1',
    '  retry-on conn-failure empty-response response-timeout',
    // Pooled server connections, as nginx's upstream keepalive.
    '  http-reuse always',
    '',
    'frontend web',
    `  bind 127.0.0.1:${FRONTEND_PORT}`,
    '  http-request disable-l7-retry if METH_POST || { method PATCH LOCK }',
    `  default_backend ${BACKEND}`,
    '',
    `backend ${BACKEND}`,
    '  balance roundrobin',
    // No health checks: like kube-proxy and ingress-nginx, only endpoint
    // changes take a server in or out.
    `  server-template slot 1-${SLOTS} 127.0.0.1:1 disabled`,
    '',
  ].join('\n');
}

/** How HAProxy's process is started (in which namespace, tracked by whom). */
export type HaproxyLauncher = (argv: string[]) => {
  running(): boolean;
  stop(): void;
  output(): string;
};

export class Haproxy {
  readonly adminSocket: string;
  private readonly directory: string;
  private process: ReturnType<HaproxyLauncher> | undefined;

  constructor(directory: string) {
    this.directory = directory;
    this.adminSocket = join(directory, 'haproxy.sock');
  }

  async start(launch: HaproxyLauncher): Promise<void> {
    const file = join(this.directory, 'haproxy.cfg');
    await writeFile(file, haproxyConfig(this.adminSocket));
    this.process = launch(['haproxy', '-f', file, '-db']);
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (!this.process.running()) {
        throw new Error(`haproxy exited at start:\n${this.process.output()}`);
      }
      try {
        await this.command('show info');
        return;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  /** One runtime API command; resolves with HAProxy's answer. */
  command(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect(this.adminSocket, () => socket.end(`${line}\n`));
      let answer = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (answer += chunk));
      socket.on('error', reject);
      socket.on('close', () => resolve(answer.trim()));
    });
  }

  async enable(slot: number, ip: string, port: number): Promise<void> {
    const server = `${BACKEND}/slot${slot}`;
    // "changed", or "no need to change" when the slot had this address before.
    expectQuiet(await this.command(`set server ${server} addr ${ip} port ${port}`), /change/);
    expectQuiet(await this.command(`set server ${server} state ready`));
  }

  async disable(slot: number): Promise<void> {
    expectQuiet(await this.command(`set server ${BACKEND}/slot${slot} state maint`));
  }

  running(): boolean {
    return this.process?.running() ?? false;
  }

  stop(): void {
    this.process?.stop();
  }

  log(): string {
    return this.process?.output() ?? '';
  }
}

/** Runtime API commands answer nothing on success, or an expected note. */
function expectQuiet(answer: string, allowed?: RegExp): void {
  if (answer === '' || (allowed !== undefined && allowed.test(answer))) return;
  throw new Error(`haproxy runtime API: ${answer}`);
}
