// For node.test.ts: starts a node with a running pod, prints `run <id>` and
// waits to be killed (with SIGKILL, so that nothing of it is cleaned up).

import { startNode } from '../support/node/node.ts';
import { sleeperPod } from './manifests.ts';

const node = await startNode();
await node.kubectl('create', 'namespace', 'killed');
await node.apply(sleeperPod(node, 'killed', 'left-behind'));
await node.kubectl(
  'wait',
  '-n',
  'killed',
  '--for=condition=Ready',
  'pod/left-behind',
  '--timeout=60s',
);
process.stdout.write(`run ${node.run.id}\n`);
setInterval(() => undefined, 60_000);
