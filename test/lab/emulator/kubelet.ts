// The kubelet emulator (a self-check of the lab's logic; the lab itself runs on a
// real kubelet): runs a pod spec's containers as real processes in the
// pod's network namespace and stops them the way the kubelet does
// (pkg/kubelet/kuberuntime/kuberuntime_container.go):
//
// - the grace clock starts with termination, and every container's preStop
//   starts at once;
// - `exec` hooks run inside the container (its network namespace, its uid)
//   exactly as written; `sleep` hooks are a timer in the kubelet; a hook that
//   fails (non-zero exit, missing binary) goes straight to SIGTERM;
// - SIGTERM follows the container's own preStop, or the end of the grace
//   period if the hook is still running; SIGKILL follows when the grace
//   period is spent, with a one-off minimum of 2 s after SIGTERM;
// - native sidecars (init containers with restartPolicy Always) get SIGTERM
//   only after every main container has exited, in reverse order;
// - when every container has exited the pod is gone, and so is its address.

import type { Container, LifecycleHandler, PodLike } from '../../../src/core/types.ts';
import type { LabNetwork, PodNetwork } from './network.ts';
import { runProcess, type Exit, type LabProcess } from './processes.ts';

/** The kubelet's default when terminationGracePeriodSeconds is unset. */
const DEFAULT_GRACE_SECONDS = 30;
/** minimumGracePeriodInSeconds: the time SIGTERM always gets before SIGKILL. */
export const MINIMUM_GRACE_MS = 2000;
const READY_TIMEOUT_MS = 20_000;

/** How to run one container's process (its "image"), as argv. */
export type ContainerLauncher = (container: Container, pod: PodNetwork) => string[];

export type HookEnd = 'returned' | 'failed' | 'grace spent' | 'container exited';

export interface HookRecord {
  container: string;
  handler: 'exec' | 'sleep';
  ms: number;
  end: HookEnd;
  exitCode?: number | null;
}

export interface PodEvent {
  atMs: number;
  container: string;
  what: string;
}

export interface Termination {
  pod: string;
  /** Wall-clock times (Date.now()). */
  startedAt: number;
  goneAt: number;
  hooks: HookRecord[];
  events: PodEvent[];
}

interface RunningContainer {
  spec: Container;
  process: LabProcess;
}

interface Hook {
  /** Resolves when the hook ends, or is counted as ended. */
  done: Promise<void>;
  /** Filled in when the hook ends. */
  record: HookRecord | null;
  /** The grace period is spent: the kubelet moves on; the hook still runs. */
  expire(): void;
  /** The container is gone: so is a hook running inside it. */
  stop(end: HookEnd): void;
}

const now = () => Date.now();

/** Resolves `value` once `ms` have passed, or as soon as `other` settles. */
async function raceTimer<T, U>(other: Promise<T>, ms: number, value: U): Promise<T | U> {
  let timer: NodeJS.Timeout | undefined;
  const elapsed = new Promise<U>(
    (resolve) => (timer = setTimeout(resolve, Math.max(0, ms), value)),
  );
  try {
    return await Promise.race([other, elapsed]);
  } finally {
    clearTimeout(timer);
  }
}

export function uidOf(container: Container): number {
  const uid = container.securityContext?.runAsUser;
  return typeof uid === 'number' ? uid : 0;
}

function isNativeSidecar(container: Container): boolean {
  return container.restartPolicy === 'Always';
}

export class RunningPod {
  readonly name: string;
  readonly network: PodNetwork;
  readonly spec: PodLike;
  private readonly containers = new Map<string, RunningContainer>();
  private readonly labNetwork: LabNetwork;
  private readonly events: PodEvent[] = [];
  private termination: Promise<Termination> | undefined;
  private origin = now();

  constructor(spec: PodLike, network: PodNetwork, labNetwork: LabNetwork) {
    this.name = network.name;
    this.spec = spec;
    this.network = network;
    this.labNetwork = labNetwork;
  }

  /** Starts native sidecars first, then the main containers; resolves when all are ready. */
  async start(launch: ContainerLauncher): Promise<void> {
    const sidecars = (this.spec.spec.initContainers ?? []).filter(isNativeSidecar);
    for (const group of [sidecars, this.spec.spec.containers]) {
      const ready = group.map((container) => {
        const process = runProcess(launch(container, this.network), {
          ns: this.network.ns,
          uid: uidOf(container),
          readAnyFile: true,
        });
        this.containers.set(container.name, { spec: container, process });
        return process.waitForLine((line) => line === 'ready', READY_TIMEOUT_MS);
      });
      await Promise.all(ready);
    }
  }

  /** Deletes the pod: runs the termination sequence once. */
  terminate(): Promise<Termination> {
    this.termination ??= this.runTermination();
    return this.termination;
  }

  /** Kills everything at once (teardown of pods the lab does not measure). */
  discard(): void {
    for (const { process } of this.containers.values()) process.signal('SIGKILL');
  }

  private note(container: string, what: string): void {
    this.events.push({ atMs: now() - this.origin, container, what });
  }

  private async runTermination(): Promise<Termination> {
    const startedAt = now();
    this.origin = startedAt;
    const graceSeconds = this.spec.spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS;
    const deadline = startedAt + graceSeconds * 1000;
    const all = [...this.containers.values()];
    const hooks = new Map(all.map((c) => [c.spec.name, this.startHook(c)] as const));

    const main = all.filter((c) => !isNativeSidecar(c.spec));
    const sidecars = all.filter((c) => isNativeSidecar(c.spec)).reverse();
    await Promise.all(main.map((c) => this.stopContainer(c, hooks.get(c.spec.name)!, deadline)));
    for (const sidecar of sidecars) {
      await this.stopContainer(sidecar, hooks.get(sidecar.spec.name)!, deadline);
    }

    await this.labNetwork.removePod(this.network);
    const goneAt = now();
    this.note('pod', 'gone, address removed');
    return {
      pod: this.name,
      startedAt,
      goneAt,
      hooks: [...hooks.values()].flatMap((hook) => (hook.record === null ? [] : [hook.record])),
      events: this.events,
    };
  }

  private async stopContainer(c: RunningContainer, hook: Hook, deadline: number): Promise<void> {
    const name = c.spec.name;
    const exited = c.process.exited.then((exit) => {
      this.note(name, `exited (${describeExit(exit)})`);
      return exit;
    });
    const first = await raceTimer(Promise.race([hook.done, exited]), deadline - now(), 'grace');
    if (c.process.running()) {
      if (first === 'grace') hook.expire();
      const allowed = Math.max(deadline - now(), MINIMUM_GRACE_MS);
      this.note(name, 'SIGTERM');
      c.process.signal('SIGTERM');
      const gone = await raceTimer(
        exited.then(() => true),
        allowed,
        false,
      );
      if (!gone) {
        this.note(name, 'SIGKILL');
        c.process.signal('SIGKILL');
      }
    }
    await exited;
    // An exec hook runs inside the container and dies with it.
    hook.stop('container exited');
  }

  private startHook(c: RunningContainer): Hook {
    const handler: LifecycleHandler | undefined = c.spec.lifecycle?.preStop;
    const name = c.spec.name;
    const started = now();
    if (handler === undefined) {
      return { done: Promise.resolve(), record: null, expire: () => {}, stop: () => {} };
    }
    let settle: () => void = () => {};
    let kill: () => void = () => {};
    const hook: Hook = {
      done: new Promise<void>((resolve) => (settle = resolve)),
      record: null,
      expire: () => finish('grace spent'),
      stop: (end) => {
        kill();
        finish(end);
      },
    };
    const kind = handler.sleep !== undefined ? 'sleep' : 'exec';
    function finish(end: HookEnd, exitCode?: number | null): void {
      if (hook.record !== null) return;
      hook.record = {
        container: name,
        handler: kind,
        ms: now() - started,
        end,
        ...(exitCode === undefined ? {} : { exitCode }),
      };
      settle();
    }

    if (handler.sleep !== undefined) {
      // The sleep action runs in the kubelet: a timer.
      this.note(name, `preStop sleep ${handler.sleep.seconds}s`);
      const timer = setTimeout(() => finish('returned'), handler.sleep.seconds * 1000);
      kill = () => clearTimeout(timer);
      void hook.done.then(() => this.note(name, `preStop ${hook.record?.end}`));
      return hook;
    }
    const command = handler.exec?.command;
    if (command === undefined || command.length === 0) {
      throw new Error(`${name}: the lab runs exec and sleep preStop hooks only`);
    }
    // An exec hook runs inside the container: its network namespace, its
    // uid, the command exactly as written.
    this.note(name, 'preStop exec');
    const process = runProcess(command, { ns: this.network.ns, uid: uidOf(c.spec), group: true });
    kill = () => process.signal('SIGKILL');
    void process.exited.then((exit) => finish(exit.code === 0 ? 'returned' : 'failed', exit.code));
    void hook.done.then(() => this.note(name, `preStop ${hook.record?.end}`));
    return hook;
  }
}

function describeExit(exit: Exit): string {
  return exit.signal !== null ? exit.signal : `code ${exit.code}`;
}

/** The longest app preStop, and how the hooks ended. */
export function describeHooks(hooks: readonly HookRecord[]): string {
  if (hooks.length === 0) return 'none';
  const longest = Math.max(...hooks.map((h) => h.ms)) / 1000;
  const ends = [...new Set(hooks.map((h) => h.end))].join(', ');
  return `${longest.toFixed(1)} s, ${ends}`;
}
