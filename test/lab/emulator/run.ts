// The lab's emulator: a fast self-check of the lab's own logic, not a
// measurement of Kubernetes (`npm run lab` runs on a real node).
//
// Reproduces the kubelet's termination sequence with real processes in
// network namespaces, behind HAProxy, and counts what a client sees during
// rolling updates, for each of its scenarios and each preStop strategy.
//
//   node test/lab/emulator/run.ts [--quick] [--json] [--scenarios a,b]
//        [--strategies x,y] [--replicas N] [--seed S] [--verbose]

import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { CONNECT_TIMEOUT_SECONDS } from '../haproxy.ts';
import { markdownTable } from '../report.ts';
import {
  DRAIN_QUIET_SECONDS,
  INJECTED_DELAY_SECONDS,
  STRATEGIES,
  slug,
  strategyByName,
} from '../strategies.ts';
import {
  EMULATOR_SCENARIOS,
  emulatorScenarioByName,
  KUBE_VERSION,
  PROXY_DRAIN_SECONDS,
} from './pods.ts';
import { NS_PREFIX, installCleanupHandlers, removeStaleNamespaces } from './processes.ts';
import {
  CLIENT_CONNECT_TIMEOUT_MS,
  CLIENT_TOTAL_TIMEOUT_MS,
  runRollout,
  type EmulatedRollout,
  type LabSettings,
} from './rollout.ts';
import { describeHooks } from './kubelet.ts';
import { listOption, preflight, refuse } from '../preflight.ts';

/** Endpoint propagation: D and its jitter. */
const PROPAGATION = { delayMs: 3000, jitterMs: 1000 };
const QUICK = { scenarios: ['abrupt'], strategies: ['none', 'injected sleep'] };
/** The seeds' snippets and the injector at its usual delay. */
const DEFAULT_STRATEGIES = STRATEGIES.filter(
  (s) =>
    s.control !== true &&
    (s.inject === undefined || s.inject.delaySeconds === INJECTED_DELAY_SECONDS),
);

const USAGE = `usage: node test/lab/emulator/run.ts [--quick] [--json]
         [--scenarios ${EMULATOR_SCENARIOS.map((s) => s.name).join(',')}]
         [--strategies ${DEFAULT_STRATEGIES.map((s) => slug(s.name)).join(',')}]
         [--replicas N] [--seed S] [--verbose]`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      scenarios: { type: 'string' },
      strategies: { type: 'string' },
      replicas: { type: 'string', default: '3' },
      seed: { type: 'string', default: '1' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const scenarios = (
    listOption(values.scenarios) ??
    (values.quick ? QUICK.scenarios : EMULATOR_SCENARIOS.map((s) => s.name))
  ).map(emulatorScenarioByName);
  const strategies = (
    listOption(values.strategies) ??
    (values.quick ? QUICK.strategies : DEFAULT_STRATEGIES.map((s) => s.name))
  ).map(strategyByName);
  if (strategies.some((s) => s.control === true))
    refuse('lab emulator', 'the emulator has no control run');
  const replicas = Number(values.replicas);
  const seed = Number(values.seed);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 6)
    refuse('lab emulator', '--replicas must be 1..6');
  if (!Number.isInteger(seed)) refuse('lab emulator', '--seed must be an integer');

  preflight({
    label: 'lab emulator',
    packages: ['haproxy', 'net-tools'],
    notStarted: 'nothing was started',
    probeName: `${NS_PREFIX}${process.pid}-probe`,
  });
  installCleanupHandlers();
  for (const name of removeStaleNamespaces()) process.stderr.write(`lab: removed stale ${name}\n`);

  const log = (line: string) => process.stderr.write(`${line}\n`);
  const settings: LabSettings = {
    replicas,
    propagation: PROPAGATION,
    seed,
    log,
    verbose: values.verbose,
  };
  const haproxyVersion = /version (\S+)/.exec(
    spawnSync('haproxy', ['-v'], { encoding: 'utf8' }).stdout,
  )?.[1];
  const header = [
    "EMULATOR: a self-check of the lab's own logic with a kubelet emulator, not a measurement of Kubernetes",
    `rolling update of ${replicas} replicas (maxSurge 1, maxUnavailable 0) behind HAProxy ${haproxyVersion}`,
    `endpoint propagation D = ${PROPAGATION.delayMs / 1000} s ± ${PROPAGATION.jitterMs / 1000} s ` +
      `(the same seeded jitters, seed ${seed}, in every rollout); ` +
      `LB connect timeout ${CONNECT_TIMEOUT_SECONDS} s, 3 tries; client budget ${CLIENT_CONNECT_TIMEOUT_MS / 1000} s connect, ${CLIENT_TOTAL_TIMEOUT_MS / 1000} s total`,
    `injected: the planner's output for Kubernetes ${KUBE_VERSION}, delay-seconds ${INJECTED_DELAY_SECONDS}, drain-quiet-seconds ${DRAIN_QUIET_SECONDS} (drain only); ` +
      `mesh proxy drain ${PROXY_DRAIN_SECONDS} s`,
  ];
  for (const line of header) log(line);

  const results: EmulatedRollout[] = [];
  const started = Date.now();
  for (const scenario of scenarios) {
    log(`scenario ${scenario.name}: ${scenario.summary}`);
    for (const strategy of strategies) {
      const result = await runRollout(scenario, strategy, settings);
      results.push(result);
      const { load } = result;
      log(
        `  ${strategy.name}: ${load.requests} requests, ${load.failed} failed ` +
          `${JSON.stringify(load.byKind)}, p99 ${Math.round(load.p99Ms)} ms, rollout ${result.rolloutSeconds.toFixed(1)} s` +
          (load.failed > 0
            ? ` by method ${JSON.stringify(load.byMethod)} statuses ${JSON.stringify(load.statuses)} errors ${JSON.stringify(load.errors)}`
            : ''),
      );
    }
  }
  log(`lab finished in ${Math.round((Date.now() - started) / 1000)} s`);

  process.stdout.write(`${header.map((line) => `${line}\n`).join('')}\n${table(results)}\n`);
  if (values.json) process.stdout.write(`${jsonLine(results)}\n`);
}

function table(results: readonly EmulatedRollout[]): string {
  const header = [
    'scenario',
    'strategy',
    'requests',
    'failed',
    '5xx',
    'reset',
    'timeout',
    'p99 ms',
    'rollout s',
    'grace s',
    'app preStop (longest, how it ended)',
  ];
  const rows = results.map((r) => [
    r.scenario,
    r.strategy,
    String(r.load.requests),
    String(r.load.failed) + (r.load.byKind.other > 0 ? ` (${r.load.byKind.other} other)` : ''),
    String(r.load.byKind['5xx']),
    String(r.load.byKind.reset),
    String(r.load.byKind.timeout),
    String(Math.round(r.load.p99Ms)),
    r.rolloutSeconds.toFixed(1),
    String(r.grace),
    describeHooks(r.appHooks),
  ]);
  return markdownTable(header, rows, (i) => i >= 2 && i <= 9);
}

function jsonLine(results: readonly EmulatedRollout[]): string {
  return JSON.stringify({
    scenarios: results.map((r) => ({
      name: r.scenario,
      kubelet: 'emulated',
      strategy: r.strategy,
      requests: r.load.requests,
      failed: r.load.failed,
      failed_by_kind: r.load.byKind,
      p99_ms: Math.round(r.load.p99Ms),
      rollout_seconds: Number(r.rolloutSeconds.toFixed(2)),
    })),
  });
}

await main();
process.exit(0);
