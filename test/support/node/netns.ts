// The node's network namespace: the node IP, the pod network and the
// ClusterIP range exist only there. The test process stays outside it and
// reaches addresses inside it through a dialer process that runs in it.

import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ExitedError,
  mustRun,
  netnsArgv,
  spawnManaged,
  waitFor,
  type ManagedProcess,
} from '../cluster/processes.ts';

/** The node's interface: a bridge with no ports (the dummy link type is not available here). */
export const NODE_INTERFACE = 'node0';

/** Creates the namespace with loopback up, the node interface and the sysctls a node needs. */
export async function createNetns(name: string, nodeIP: string): Promise<void> {
  await mustRun('ip', ['netns', 'add', name]);
  const ip = (...args: string[]) => mustRun('ip', ['-n', name, ...args]);
  await ip('link', 'set', 'lo', 'up');
  await ip('link', 'add', NODE_INTERFACE, 'type', 'bridge');
  await ip('link', 'set', NODE_INTERFACE, 'up');
  await addNodeAddress(name, nodeIP);
  // Only so that route lookups for ClusterIPs succeed; kube-proxy's DNAT
  // then sends the packets to a pod.
  await ip('route', 'add', 'default', 'dev', NODE_INTERFACE);
  await runInNetns(name, 'sysctl', [
    '-q',
    '-w',
    'net.ipv4.ip_forward=1',
    'net.bridge.bridge-nf-call-iptables=1',
  ]);
}

/** Another node IP on the node interface (a second kubelet's). */
export async function addNodeAddress(netns: string, nodeIP: string): Promise<void> {
  await mustRun('ip', ['-n', netns, 'addr', 'add', `${nodeIP}/32`, 'dev', NODE_INTERFACE]);
}

/** Runs a short command inside the namespace; rejects unless it exits 0. */
export function runInNetns(netns: string, command: string, args: readonly string[]) {
  const [enter, ...enterArgs] = netnsArgv(netns);
  return mustRun(enter!, [...enterArgs, command, ...args]);
}

const dialerProgram = fileURLToPath(new URL('./netns-dialer.ts', import.meta.url));

/** Opens TCP connections inside a network namespace, for the test process outside it. */
export interface NetnsDialer {
  proc: ManagedProcess;
  /** A connection to host:port as seen from inside the namespace. */
  dial(host: string, port: number): Promise<net.Socket>;
  /**
   * A port on the host's 127.0.0.1 that leads to host:port inside the
   * namespace (e.g. the API server, for API clients in the test process).
   */
  forward(host: string, port: number): Promise<{ port: number; close(): void }>;
}

export async function startNetnsDialer(netns: string, dir: string): Promise<NetnsDialer> {
  const socketPath = path.join(dir, 'dialer.sock');
  const proc = spawnManaged(
    'netns-dialer',
    process.execPath,
    [dialerProgram, socketPath],
    path.join(dir, 'netns-dialer.log'),
    { netns, dieWithParent: true },
  );
  await waitFor('the netns dialer', 10_000, async () => {
    if (proc.hasExited()) throw new ExitedError(`netns dialer exited:\n${proc.logTail()}`);
    return /^ready$/m.test(proc.logTail(5));
  });

  const dial = (host: string, port: number): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const socket = net.connect(socketPath);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        socket.write(`${host}:${port}\n`);
        resolve(socket);
      });
    });

  const servers = new Set<net.Server>();
  const forward = (host: string, port: number) =>
    new Promise<{ port: number; close(): void }>((resolve, reject) => {
      const server = net.createServer((client) => {
        client.on('error', () => client.destroy());
        dial(host, port).then(
          (upstream) => {
            upstream.on('error', () => client.destroy());
            client.on('close', () => upstream.destroy());
            upstream.on('close', () => client.destroy());
            client.pipe(upstream);
            upstream.pipe(client);
          },
          () => client.destroy(),
        );
      });
      // Open client connections must not keep the test process alive.
      server.unref();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        servers.add(server);
        const address = server.address() as net.AddressInfo;
        resolve({
          port: address.port,
          close: () => {
            servers.delete(server);
            server.close();
          },
        });
      });
    });

  const stop = proc.stop.bind(proc);
  return {
    proc: {
      ...proc,
      async stop(graceMs?: number) {
        for (const server of servers) server.close();
        servers.clear();
        await stop(graceMs);
      },
    },
    dial,
    forward,
  };
}
