// The IPVS lab: `npm run lab -- --ipvs [--json] [--strategies a,b] [--verbose]`
// (test/lab/run.ts hands --ipvs over to this file; see test/ipvs/README.md).
//
// Reproduces, on a real IPVS kernel in a User-Mode Linux guest, how new
// connections that reuse a source port reach a removed pod, and compares
// no reaper, the field report's delete-at-once reaper, this project's
// ipvs-reaper and the sysctl fix in one run. Needs root. Runs under the
// machine's heavy-run lock (/tmp/prestop-heavy.lock), one heavy run at a time.

import { accessSync, constants } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { holdHeavyLock } from './heavy-lock.ts';
import { NETNS_PREFIX, removeStaleNamespaces, runIpvsLab } from './host.ts';
import { ipvsJsonLine, ipvsTable } from './report.ts';
import { STRATEGIES, type StrategyName } from './spec.ts';

const USAGE = `usage: npm run lab -- --ipvs [--json] [--strategies ${STRATEGIES.join(',')}] [--verbose]`;

function refuse(message: string): never {
  process.stderr.write(`lab --ipvs: ${message}\n`);
  process.exit(2);
}

export async function main(argv: readonly string[]): Promise<void> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      ipvs: { type: 'boolean', default: true },
      json: { type: 'boolean', default: false },
      strategies: { type: 'string' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const strategies = (values.strategies?.split(',').map((s) => s.trim()) ?? [...STRATEGIES]).map(
    (name) => {
      if (!(STRATEGIES as readonly string[]).includes(name)) {
        refuse(`unknown strategy ${name}; known: ${STRATEGIES.join(', ')}`);
      }
      return name as StrategyName;
    },
  );
  if (process.getuid?.() !== 0)
    refuse('needs root: network namespaces, a tap device, User-Mode Linux');
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
  } catch {
    refuse('no /dev/net/tun: the guest reaches the API server through a tap device');
  }
  holdHeavyLock(fileURLToPath(import.meta.url), argv);

  const log = (line: string) => process.stderr.write(`${line}\n`);
  for (const name of removeStaleNamespaces()) log(`lab --ipvs: removed stale ${name}`);
  const started = Date.now();
  const { results, timings } = await runIpvsLab({ strategies, log, verbose: values.verbose });
  log(
    `lab --ipvs: kernel ${results.kernel}, kube-apiserver ${results.kubeVersion}; control plane ${timings.controlPlaneS.toFixed(1)} s, guest ${timings.guestS.toFixed(1)} s, all ${((Date.now() - started) / 1000).toFixed(1)} s (namespace ${NETNS_PREFIX}${process.pid})`,
  );
  process.stdout.write(`${ipvsTable(results)}\n`);
  if (values.json) process.stdout.write(`${ipvsJsonLine(results)}\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`lab --ipvs: ${(error as Error).stack ?? String(error)}\n`);
      process.exit(1);
    },
  );
}
