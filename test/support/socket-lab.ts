// Runs one hook script against real sockets, inside a fresh network
// namespace (the pod) so /proc/net/tcp holds only what the scenario opens.
// Peers "from outside" connect from a second namespace (another host),
// joined to the pod by a veth pair, as a load balancer or client pod would.
//
//   unshare --net node test/support/socket-lab.ts '<scenario JSON>'
//
// Prints one JSON line: { elapsedMs, exitCode, table }, table being the
// pod's /proc/net/tcp as the hook started.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

interface Connection {
  /** uid of the process that listens and connects; default: this process (root). */
  uid?: number;
  /** Connect over loopback, as a container of the same pod would; default: from outside. */
  loopback?: boolean;
  /**
   * An outbound connection of the app, sent through Istio-like capture: an
   * iptables OUTPUT REDIRECT to the proxy's port 15001 on this pod.
   */
  captured?: boolean;
  /** The client closes it after this many ms; omit to hold it until the script ends. */
  closeAfterMs?: number;
  /** Send a byte every 250 ms for this many ms, then stay idle. */
  chattyMs?: number;
  /** TCP keepalive on the client: probes once idle this long (whole seconds), then every second. */
  keepAliveMs?: number;
}

interface Scenario {
  shell: string[];
  script: string;
  connections: Connection[];
}

const scenario = JSON.parse(process.argv[2] ?? '{}') as Scenario;
const POD_ADDRESS = '10.213.0.1';
const OUTSIDE_ADDRESS = '10.213.0.2';
/** Where the app's captured outbound calls are headed, before the redirect. */
const UPSTREAM_PORT = 9999;
const PROXY_OUTBOUND_PORT = 15001;

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args);
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')}: ${result.stderr.toString()}`);
  }
}

/**
 * A client's behaviour, in a process of its own: connect, then chatter,
 * keep alive or close as told. Runs in the pod or in the outside namespace.
 */
const CLIENT = `
const net = require('node:net');
const readline = require('node:readline');
process.stdout.write('ready\\n');
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const c = JSON.parse(line);
  const socket = net.connect(c.port, c.host, () => {
    if (c.keepAliveMs !== undefined) socket.setKeepAlive(true, c.keepAliveMs);
    if (c.chattyMs !== undefined) {
      const ticker = setInterval(() => socket.write('.'), 250);
      setTimeout(() => clearInterval(ticker), c.chattyMs);
    }
    // The client closes, as a load balancer purging an idle pooled
    // connection does; the server end closes when it sees that.
    if (c.closeAfterMs !== undefined) setTimeout(() => socket.end(), c.closeAfterMs);
    process.stdout.write('connected\\n');
  });
  socket.on('error', () => {});
});`;

interface Client {
  child: ChildProcess;
  open(connection: Connection & { host: string; port: number }): Promise<void>;
}

/** A client process, started by `command` (e.g. in a namespace of its own), once it runs. */
async function startClient(command: string[]): Promise<Client> {
  const child = spawn(command[0]!, [...command.slice(1), process.execPath, '-e', CLIENT], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! });
  const waiting: (() => void)[] = [];
  lines.on('line', () => waiting.shift()?.());
  await new Promise<void>((resolve) => waiting.push(resolve));
  return {
    child,
    open(connection) {
      return new Promise((resolve) => {
        waiting.push(resolve);
        child.stdin!.write(`${JSON.stringify(connection)}\n`);
      });
    },
  };
}

// The outside host: its own namespace, joined to this one by a veth pair.
const outside = await startClient(['unshare', '--net']);
const outsideNet = `/proc/${outside.child.pid}/ns/net`;
run('ip', ['link', 'set', 'lo', 'up']);
run('ip', ['link', 'add', 'pod0', 'type', 'veth', 'peer', 'name', 'out0', 'netns', outsideNet]);
run('ip', ['addr', 'add', `${POD_ADDRESS}/24`, 'dev', 'pod0']);
run('ip', ['link', 'set', 'pod0', 'up']);
for (const args of [
  ['addr', 'add', `${OUTSIDE_ADDRESS}/24`, 'dev', 'out0'],
  ['link', 'set', 'out0', 'up'],
  ['link', 'set', 'lo', 'up'],
]) {
  run('nsenter', [`--net=${outsideNet}`, 'ip', ...args]);
}
// Istio's outbound capture, reduced to the one rule that matters here.
run('iptables', [
  ...['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', OUTSIDE_ADDRESS],
  ...[
    '--dport',
    String(UPSTREAM_PORT),
    '-j',
    'REDIRECT',
    '--to-ports',
    String(PROXY_OUTBOUND_PORT),
  ],
]);

const sockets: Socket[] = [];
const children: ChildProcess[] = [outside.child];
const listen = async (port: number) => {
  const server = createServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => server.listen(port, '0.0.0.0', resolve));
  return server;
};
const app = await listen(0);
const appPort = (app.address() as { port: number }).port;
const proxy = await listen(PROXY_OUTBOUND_PORT);
const inPod = await startClient(['env']);
children.push(inPod.child);

// A process of another uid that listens, connects to itself, and holds both ends.
const FOREIGN = `
const net = require('node:net');
const server = net.createServer((s) => {});
server.listen(0, '127.0.0.1', () => {
  const c = net.connect(server.address().port, '127.0.0.1', () => process.stdout.write('ready\\n'));
  const ms = Number(process.env.HOLD_MS);
  if (ms >= 0) setTimeout(() => process.exit(0), ms);
});`;

for (const connection of scenario.connections) {
  if (connection.uid !== undefined) {
    // setpriv rather than spawn's uid: the checkout (and this Node binary) may
    // sit where other uids cannot search, so keep CAP_DAC_READ_SEARCH; it
    // changes nothing about who owns the sockets.
    const uid = String(connection.uid);
    const user = ['--reuid', uid, '--regid', uid, '--clear-groups'];
    const caps = ['--inh-caps', '+dac_read_search', '--ambient-caps', '+dac_read_search'];
    const child = spawn('setpriv', [...user, ...caps, '--', process.execPath, '-e', FOREIGN], {
      env: { HOLD_MS: String(connection.closeAfterMs ?? -1) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (code) =>
        reject(new Error(`helper of uid ${connection.uid} exited (${code})`)),
      );
    });
  } else if (connection.captured === true) {
    await inPod.open({ ...connection, host: OUTSIDE_ADDRESS, port: UPSTREAM_PORT });
  } else if (connection.loopback === true) {
    await inPod.open({ ...connection, host: '127.0.0.1', port: appPort });
  } else {
    await outside.open({ ...connection, host: POD_ADDRESS, port: appPort });
  }
}

const table = readFileSync('/proc/net/tcp', 'utf8');
const started = process.hrtime.bigint();
const [shell, ...shellArgs] = scenario.shell;
const hook = spawn(shell!, [...shellArgs, '-c', scenario.script], { stdio: 'inherit' });
const exitCode = await new Promise<number>((resolve) =>
  hook.on('exit', (code) => resolve(code ?? -1)),
);
const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;

for (const child of children) child.kill('SIGKILL');
for (const s of sockets) s.destroy();
app.close();
proxy.close();
process.stdout.write(`${JSON.stringify({ elapsedMs, exitCode, table })}\n`);
process.exit(0);
