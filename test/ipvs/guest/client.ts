// The shared client of the IPVS lab, in its own network namespace: like an
// nginx in front of a Service's ClusterIP with no upstream keep-alive, it
// opens a new connection for each request at a steady rate, and under heavy
// short-lived traffic its source ports come round again quickly. Here they
// come from a small pool, in turn, so each port is reused within a second,
// well inside IPVS's entry timeouts. A failed connection is not retried:
// with one upstream server (the ClusterIP) nginx has no next server to try.
//
// stdin: "long" sends the long requests (each from a port of its own);
// "stop" ends the load, waits for what is in flight and prints every
// request as one JSON line.
//
//   node client.ts CONFIG_JSON

import net from 'node:net';
import { createInterface } from 'node:readline';
import type { FailureClass, RequestRecord } from '../spec.ts';

interface ClientConfig {
  vip: string;
  port: number;
  sourceAddress: string;
  ratePerSecond: number;
  sourcePorts: number;
  basePort: number;
  shortRequestMs: number;
  longRequests: number;
  longRequestMs: number;
  longBasePort: number;
}

/** nginx waits 60 s to connect by default; 3 s outlasts a SYN retransmission (1 s). */
const CONNECT_TIMEOUT_MS = 3000;
/** After connecting: the request's own time plus this. */
const RESPONSE_SLACK_MS = 3000;

const config = JSON.parse(process.argv[2] ?? '{}') as ClientConfig;
const records: RequestRecord[] = [];
const busy = new Set<number>();
let next = 0;
let inFlight = 0;
let whenIdle: (() => void) | undefined;

function classify(code: string | undefined, connected: boolean): FailureClass {
  if (!connected) {
    if (code === 'ECONNREFUSED') return 'refused';
    if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return 'unreachable';
    if (code === 'connect-timeout') return 'connect-timeout';
    return 'other';
  }
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'reset';
  if (code === 'response-timeout') return 'response-timeout';
  return code === undefined ? 'empty' : 'other';
}

function request(port: number, ms: number, long: boolean): void {
  busy.add(port);
  inFlight++;
  const record: RequestRecord = { startMs: Date.now(), endMs: 0, port, long, connected: false };
  let data = '';
  let code: string | undefined;
  const socket = net.connect({
    host: config.vip,
    port: config.port,
    localAddress: config.sourceAddress,
    localPort: port,
  });
  let timer = setTimeout(() => {
    code = 'connect-timeout';
    socket.destroy();
  }, CONNECT_TIMEOUT_MS);
  socket.on('connect', () => {
    record.connected = true;
    clearTimeout(timer);
    timer = setTimeout(() => {
      code = 'response-timeout';
      socket.destroy();
    }, ms + RESPONSE_SLACK_MS);
    socket.write(`GET /?ms=${ms} HTTP/1.1\r\nHost: ${config.vip}\r\nConnection: close\r\n\r\n`);
  });
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (data += chunk));
  socket.on('error', (error: NodeJS.ErrnoException) => {
    code ??= error.code ?? error.message;
  });
  socket.on('close', () => {
    clearTimeout(timer);
    record.endMs = Date.now();
    const match = /^HTTP\/1\.1 200 [^\r]*\r\n[\s\S]*?\r\n\r\n(\S+)$/.exec(data);
    if (match !== null && code === undefined) record.pod = match[1];
    else record.failure = classify(code, record.connected);
    records.push(record);
    busy.delete(port);
    inFlight--;
    if (inFlight === 0) whenIdle?.();
  });
}

const ticker = setInterval(() => {
  // The next free port of the pool, in turn: a port still busy (a slow or
  // failing request) is skipped, as the kernel skips ports in use.
  for (let tries = 0; tries < config.sourcePorts; tries++) {
    const port = config.basePort + (next++ % config.sourcePorts);
    if (!busy.has(port)) {
      request(port, config.shortRequestMs, false);
      return;
    }
  }
}, 1000 / config.ratePerSecond);

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'long') {
    for (let i = 0; i < config.longRequests; i++) {
      request(config.longBasePort + i, config.longRequestMs, true);
    }
  } else if (line === 'stop') {
    clearInterval(ticker);
    const done = () => {
      process.stdout.write(`${JSON.stringify(records)}\n`, () => process.exit(0));
    };
    if (inFlight === 0) done();
    else whenIdle = done;
  }
});

process.stdout.write('ready\n');
