// The emulator's measured rollout: N replicas of one strategy's pod spec
// behind HAProxy, replaced one at a time (maxSurge 1, maxUnavailable 0) under
// constant load. A self-check of the lab's own parts (apps, proxy, load
// generator, HAProxy rules); the lab's results come from the real node.
//
// The Deployment controller is emulated as it behaves by default: it starts a
// new pod, waits until it is Ready, then deletes an old one and goes on; a
// terminating pod no longer counts against maxSurge, so old pods stop in
// parallel. Each Ready and each deletion reaches the load balancer through
// the endpoint propagation delay.

import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FRONTEND_PORT, Haproxy } from '../haproxy.ts';
import { UID } from '../image.ts';
import type { LoadConfig, LoadResult } from '../load.ts';
import type { Strategy } from '../strategies.ts';
import { Endpoints, seededRandom, type Propagation } from './endpoints.ts';
import { RunningPod, type HookRecord, type Termination } from './kubelet.ts';
import { LabNetwork } from './network.ts';
import {
  backendArgv,
  launcherFor,
  SERVICE_PORT,
  strategyPod,
  type EmulatorScenario,
} from './pods.ts';
import { runProcess, trackDirectory, type LabProcess } from './processes.ts';

const LOAD = fileURLToPath(new URL('../load.ts', import.meta.url));
export const CLIENT_CONNECT_TIMEOUT_MS = 2000;
export const CLIENT_TOTAL_TIMEOUT_MS = 5000;
/** Load keeps running this long after the last change has landed. */
const TAIL_MS = 1000;
const MAX_LOAD_MS = 10 * 60_000;

export interface LabSettings {
  replicas: number;
  propagation: Propagation;
  /** Every rollout replays the same jitters from this seed, so strategies meet the same delays. */
  seed: number;
  log: (line: string) => void;
  verbose: boolean;
}

export interface EmulatedRollout {
  scenario: string;
  strategy: string;
  load: LoadResult;
  /** From the first new pod to the last old pod gone. */
  rolloutSeconds: number;
  /** The app containers' preStop hooks of the pods that were stopped. */
  appHooks: HookRecord[];
  grace: number;
}

let runs = 0;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const ready = (line: string) => line === 'ready';

export async function runRollout(
  scenario: EmulatorScenario,
  strategy: Strategy,
  settings: LabSettings,
): Promise<EmulatedRollout> {
  const directory = await mkdtemp(join(tmpdir(), 'prestop-lab-'));
  trackDirectory(directory);
  const network = new LabNetwork(`r${++runs}`);
  const haproxy = new Haproxy(directory);
  const pods: RunningPod[] = [];
  let load: LabProcess | undefined;
  let backend: LabProcess | undefined;
  try {
    await network.create();
    await haproxy.start((argv) => {
      const proc = runProcess(argv, { ns: network.ns });
      return {
        running: () => proc.running(),
        stop: () => proc.signal('SIGKILL'),
        output: () => proc.output(),
      };
    });

    let backendUrl = '';
    if (scenario.mesh) {
      const service = await network.addPod('svc');
      backend = runProcess(backendArgv(), { ns: service.ns, uid: UID.app, readAnyFile: true });
      await backend.waitForLine(ready, 20_000);
      backendUrl = `http://${service.ip}:${SERVICE_PORT}/`;
    }

    const template = strategyPod(strategy, scenario.mesh);
    const launch = launcherFor(scenario, backendUrl);
    const startPod = async (name: string) => {
      const pod = new RunningPod(structuredClone(template), await network.addPod(name), network);
      pods.push(pod);
      await pod.start(launch);
      return pod;
    };

    const endpoints = new Endpoints(haproxy, settings.propagation, seededRandom(settings.seed));
    const old: RunningPod[] = [];
    for (let i = 0; i < settings.replicas; i++) {
      const pod = await startPod(`old${i}`);
      await endpoints.addNow(pod.name, pod.network.ip, SERVICE_PORT);
      old.push(pod);
    }

    const loadConfig: LoadConfig = {
      host: '127.0.0.1',
      port: FRONTEND_PORT,
      rate: scenario.rate,
      connections: 'mixed',
      poolSize: 1024,
      connectTimeoutMs: CLIENT_CONNECT_TIMEOUT_MS,
      totalTimeoutMs: CLIENT_TOTAL_TIMEOUT_MS,
      maxRunMs: MAX_LOAD_MS,
    };
    load = runProcess([process.execPath, LOAD, JSON.stringify(loadConfig)], {
      ns: network.ns,
      stdin: 'pipe',
    });
    await load.waitForLine(ready, 20_000);
    await sleep(scenario.warmupMs);

    const started = Date.now();
    endpoints.origin = started;
    const terminations: Promise<Termination>[] = [];
    for (let i = 0; i < settings.replicas; i++) {
      const fresh = await startPod(`new${i}`);
      endpoints.add(fresh.name, fresh.network.ip, SERVICE_PORT);
      endpoints.remove(old[i]!.name);
      terminations.push(old[i]!.terminate());
    }
    const stopped = await Promise.all(terminations);
    const finished = Math.max(...stopped.map((t) => t.goneAt));
    await endpoints.settled();
    await sleep(TAIL_MS);

    load.child.stdin!.write('stop\n');
    const summary = await load.waitForLine(
      (line) => line.startsWith('{'),
      CLIENT_TOTAL_TIMEOUT_MS + 10_000,
    );
    if (!haproxy.running()) throw new Error(`haproxy died during the run:\n${haproxy.log()}`);

    if (settings.verbose) {
      for (const t of stopped) {
        settings.log(
          `  ${t.pod}: ${t.events.map((e) => `${e.atMs}ms ${e.container} ${e.what}`).join('; ')}`,
        );
      }
      settings.log(
        `  endpoints: ${endpoints.events.map((e) => `${e.atMs}ms ${e.pod} ${e.change}`).join('; ')}`,
      );
    }
    return {
      scenario: scenario.name,
      strategy: strategy.name,
      load: JSON.parse(summary) as LoadResult,
      rolloutSeconds: (finished - started) / 1000,
      appHooks: stopped.flatMap((t) => t.hooks.filter((h) => h.container === 'app')),
      grace: template.spec.terminationGracePeriodSeconds ?? 30,
    };
  } finally {
    load?.signal('SIGKILL');
    backend?.signal('SIGKILL');
    for (const pod of pods) pod.discard();
    haproxy.stop();
    network.destroy();
    rmSync(directory, { recursive: true, force: true });
  }
}
