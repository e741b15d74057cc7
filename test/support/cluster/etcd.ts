// etcd for a test control plane: one member, no fsync, data in the test's
// directory.

import path from 'node:path';
import { getFreePort } from '../free-port.ts';
import {
  ExitedError,
  httpGet,
  spawnManaged,
  waitFor,
  type Dialer,
  type ManagedProcess,
} from './processes.ts';

export interface StartEtcdOptions {
  /** Address to listen on; default 127.0.0.1. */
  host?: string;
  /** Fixed ports (e.g. inside a network namespace of the test's own); default: free ones. */
  clientPort?: number;
  peerPort?: number;
  /** Run in this network namespace (its probes then go through `dial`). */
  netns?: string;
  dial?: Dialer;
  dieWithParent?: boolean;
}

export interface Etcd {
  proc: ManagedProcess;
  /** e.g. http://127.0.0.1:2379 */
  clientUrl: string;
}

const ADDRESS_IN_USE = /address already in use/i;

export async function startEtcd(
  etcdBinary: string,
  dir: string,
  options: StartEtcdOptions = {},
): Promise<Etcd> {
  const host = options.host ?? '127.0.0.1';
  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const clientPort = options.clientPort ?? (await getFreePort());
    const peerPort = options.peerPort ?? (await getFreePort());
    const clientUrl = `http://${host}:${clientPort}`;
    const peerUrl = `http://${host}:${peerPort}`;
    const dataDir = path.join(dir, `etcd-data-${attempt}`);
    const logPath = path.join(dir, 'etcd.log');
    const proc = spawnManaged(
      'etcd',
      etcdBinary,
      [
        '--name=default',
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${clientUrl}`,
        `--advertise-client-urls=${clientUrl}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=default=${peerUrl}`,
        '--initial-cluster-state=new',
        // Test data; durability does not matter, speed does.
        '--unsafe-no-fsync=true',
        '--log-level=warn',
      ],
      logPath,
      {
        ...(options.netns === undefined ? {} : { netns: options.netns }),
        ...(options.dieWithParent ? { dieWithParent: true } : {}),
      },
    );
    try {
      await waitFor('etcd /health', 30_000, async () => {
        if (proc.hasExited()) throw new ExitedError('etcd exited');
        const res = await httpGet(`${clientUrl}/health`, {
          ...(options.dial ? { dial: options.dial } : {}),
        });
        return res.status === 200 && /"health":\s*"true"/.test(res.body);
      });
      return { proc, clientUrl };
    } catch (err) {
      await proc.stop();
      const tail = proc.logTail(40);
      lastError = new Error(
        `etcd did not become healthy: ${(err as Error).message}\n` +
          `----- last lines of ${logPath} -----\n${tail}`,
      );
      // Fixed ports cannot be retried with others.
      if (!ADDRESS_IN_USE.test(tail) || options.clientPort !== undefined) break;
    }
  }
  throw lastError ?? new Error('etcd failed to start');
}
