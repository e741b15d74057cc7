// The IPVS lab, inside the guest (User-Mode Linux, Debian's 6.1 kernel).
// For each strategy: the node's sysctls, kube-proxy's rules from the real
// EndpointSlices, two pods of the Service, the shared client reusing source
// ports, then a rollout step: a third pod, and the second one deleted,
// terminating (its preStop sleep, then SIGTERM; its in-flight requests must
// finish) and then gone. Results go to /out/results.json.
//
//   node test/ipvs/guest/main.ts /out

import { spawn } from 'node:child_process';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { parseConnectionTable } from '../../../src/reaper/ipvs-table.ts';
import {
  STRATEGY_SYSCTLS,
  type LabResults,
  type LabSpec,
  type Phase,
  type RequestRecord,
  type ScenarioResult,
  type StrategyName,
} from '../spec.ts';
import { mustApi } from './api.ts';
import { currentRealServers, startKubeProxy } from './kube-proxy.ts';
import { Kubelet, type TerminationMarks } from './kubelet.ts';
import { addNetns, inNetns, IPVSADM, removeNetns, run, setUpNode, writeSysctl } from './net.ts';

const outDir = process.argv[2] ?? '/out';
const spec = JSON.parse(readFileSync(path.join(outDir, 'spec.json'), 'utf8')) as LabSpec;
const repo = path.resolve(import.meta.dirname, '../../..');
const CLI = path.join(repo, 'src/cli/main.ts');
const CLIENT = path.join(import.meta.dirname, 'client.ts');
const DELETE_AT_ONCE = path.join(import.meta.dirname, 'delete-at-once.ts');
const OLD_KERNEL_IPVSADM = path.join(import.meta.dirname, 'ipvsadm-old-kernel.sh');
const REAPER_HEALTH_PORT = 9811;
const started = Date.now();

function log(line: string): void {
  process.stdout.write(`[guest ${((Date.now() - started) / 1000).toFixed(1)}s] ${line}\n`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A child whose stdout lines are kept; `line(pattern)` waits for one. */
function child(name: string, argv: readonly string[], logFile: string) {
  const [command, ...args] = argv;
  const proc = spawn(command!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const file = createWriteStream(path.join(outDir, logFile));
  proc.stderr!.pipe(file);
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    lines.push(line);
    file.write(`${line}\n`);
    const index = waiters.findIndex((w) => w.pattern.test(line));
    if (index !== -1) waiters.splice(index, 1)[0]!.resolve(line);
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', resolve));
  return {
    proc,
    lines,
    exited,
    line(pattern: RegExp, timeoutMs = 60_000): Promise<string> {
      const seen = lines.find((l) => pattern.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${name}: no line matching ${pattern} in ${timeoutMs} ms`)),
          timeoutMs,
        );
        waiters.push({
          pattern,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
        void exited.then(() => reject(new Error(`${name} exited; see ${logFile}`)));
      });
    },
    stop(): Promise<number | null> {
      proc.kill('SIGTERM');
      return exited;
    },
  };
}

function node(args: readonly string[]): string[] {
  return [process.execPath, ...args];
}

async function weightOf(address: string): Promise<number | null> {
  const servers = await currentRealServers(spec.service.clusterIP, spec.service.port);
  return servers.find((s) => s.address === address)?.weight ?? null;
}

async function entriesTo(address: string): Promise<number> {
  const table = parseConnectionTable(await readFile('/proc/net/ip_vs_conn', 'utf8'));
  return table.filter((entry) => entry.destination.address === address).length;
}

async function reaperMetrics(): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${REAPER_HEALTH_PORT}/metrics`)).text();
  const metrics: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const match = /^prestop_injector_ipvs_(\w+?)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (match && !match[1]!.includes('info')) metrics[match[1]!] = Number(match[2]);
  }
  return metrics;
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function phaseOf(startMs: number, marks: TerminationMarks): Phase {
  if (startMs < marks.deletionRequestedMs) return 'before';
  if (startMs < marks.sigtermMs) return 'terminating';
  if (startMs < marks.exitedMs) return 'stopping';
  return 'gone';
}

async function runScenario(index: number, strategy: StrategyName, kc: KubeConfig) {
  const sysctls = STRATEGY_SYSCTLS[strategy];
  await writeSysctl('net.ipv4.vs.conn_reuse_mode', sysctls.connReuseMode);
  await writeSysctl('net.ipv4.vs.expire_nodest_conn', sysctls.expireNodestConn);
  log(
    `${strategy}: conn_reuse_mode=${sysctls.connReuseMode} expire_nodest_conn=${sysctls.expireNodestConn}`,
  );
  const logger = pino(
    { level: 'warn' },
    pino.destination(path.join(outDir, `${strategy}-guest.log`)),
  );
  const kubeProxy = await startKubeProxy({
    kc,
    namespace: spec.namespace,
    service: spec.service,
    logger,
    log,
  });
  const kubelet = new Kubelet(kc, spec, log);
  const clientNetns = `client-${index}`;
  const children: ReturnType<typeof child>[] = [];
  try {
    const diagnosis = JSON.parse(
      await run(process.execPath, [CLI, 'ipvs-reaper', '--diagnose', '--json']),
    ) as ScenarioResult['diagnosis'];
    log(`${strategy}: ipvs-reaper --diagnose: ${diagnosis.exposure}`);

    if (strategy === 'reaper') {
      const reaper = child(
        'ipvs-reaper',
        node([
          CLI,
          'ipvs-reaper',
          '--kubeconfig',
          spec.kubeconfig,
          '--ipvsadm',
          OLD_KERNEL_IPVSADM,
          '--interval-seconds',
          '1',
          '--health-port',
          String(REAPER_HEALTH_PORT),
          '--health-host',
          '127.0.0.1',
        ]),
        `${strategy}-ipvs-reaper.log`,
      );
      children.push(reaper);
      await until('the reaper to sync', 90_000, async () => {
        const res = await fetch(`http://127.0.0.1:${REAPER_HEALTH_PORT}/readyz`).catch(() => null);
        return res?.status === 200;
      });
      log(`${strategy}: ipvs-reaper ready`);
    } else if (strategy === 'delete-at-once') {
      const daemon = child(
        'delete-at-once',
        node([DELETE_AT_ONCE, OLD_KERNEL_IPVSADM]),
        `${strategy}-delete-at-once.log`,
      );
      children.push(daemon);
      await daemon.line(/^ready$/);
    }

    const subnet = `10.244.${10 + index}`;
    const [a, b] = await Promise.all([
      kubelet.start(`web-${index}-a`, `${subnet}.1`),
      kubelet.start(`web-${index}-b`, `${subnet}.2`),
    ]);
    await until('both pods in IPVS', 30_000, async () =>
      (await Promise.all([weightOf(a.ip), weightOf(b.ip)])).every((w) => w === 1),
    );
    log(`${strategy}: ${a.name} and ${b.name} ready and in IPVS`);

    const clientAddress = `10.244.200.${10 + index}`;
    await addNetns(clientNetns, clientAddress);
    const client = child(
      'client',
      inNetns(
        clientNetns,
        node([
          CLIENT,
          JSON.stringify({
            vip: spec.service.clusterIP,
            port: spec.service.port,
            sourceAddress: clientAddress,
            ...spec.load,
            basePort: 40_000,
            longBasePort: 50_000,
          }),
        ]),
      ),
      `${strategy}-client.log`,
    );
    children.push(client);
    await client.line(/^ready$/);
    await sleep(spec.warmupMs);

    const c = await kubelet.start(`web-${index}-c`, `${subnet}.3`);
    await until(`${c.name} in IPVS`, 30_000, async () => (await weightOf(c.ip)) === 1);
    log(`${strategy}: ${c.name} ready; long requests, then ${b.name} deleted`);
    client.proc.stdin!.write('long\n');
    await sleep(300);

    // When the old pod's real server leaves the table, whoever removes it.
    let removedMs: number | null = null;
    let watching = true;
    const watchRemoval = (async () => {
      while (watching && removedMs === null) {
        if ((await weightOf(b.ip)) === null) removedMs = Date.now();
        else await sleep(20);
      }
    })();
    let inFlightPorts: Promise<number[]> = Promise.resolve([]);
    const marks = await kubelet.terminate(b, () => {
      inFlightPorts = kubelet.inFlightPorts(b);
    });
    log(
      `${strategy}: ${b.name} SIGTERM at +${((marks.sigtermMs - marks.deletionRequestedMs) / 1000).toFixed(1)}s, exited at +${((marks.exitedMs - marks.deletionRequestedMs) / 1000).toFixed(1)}s, object deleted at +${((marks.objectDeletedMs - marks.deletionRequestedMs) / 1000).toFixed(1)}s`,
    );
    await sleep(Math.max(0, marks.exitedMs + spec.afterGoneMs - Date.now()));
    client.proc.stdin!.write('stop\n');
    const recordsLine = await client.line(/^\[/, 30_000);
    watching = false;
    await watchRemoval;
    const records = JSON.parse(recordsLine) as RequestRecord[];
    const inFlight = await inFlightPorts;
    const entriesLeftAtEnd = await entriesTo(b.ip);
    const metrics = strategy === 'reaper' ? await reaperMetrics() : undefined;

    const failedRecords = records.filter((r) => r.failure !== undefined);
    const byFailure: ScenarioResult['byFailure'] = {};
    for (const r of failedRecords) byFailure[r.failure!] = (byFailure[r.failure!] ?? 0) + 1;
    const failedByPhase: Record<Phase, number> = {
      before: 0,
      terminating: 0,
      stopping: 0,
      gone: 0,
    };
    for (const r of failedRecords) failedByPhase[phaseOf(r.startMs, marks)]++;
    const inFlightRecords = records.filter(
      (r) =>
        inFlight.includes(r.port) &&
        r.startMs <= marks.deletionRequestedMs &&
        r.endMs >= marks.deletionRequestedMs,
    );
    const seconds = (ms: number) => Math.round((ms - marks.deletionRequestedMs) / 100) / 10;
    const result: ScenarioResult = {
      strategy,
      sysctls,
      requests: records.length,
      failed: failedRecords.length,
      cut: failedRecords.filter((r) => r.connected).length,
      byFailure,
      failedByPhase,
      inFlightAtTerminating: {
        requests: inFlightRecords.length,
        failed: inFlightRecords.filter((r) => r.failure !== undefined).length,
      },
      failedAfterRemoval:
        removedMs === null ? null : failedRecords.filter((r) => r.startMs >= removedMs!).length,
      answeredWhileTerminating: records.filter(
        (r) => r.pod === b.name && r.startMs >= marks.deletionRequestedMs,
      ).length,
      p99Ms: percentile(
        records.map((r) => r.endMs - r.startMs),
        99,
      ),
      timeline: {
        sigtermS: seconds(marks.sigtermMs),
        exitedS: seconds(marks.exitedMs),
        networkGoneS: seconds(marks.networkGoneMs),
        podObjectDeletedS: seconds(marks.objectDeletedMs),
        realServerRemovedS: removedMs === null ? null : seconds(removedMs),
      },
      entriesLeftAtEnd,
      diagnosis: { exposure: diagnosis.exposure, reasons: diagnosis.reasons },
      ...(metrics === undefined ? {} : { reaperMetrics: metrics }),
    };
    log(
      `${strategy}: ${result.requests} requests, ${result.failed} failed ${JSON.stringify(result.byFailure)} by phase ${JSON.stringify(result.failedByPhase)}; in flight at terminating ${JSON.stringify(result.inFlightAtTerminating)}; real server removed at ${JSON.stringify(result.timeline.realServerRemovedS)}`,
    );
    return result;
  } finally {
    for (const each of children) await each.stop();
    await kubeProxy.stop();
    await kubelet.removeAll();
    await removeNetns(clientNetns);
    await run(IPVSADM, ['-C']);
    // The next scenario starts from no pod and no endpoint.
    await until("the scenario's pods to be gone", 30_000, async () => {
      const pods = (await mustApi(kc, 'GET', `/api/v1/namespaces/${spec.namespace}/pods`)) as {
        items: { metadata: { name: string; deletionTimestamp?: string } }[];
      };
      if (pods.items.length > 0) {
        log(
          `waiting for ${pods.items.map((p) => `${p.metadata.name}${p.metadata.deletionTimestamp ? ' (deleting)' : ''}`).join(', ')}`,
        );
        await sleep(1000);
      }
      return pods.items.length === 0;
    });
    logger.flush();
  }
}

async function main(): Promise<void> {
  log(`kernel ${os.release()}`);
  await setUpNode(spec.service.clusterIP);
  const kc = new KubeConfig();
  kc.loadFromFile(spec.kubeconfig);
  const { gitVersion } = (await mustApi(kc, 'GET', '/version')) as { gitVersion: string };
  log(`API server ${gitVersion}`);
  const results: LabResults = { kernel: os.release(), kubeVersion: gitVersion, scenarios: [] };
  for (const [index, strategy] of spec.strategies.entries()) {
    results.scenarios.push(await runScenario(index, strategy, kc));
  }
  writeFileSync(path.join(outDir, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  log('done');
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log(`failed: ${(error as Error).stack ?? String(error)}`);
    process.exit(1);
  },
);
