// A container that reports how it is stopped, for the node tests:
//
//   node /app/stop-recorder.ts
//
// It connects to a unix socket the test process listens on ($RECORD_SOCKET,
// on a hostPath) and writes one JSON object a line, each with the
// wall-clock time in ms (the containers and the test share the machine's
// clock):
//   hello       once connected: {pod, container}
//   hook-start  a process other than this one appeared in the container;
//               nothing but an exec preStop enters these containers (they
//               have no probes and nobody runs kubectl exec in them)
//   hook-end    no such process is left: {commands} seen meanwhile
//   SIGTERM
//   exit        it is about to exit on its own
// A process cannot report its own SIGKILL, but the kernel closes its end of
// the socket when it dies: the test takes the close as the moment the
// container died, and a close with no `exit` before it as the SIGKILL.
//
// Environment:
//   POD_NAME, CONTAINER_NAME, RECORD_SOCKET
//   PORT                   listen on it (drain hooks count inbound
//                          connections to listening ports)
//   EXIT_AFTER_SIGTERM_MS  exit this long after SIGTERM; unset: stay
//                          until SIGKILL
//   HOLD_LOOPBACK=1        keep a connection to its own PORT open until it
//                          exits: in-flight work a proxy hold waits for

import fs from 'node:fs';
import net from 'node:net';

const env = (name: string): string | undefined => process.env[name];
const pod = env('POD_NAME') ?? 'unknown';
const container = env('CONTAINER_NAME') ?? 'unknown';
const socketPath = env('RECORD_SOCKET');
const port = env('PORT') === undefined ? undefined : Number(env('PORT'));
const exitAfter = env('EXIT_AFTER_SIGTERM_MS');
const POLL_MS = 50;

let socket: net.Socket | undefined;
const pending: string[] = [];

function record(event: string, detail: Record<string, unknown> = {}): void {
  const line = JSON.stringify({ event, t: Date.now(), ...detail }) + '\n';
  process.stdout.write(`${pod}/${container} ${line}`);
  if (socket === undefined) pending.push(line);
  else socket.write(line);
}

function connect(): void {
  if (socketPath === undefined) return;
  const attempt = net.connect(socketPath);
  attempt.once('connect', () => {
    socket = attempt;
    attempt.write(JSON.stringify({ event: 'hello', t: Date.now(), pod, container }) + '\n');
    for (const line of pending.splice(0)) attempt.write(line);
  });
  attempt.on('error', () => {
    // Not listening yet (or gone): try again while there is no connection.
    if (socket === attempt) socket = undefined;
    attempt.destroy();
    if (socket === undefined) setTimeout(connect, 200);
  });
}

/** The processes in this container's pid namespace besides this one: pid -> command line. */
function otherProcesses(): Map<number, string> {
  const found = new Map<number, string>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8');
      found.set(Number(name), cmdline.split('\0').join(' ').trim().slice(0, 80));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

let hookRunning = false;
/** Every command line seen while the hook ran (the first sample may still be `runc init`). */
const seen = new Set<string>();
const sample = (): void => {
  const others = otherProcesses();
  for (const command of others.values()) seen.add(command);
  if (!hookRunning && others.size > 0) {
    hookRunning = true;
    record('hook-start', { commands: [...others.values()] });
  } else if (hookRunning && others.size === 0) {
    hookRunning = false;
    record('hook-end', { commands: [...seen] });
    seen.clear();
  }
};
setInterval(sample, POLL_MS);

process.on('SIGTERM', () => {
  // The kubelet sends SIGTERM once an exec hook has returned: a hook that
  // ended since the last sample is over now, before a quick exit.
  sample();
  record('SIGTERM');
  if (exitAfter === undefined) return;
  setTimeout(() => {
    record('exit');
    // The socket's buffered lines first: end() flushes them, then exit.
    if (socket === undefined) process.exit(0);
    socket.end(() => process.exit(0));
  }, Number(exitAfter));
});

if (port !== undefined) {
  const held: net.Socket[] = [];
  // Connections are kept open and idle: nothing is read or written.
  const server = net.createServer((conn) => {
    conn.on('error', () => undefined);
    held.push(conn);
  });
  server.listen(port, () => {
    record('listening', { port });
    if (env('HOLD_LOOPBACK') === '1') {
      const loop = net.connect(port, '127.0.0.1');
      loop.on('error', () => undefined);
      held.push(loop);
    }
  });
}

connect();
record('start');
