// Runs one hook script against real sockets, inside a fresh network
// namespace so /proc/net/tcp holds only what the scenario opens.
//
//   unshare --net node test/support/socket-lab.ts '<scenario JSON>'
//
// Prints one JSON line: { elapsedMs, exitCode }.

import { spawn, spawnSync } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';

interface Connection {
  /** uid of the process that listens and connects; default: this process (root). */
  uid?: number;
  /** Connect over loopback, as a container of the same pod would; default: from outside. */
  loopback?: boolean;
  /** The client closes it after this many ms; omit to hold it until the script ends. */
  closeAfterMs?: number;
  /** Send a byte every 250 ms for this many ms, then stay idle (from outside only). */
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
/** The pod's own address, on this namespace's lo: peers using it are not loopback peers. */
const POD_ADDRESS = '10.213.0.1';
for (const args of [
  ['link', 'set', 'lo', 'up'],
  ['addr', 'add', `${POD_ADDRESS}/32`, 'dev', 'lo'],
]) {
  const result = spawnSync('ip', args);
  if (result.status !== 0) throw new Error(`ip ${args.join(' ')}: ${result.stderr.toString()}`);
}

const sockets: Socket[] = [];
const children: ReturnType<typeof spawn>[] = [];

const ownServer = createServer((socket) => sockets.push(socket));
await new Promise<void>((resolve) => ownServer.listen(0, '0.0.0.0', resolve));
const ownPort = (ownServer.address() as { port: number }).port;

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
  if (connection.uid === undefined) {
    const client = await new Promise<Socket>((resolve) => {
      const host = connection.loopback === true ? '127.0.0.1' : POD_ADDRESS;
      const socket = connect(ownPort, host, () => resolve(socket));
      sockets.push(socket);
    });
    if (connection.keepAliveMs !== undefined) client.setKeepAlive(true, connection.keepAliveMs);
    if (connection.chattyMs !== undefined) {
      const ticker = setInterval(() => client.write('.'), 250);
      setTimeout(() => clearInterval(ticker), connection.chattyMs);
    }
    if (connection.closeAfterMs !== undefined) {
      // The client closes, as a load balancer purging an idle pooled
      // connection does; this end closes when it sees that (allowHalfOpen off).
      setTimeout(() => client.end(), connection.closeAfterMs);
    }
  } else {
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
  }
}

const started = process.hrtime.bigint();
const [shell, ...shellArgs] = scenario.shell;
const hook = spawn(shell!, [...shellArgs, '-c', scenario.script], { stdio: 'inherit' });
const exitCode = await new Promise<number>((resolve) =>
  hook.on('exit', (code) => resolve(code ?? -1)),
);
const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;

for (const child of children) child.kill('SIGKILL');
for (const s of sockets) s.destroy();
ownServer.close();
process.stdout.write(`${JSON.stringify({ elapsedMs, exitCode })}\n`);
process.exit(0);
