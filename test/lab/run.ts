// The termination lab on a real node: `npm run lab` (see docs/lab.md).
//
// Starts a one-node cluster (test/support/node: containerd, runc, the kubelet,
// kube-proxy in iptables mode, the control plane), the project's webhook
// registered by URL, and measures from the client's side what rolling
// updates cost for each scenario (traffic path, app behaviour, propagation
// delay) and each preStop strategy.
//
//   npm run lab [-- --quick] [--json] [--scenarios a,b] [--strategies x,y]
//               [--replicas N] [--verbose] [--list]
//
// It starts real Kubernetes components: on a shared machine run it under
// `flock /tmp/prestop-heavy.lock`.

import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { startNode } from '../support/node/node.ts';
import { apiClients } from './cluster.ts';
import { labImage } from './image.ts';
import { READINESS_PERIOD_SECONDS } from './manifests.ts';
import { fullTable, jsonLine, summaryTable } from './report.ts';
import {
  CLIENT_CONNECT_TIMEOUT_MS,
  CLIENT_TOTAL_TIMEOUT_MS,
  openScenario,
  runRollout,
  type Lab,
  type RolloutResult,
} from './rollout.ts';
import { QUICK, SCENARIOS, scenarioByName } from './scenarios.ts';
import {
  DRAIN_QUIET_SECONDS,
  INJECTED_DELAY_SECONDS,
  NO_ROLLOUT,
  slug,
  strategyByName,
} from './strategies.ts';
import { startLabWebhook, type LabWebhook } from './webhook.ts';
import { listOption, preflight, refuse } from './preflight.ts';

// `npm run lab -- --ipvs`: the IPVS lab, a runner of its own (test/ipvs/run.ts).
if (process.argv.includes('--ipvs')) {
  await (await import('../ipvs/run.ts')).main(process.argv.slice(2));
  process.exit(0);
}

/** The README's summary columns. */
const SUMMARY_STRATEGIES = [NO_ROLLOUT, 'none', 'injected sleep', 'injected drain'];

const USAGE = `usage: npm run lab -- [--quick] [--json] [--scenarios a,b] [--strategies x,y]
                      [--replicas N] [--verbose] [--list]
scenarios: ${SCENARIOS.map((s) => s.name).join(', ')}`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      scenarios: { type: 'string' },
      strategies: { type: 'string' },
      replicas: { type: 'string', default: '3' },
      verbose: { type: 'boolean', default: false },
      list: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (values.list) {
    for (const s of SCENARIOS) {
      process.stdout.write(`${s.name}: ${s.summary}\n  ${s.strategies.map(slug).join(', ')}\n`);
    }
    return;
  }
  const scenarios = (
    listOption(values.scenarios) ?? (values.quick ? QUICK.scenarios : SCENARIOS.map((s) => s.name))
  ).map(scenarioByName);
  const chosen = (
    listOption(values.strategies) ?? (values.quick ? QUICK.strategies : undefined)
  )?.map(strategyByName);
  const replicas = Number(values.replicas);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 6)
    refuse('lab', '--replicas must be 1..6');

  preflight({
    label: 'lab',
    packages: ['haproxy'],
    notStarted: 'no node was started',
    probeName: `prestop-lab-probe-${process.pid}`,
  });
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const started = Date.now();
  const seconds = () => ((Date.now() - started) / 1000).toFixed(0);
  log('lab: starting a node (containerd, kubelet, kube-proxy, control plane)');
  const node = await startNode();
  let webhook: LabWebhook | undefined;
  const results: RolloutResult[] = [];
  let header: string[] = [];
  try {
    const image = await labImage();
    await node.importImage(image);
    webhook = await startLabWebhook(node);
    const v = node.versions;
    const haproxyVersion = /version (\S+)/.exec(
      spawnSync('haproxy', ['-v'], { encoding: 'utf8' }).stdout,
    )?.[1];
    header = [
      `real node: kubelet ${Object.values(v.kubelets).join(', ')}, kube-proxy ${v.kubeProxy} (iptables), ` +
        `kube-apiserver ${v.kubeApiserver}, ${v.containerd}, ${v.runc}; HAProxy ${haproxyVersion}`,
      `rolling updates of ${replicas} replicas (maxSurge 1, maxUnavailable 0) by the Deployment controller; ` +
        `readiness probed every ${READINESS_PERIOD_SECONDS} s; client budget ${CLIENT_CONNECT_TIMEOUT_MS / 1000} s connect, ${CLIENT_TOTAL_TIMEOUT_MS / 1000} s total`,
      `injected: what this checkout's webhook (registered by URL) wrote at admission, ` +
        `delay-seconds ${INJECTED_DELAY_SECONDS} unless named, drain-quiet-seconds ${DRAIN_QUIET_SECONDS} (drain only)`,
    ];
    for (const line of header) log(line);
    log(`lab: node ready, image imported, webhook registered at ${seconds()} s`);

    const lab: Lab = {
      node,
      image: image.ref,
      kubeConfig: node.controlPlane.kubeConfig,
      core: node.controlPlane.core,
      ...apiClients(node.controlPlane.kubeConfig),
      replicas,
      log,
      verbose: values.verbose,
    };
    for (const [index, scenario] of scenarios.entries()) {
      const strategies = chosen ?? scenario.strategies.map(strategyByName);
      log(`scenario ${scenario.name}: ${scenario.summary}`);
      const run = await openScenario(lab, scenario, index + 1);
      try {
        for (const strategy of strategies) {
          webhook.check();
          const result = await runRollout(lab, run, strategy);
          results.push(result);
          const { load } = result;
          log(
            `  ${strategy.name}: ${load.requests} requests, ${load.failed} failed ` +
              `${JSON.stringify(load.byKind)}, p99 ${Math.round(load.p99Ms)} ms, ` +
              `rollout ${result.rolloutSeconds.toFixed(1)} s (at ${seconds()} s)` +
              (load.failed > 0
                ? ` by method ${JSON.stringify(load.byMethod)} statuses ${JSON.stringify(load.statuses)} errors ${JSON.stringify(load.errors)}`
                : ''),
          );
        }
      } finally {
        await run.close();
      }
    }
    log(`lab finished in ${seconds()} s`);
  } catch (error) {
    log(node.logTails(20));
    if (webhook !== undefined) log(`----- webhook log -----\n${webhook.proc.logTail(60)}`);
    throw error;
  } finally {
    await webhook?.stop();
    await node.stop();
  }

  const out = [
    ...header,
    '',
    summaryTable(
      results,
      SUMMARY_STRATEGIES.filter((s) => results.some((r) => r.strategy === s)),
    ),
    '',
    fullTable(results),
  ];
  process.stdout.write(`${out.join('\n')}\n`);
  if (values.json) process.stdout.write(`${jsonLine(results)}\n`);
}

await main();
process.exit(0);
