// A pod's app for the node tests, run by the test image's Node 24:
//
//   node /app/pod-app.ts
//
// - answers every HTTP request on $PORT (default 8080) with
//   {"pod": $POD_NAME}, so a client can see which pod a Service chose;
// - appends what happens to it, with the wall-clock time in ms, to
//   $RECORD_FILE (when set; a hostPath the test reads after the pod is gone)
//   and to stdout, one JSON object a line: {"event":"start"|"SIGTERM", ...};
// - on SIGTERM exits after $EXIT_DELAY_MS (default 0).

import fs from 'node:fs';
import http from 'node:http';

const pod = process.env['POD_NAME'] ?? 'unknown';
const port = Number(process.env['PORT'] ?? '8080');
const recordFile = process.env['RECORD_FILE'];
const exitDelayMs = Number(process.env['EXIT_DELAY_MS'] ?? '0');

function record(event: string): void {
  const line = JSON.stringify({ event, pod, t: Date.now() }) + '\n';
  // Synchronous: the line must be on disk before the process may die.
  if (recordFile !== undefined) fs.appendFileSync(recordFile, line);
  process.stdout.write(line);
}

const server = http.createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ pod }));
});

process.on('SIGTERM', () => {
  record('SIGTERM');
  setTimeout(() => process.exit(0), exitDelayMs);
});

server.listen(port, () => record('start'));
