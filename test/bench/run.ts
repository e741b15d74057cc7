// npm run bench [-- --duration S --rounds N --connections C --docs N --json]
// npm run bench -- --profile [--case 'plain pod'|'istio pod'|'opted-out pod']
// npm run bench -- --against DIR [--only CASES]   (DIR: another checkout, with node_modules)
//
// Admission throughput and latency of the real `serve` process against a
// floor (a bare Fastify HTTPS route on the same certificate that parses the
// body and answers a constant review), measured in the same run with the same
// client settings, alternating webhook and floor round by round; then the
// CLI's pods per second on a generated multi-document YAML. --json ends with
// one line for the case that matters most, an Istio pod of a new template
// each time: its ratio sharing a CPU, and the webhook's resident memory once
// it has planned every template.
// --profile instead loads the Istio case under node --cpu-prof and ranks the
// webhook's functions by CPU time.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { httpsPost, type ReviewReply } from '../support/reviews.ts';
import { makeDevCerts, type DevCerts } from '../support/serve.ts';
import { load, median, type LoadResult, type LoadSettings } from './load.ts';
import {
  CPUS,
  imageNodeOptions,
  pin,
  startFloor,
  startWebhook,
  type ServerProcess,
} from './processes.ts';
import { formatSummary, monotonicUs, summarizeProfile } from './profile.ts';
import { podStream, scenarios, type Scenario } from './reviews.ts';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const WARMUP_SECONDS = 2;
/** Runs with webhook and floor loaded together (see measure()). */
const SHARED_ROUNDS = 3;

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '10' },
    docs: { type: 'string', default: '1000' },
    json: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    case: { type: 'string', default: 'istio pod' },
    only: { type: 'string' },
    against: { type: 'string' },
  },
});

const settings: LoadSettings = {
  connections: Number(args.connections),
  durationSeconds: Number(args.duration),
};
const rounds = Number(args.rounds);
const say = (line = '') => process.stdout.write(`${line}\n`);
/** The case --json reports. */
const FRESH_CASE = 'istio pod (new template each)';

/**
 * Real requests to each server per scenario, checked: the load must measure
 * real answers. Two pods of a case get the same patch, each under its own uid.
 */
async function checkAnswers(webhook: ServerProcess, floor: ServerProcess, certs: DevCerts) {
  for (const scenario of chosenScenarios()) {
    const patches = new Set<string | undefined>();
    for (const body of scenario.bodies.slice(0, 2)) {
      const reply = await httpsPost(webhook.port, '/mutate', body, certs.caPem);
      const review = reply.json<ReviewReply>();
      const uid = (JSON.parse(body) as { request: { uid: string } }).request.uid;
      if (reply.status !== 200 || review.response.allowed !== true || review.response.uid !== uid) {
        throw new Error(`${scenario.name}: webhook answered ${reply.status} ${reply.body}`);
      }
      const mutated = review.response.patch !== undefined;
      if (mutated !== (scenario.name !== 'opted-out pod')) {
        throw new Error(`${scenario.name}: webhook ${mutated ? 'patched' : 'did not patch'} it`);
      }
      patches.add(review.response.patch);
      const floorReply = await httpsPost(floor.port, '/mutate', body, certs.caPem);
      if (floorReply.status !== 200 || floorReply.json<ReviewReply>().response.allowed !== true) {
        throw new Error(`${scenario.name}: floor answered ${floorReply.status}`);
      }
    }
    // A new image tag plans to the same hooks.
    if (patches.size !== 1) {
      throw new Error(`${scenario.name}: ${patches.size} distinct patches for two pods`);
    }
  }
}

/** All cases, or those named by --only (comma-separated). */
function chosenScenarios(): Scenario[] {
  if (args.only === undefined) return scenarios();
  const names = args.only.split(',');
  const chosen = scenarios().filter((s) => names.includes(s.name));
  if (chosen.length !== names.length)
    throw new Error(
      `--only: cases are ${scenarios()
        .map((s) => s.name)
        .join(', ')}`,
    );
  return chosen;
}

interface Paired {
  webhook: LoadResult[];
  floor: LoadResult[];
  /** Webhook over floor req/s, per run with both loaded at once on one CPU. */
  shared: number[];
}

/** Resident memory of a process, in MiB. */
function rssMib(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (kib === null) throw new Error(`no VmRSS for process ${pid}`);
  return Number(kib[1]) / 1024;
}

/** The servers loaded at once with one case; pinned, they share the server CPU. */
function loadTogether(servers: readonly ServerProcess[], scenario: Scenario) {
  return Promise.all(
    servers.map((server) => load(server, scenario.bodies, settings, scenario.oneSequence)),
  );
}

async function measure(webhook: ServerProcess, floor: ServerProcess) {
  const all = chosenScenarios();
  const results = new Map<string, Paired>(
    all.map((s) => [s.name, { webhook: [], floor: [], shared: [] }]),
  );
  let webhookAnswers = 0;
  say(`warm-up: ${WARMUP_SECONDS} s per server and case`);
  for (const scenario of all) {
    for (const server of [webhook, floor]) {
      const warmup = { ...settings, durationSeconds: WARMUP_SECONDS };
      const result = await load(server, scenario.bodies, warmup, scenario.oneSequence);
      if (server === webhook) webhookAnswers += result.requests;
    }
  }
  for (let round = 1; round <= rounds; round++) {
    for (const scenario of all) {
      // Alternate who goes first, so drift over the run hits both alike.
      const order =
        round % 2 === 1 ? (['webhook', 'floor'] as const) : (['floor', 'webhook'] as const);
      for (const which of order) {
        const server = which === 'webhook' ? webhook : floor;
        const paired = results.get(scenario.name)!;
        const result = await load(server, scenario.bodies, settings, scenario.oneSequence);
        paired[which].push(result);
        if (which === 'webhook') webhookAnswers += result.requests;
      }
    }
    const line = all.map((scenario) => {
      const { webhook: w, floor: f } = results.get(scenario.name)!;
      return `${scenario.name} ${w.at(-1)!.rps.toFixed(0)} vs ${f.at(-1)!.rps.toFixed(0)}`;
    });
    say(`round ${round}/${rounds} (webhook vs floor, req/s): ${line.join('; ')}`);
  }
  if (CPUS !== null) {
    // Both at once on the server CPU: the scheduler gives each half of it, so
    // their req/s compare what a request costs each, and a slow spell of the
    // machine slows both alike (run after run, alternating, it does not).
    for (let round = 1; round <= SHARED_ROUNDS; round++) {
      for (const scenario of all) {
        const [w, f] = await loadTogether([webhook, floor], scenario);
        results.get(scenario.name)!.shared.push(w!.rps / f!.rps);
        webhookAnswers += w!.requests;
      }
    }
    const line = all.map((s) => `${s.name} ${median(results.get(s.name)!.shared).toFixed(3)}`);
    say(`sharing CPU ${CPUS.server} (webhook / floor req/s): ${line.join('; ')}`);
  }
  return { all, results, webhookAnswers };
}

interface Row {
  scenario: Scenario;
  /** Median webhook / floor req/s sharing one CPU; null where it cannot be pinned. */
  sharedRatio: number | null;
  webhookRps: number;
  floorRps: number;
  ratio: number;
  webhook: { p50: number; p99: number; p999: number; cpuUs: number };
  floor: { p50: number; p99: number; p999: number; cpuUs: number };
}

function summarize(scenario: Scenario, paired: Paired): Row {
  const latencies = (runs: LoadResult[]) => ({
    p50: median(runs.map((r) => r.p50Ms)),
    p99: median(runs.map((r) => r.p99Ms)),
    p999: median(runs.map((r) => r.p999Ms)),
    cpuUs: median(runs.map((r) => r.cpuUsPerRequest)),
  });
  return {
    scenario,
    sharedRatio: paired.shared.length === 0 ? null : median(paired.shared),
    webhookRps: median(paired.webhook.map((r) => r.rps)),
    floorRps: median(paired.floor.map((r) => r.rps)),
    // Ratio per round (the two ran back to back), then the median.
    ratio: median(paired.webhook.map((r, i) => r.rps / paired.floor[i]!.rps)),
    webhook: latencies(paired.webhook),
    floor: latencies(paired.floor),
  };
}

function table(rows: Row[]): string {
  const ms = (n: number) => n.toFixed(2);
  const lines = [
    '| case | body | webhook req/s | floor req/s | ratio | ratio sharing a CPU | p50 ms | p99 ms | p99.9 ms | floor p50 / p99 / p99.9 ms | server CPU µs/req, webhook / floor |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const row of rows) {
    lines.push(
      `| ${row.scenario.name} | ${(row.scenario.bodies[0]!.length / 1024).toFixed(1)} KiB | ${row.webhookRps.toFixed(0)} | ${row.floorRps.toFixed(0)} | ${(row.ratio * 100).toFixed(1)}% | ${row.sharedRatio === null ? 'n/a' : `${(row.sharedRatio * 100).toFixed(1)}%`} | ${ms(row.webhook.p50)} | ${ms(row.webhook.p99)} | ${ms(row.webhook.p999)} | ${ms(row.floor.p50)} / ${ms(row.floor.p99)} / ${ms(row.floor.p999)} | ${row.webhook.cpuUs.toFixed(0)} / ${row.floor.cpuUs.toFixed(0)} |`,
    );
  }
  return lines.join('\n');
}

function timeCli(argv: string[]): number {
  const started = performance.now();
  const run = spawnSync(process.execPath, [CLI, ...argv], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, KUBECONFIG: '' },
  });
  const ms = performance.now() - started;
  if (run.status !== 0)
    throw new Error(`cli ${argv.join(' ')} exited ${run.status}: ${run.stderr}`);
  return ms;
}

function measureCli(work: string) {
  const docs = Number(args.docs);
  const file = join(work, 'pods.yaml');
  writeFileSync(file, podStream(docs));
  const runs = 3;
  const startup = median(Array.from({ length: runs }, () => timeCli(['version'])));
  const inject = median(
    Array.from({ length: runs }, () => timeCli(['inject', '-f', file, '--kube-version', '1.33'])),
  );
  return { docs, startupMs: startup, injectMs: inject };
}

/**
 * --against DIR: the floor, the webhook of another checkout (DIR, with its
 * node_modules) and this one, loaded at once on the server CPU for --rounds
 * runs of each case; each one's req/s over the floor's, per run, and their
 * medians. A before/after in one run: the machine's slow spells hit all three.
 */
async function against(certs: DevCerts, checkout: string) {
  if (CPUS === null) throw new Error('--against needs two CPUs and taskset, to share one CPU');
  say(`sharing CPU ${CPUS.server}: webhook req/s over the floor's, per run and the median`);
  const floor = await startFloor(certs);
  const other = await startWebhook({ certs, checkout });
  const mine = await startWebhook({ certs });
  try {
    for (const scenario of chosenScenarios()) {
      const servers = [floor, other, mine];
      const warmup = { ...settings, durationSeconds: WARMUP_SECONDS };
      for (const server of servers)
        await load(server, scenario.bodies, warmup, scenario.oneSequence);
      const ratios: [number[], number[]] = [[], []];
      for (let round = 1; round <= rounds; round++) {
        const [f, o, m] = await loadTogether(servers, scenario);
        ratios[0].push(o!.rps / f!.rps);
        ratios[1].push(m!.rps / f!.rps);
      }
      const show = (values: number[]) =>
        `${(median(values) * 100).toFixed(1)}% (${values.map((v) => (v * 100).toFixed(0)).join(' ')})`;
      say(`${scenario.name}: ${checkout} ${show(ratios[0])}; this checkout ${show(ratios[1])}`);
    }
  } finally {
    for (const server of [floor, other, mine]) await server.stop();
  }
}

/** Each server alone under one case's load (--case), under --cpu-prof; its functions ranked. */
async function profile(certs: DevCerts, work: string) {
  const scenario = scenarios().find((s) => s.name === args.case);
  if (scenario === undefined) throw new Error(`--case: no case named ${args.case}`);
  const starters = {
    webhook: (nodeArgs: string[]) => startWebhook({ certs, nodeArgs }),
    floor: (nodeArgs: string[]) => startFloor(certs, nodeArgs),
  };
  for (const [name, start] of Object.entries(starters)) {
    const dir = join(work, `profile-${name}`);
    const server = await start(['--cpu-prof', `--cpu-prof-dir=${dir}`]);
    const window = { fromUs: 0, toUs: 0 };
    let requests = 0;
    try {
      // Startup and first-call compilation stay out of the ranking as far as a warm-up can.
      await load(
        server,
        scenario.bodies,
        { ...settings, durationSeconds: WARMUP_SECONDS },
        scenario.oneSequence,
      );
      window.fromUs = monotonicUs();
      const result = await load(server, scenario.bodies, settings, scenario.oneSequence);
      window.toUs = monotonicUs();
      requests = result.requests;
      say(
        `${name}, ${scenario.name}, under --cpu-prof: ${result.rps.toFixed(0)} req/s, ${result.cpuUsPerRequest.toFixed(0)} µs CPU per request`,
      );
    } finally {
      await server.stop();
    }
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) throw new Error(`the ${name} wrote no .cpuprofile`);
    say(formatSummary(summarizeProfile(join(dir, file), window), requests));
  }
}

async function main() {
  const work = mkdtempSync(join(tmpdir(), 'prestop-bench-'));
  const certs = makeDevCerts({ dir: join(work, 'certs') });
  say(
    `machine: ${availableParallelism()} CPUs (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}`,
  );
  say(
    `load: autocannon, HTTPS keep-alive, ${settings.connections} connections, pipelining 1, ${settings.durationSeconds} s per run, ${rounds} rounds`,
  );
  say(`webhook: serve as the image runs it, NODE_OPTIONS=${imageNodeOptions() || '(none)'}`);
  if (CPUS !== null) pin(process.pid, CPUS.client);
  say(
    CPUS === null
      ? 'load generator and servers share the CPUs; the ratio is measured in the same run\n'
      : `load generator on CPU ${CPUS.client}, the server under load on CPU ${CPUS.server}; the ratio is measured in the same run\n`,
  );
  try {
    if (args.profile) return await profile(certs, work);
    if (args.against !== undefined) return await against(certs, args.against);

    const webhook = await startWebhook({ certs });
    const floor = await startFloor(certs);
    let rows: Row[];
    let answers: number;
    let rss: number;
    try {
      await checkAnswers(webhook, floor, certs);
      const { all, results, webhookAnswers } = await measure(webhook, floor);
      rows = all.map((s) => summarize(s, results.get(s.name)!));
      answers = webhookAnswers + 2 * chosenScenarios().length;
      // After every case, the distinct templates included, each sent many times.
      rss = rssMib(webhook.pid);
      say(`webhook resident memory after the run: ${rss.toFixed(0)} MiB`);
    } finally {
      await webhook.stop();
      await floor.stop();
    }
    // Every admission is in the log: the webhook paid for recording them all.
    const log = await webhook.log;
    if (log.admissions < answers)
      throw new Error(`the log records ${log.admissions} admissions of ${answers}`);
    say(
      `webhook log: ${log.admissions} admissions recorded, on ${log.lines} lines, for ${answers} answered`,
    );
    say();
    say(table(rows));
    say(
      '(medians over rounds; latency per run from every response; ratio = webhook / floor req/s)',
    );

    const cli = measureCli(work);
    const podsPerSecond = cli.docs / (cli.injectMs / 1000);
    const afterStartup = cli.docs / ((cli.injectMs - cli.startupMs) / 1000);
    say();
    say(
      `CLI: inject -f on ${cli.docs} YAML documents: ${cli.injectMs.toFixed(0)} ms, ${podsPerSecond.toFixed(0)} pods/s (${afterStartup.toFixed(0)} pods/s after the ${cli.startupMs.toFixed(0)} ms process start)`,
    );

    if (args.json) {
      const fresh = rows.find((r) => r.scenario.name === FRESH_CASE);
      if (fresh === undefined) throw new Error(`--json reports "${FRESH_CASE}": keep it in --only`);
      if (fresh.sharedRatio === null) throw new Error('--json needs two CPUs and taskset');
      say(
        JSON.stringify({
          webhook_rps: Math.round(fresh.webhookRps),
          floor_rps: Math.round(fresh.floorRps),
          ratio: Number(fresh.sharedRatio.toFixed(3)),
          p50_ms: Number(fresh.webhook.p50.toFixed(3)),
          p99_ms: Number(fresh.webhook.p99.toFixed(3)),
          rss_mib: Math.round(rss),
          cpu_us_per_admission: Math.round(fresh.webhook.cpuUs),
        }),
      );
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
