// Where a node run keeps its state on the machine, and how all of it is
// removed again: after a normal stop, on the test process's exit, and at the
// next start when an earlier run was killed outright (SIGKILL runs no exit
// hook). Everything here is synchronous so that it can run in an exit hook.
//
// A run's traces, all named after its id (`<pid>-<n>`):
//   - its directory RUNS_ROOT/<id> (containerd's root and state, the kubelet's
//     root dir, configs, logs) with the mounts containerd and the kubelet made
//     under it (overlay rootfs, pod network namespaces, volumes);
//   - the network namespace `prestop-<id>`;
//   - the cgroups `prestop-<id>.<node>` in every hierarchy (pods' processes);
//   - containerd shims (not our children) and their sockets in
//     /run/containerd/s; CNI result caches in /var/lib/cni/results;
//   - the kernel tunables the kubelet sets (vm.overcommit_memory,
//     kernel.panic, kernel.panic_on_oops), restored to what they were.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const RUNS_ROOT = path.join(os.tmpdir(), 'prestop-node');
/** In a run directory kept for debugging after its run was stopped. */
export const KEPT_MARKER = 'kept';
const CGROUP_ROOT = '/sys/fs/cgroup';
const SHIM_SOCKET_DIR = '/run/containerd/s';
const CNI_RESULTS_DIR = '/var/lib/cni/results';

/** Kernel settings the kubelet changes at start (they are not per namespace). */
const KERNEL_TUNABLES = [
  'vm/overcommit_memory',
  'vm/panic_on_oom',
  'kernel/panic',
  'kernel/panic_on_oops',
  'kernel/keys/root_maxkeys',
  'kernel/keys/root_maxbytes',
];

export interface RunState {
  id: string;
  dir: string;
  netns: string;
}

let runCounter = 0;

/** A fresh run: its directory (owned by this process) and names. */
export function newRun(): RunState {
  const id = `${process.pid}-${++runCounter}`;
  const state = runState(id);
  fs.mkdirSync(state.dir, { recursive: true, mode: 0o755 });
  fs.writeFileSync(
    path.join(state.dir, 'owner.json'),
    JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) }) + '\n',
  );
  saveKernelTunables(state);
  return state;
}

/** The state of the run with this id (e.g. one a killed process left). */
export function runState(id: string): RunState {
  return { id, dir: path.join(RUNS_ROOT, id), netns: `prestop-${id}` };
}

/** The name of a node's cgroup root and CNI network: `prestop-<id>.<node>`. */
export function nodeScopedName(run: RunState, node: string): string {
  return `prestop-${run.id}.${node}`;
}

// ------------------------------------------------------------ stale runs

/**
 * Removes what runs whose process is gone left behind. Returns their ids.
 * Runs of live processes (another test file running now) are left alone.
 */
export function removeStaleRuns(): string[] {
  const stale = new Set<string>();
  for (const id of safeReaddir(RUNS_ROOT)) {
    const dir = path.join(RUNS_ROOT, id);
    // Kept on purpose (PRESTOP_E2E_KEEP_TMP=1): stopped already, left for reading.
    if (fs.existsSync(path.join(dir, KEPT_MARKER))) continue;
    if (!ownerAlive(dir)) stale.add(id);
  }
  // A namespace whose run directory is gone already.
  for (const netns of safeReaddir('/run/netns')) {
    const m = /^prestop-((\d+)-\d+)$/.exec(netns);
    if (m !== null && !pidAlive(Number(m[2])) && !fs.existsSync(path.join(RUNS_ROOT, m[1]!)))
      stale.add(m[1]!);
  }
  for (const id of stale) removeRun(runState(id));
  return [...stale];
}

function ownerAlive(dir: string): boolean {
  try {
    const owner = JSON.parse(fs.readFileSync(path.join(dir, 'owner.json'), 'utf8')) as {
      pid: number;
      startTime: string;
    };
    // A reused pid has another start time.
    return pidAlive(owner.pid) && processStartTime(owner.pid) === owner.startTime;
  } catch {
    // No owner file yet (being created) or any more: the id names the pid.
    const m = /^(\d+)-/.exec(path.basename(dir));
    return m !== null && pidAlive(Number(m[1]));
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function processStartTime(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces), from field 3 on.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

/** What is still on the machine of a run (all empty after removeRun). */
export interface RunLeftovers {
  netns: boolean;
  processes: number[];
  mounts: string[];
  cgroups: string[];
  dir: boolean;
}

export function runLeftovers(run: RunState): RunLeftovers {
  return {
    netns: fs.existsSync(`/run/netns/${run.netns}`),
    processes: runProcesses(run).filter((pid) => !isZombie(pid)),
    mounts: mountsUnder(run.dir),
    cgroups: runCgroupDirs(run),
    dir: fs.existsSync(run.dir),
  };
}

// ---------------------------------------------------------------- removal

/**
 * Removes every trace of a run: kills its processes (by pid: those in its
 * namespace, in its cgroups, or naming its directory, shims included),
 * unmounts what is mounted under its directory, deletes its cgroups and
 * namespace, restores the kernel tunables, removes its directory.
 */
export function removeRun(run: RunState, opts: { keepDir?: boolean } = {}): void {
  killRunProcesses(run);
  const shimSockets = findShimSockets(run.dir);
  unmountUnder(run.dir);
  for (const socket of shimSockets) fs.rmSync(socket, { force: true });
  removeEmptyDir(SHIM_SOCKET_DIR);
  removeEmptyDir(path.dirname(SHIM_SOCKET_DIR));
  removeCgroups(run);
  spawnSync('ip', ['netns', 'delete', run.netns], { stdio: 'ignore' });
  for (const file of safeReaddir(CNI_RESULTS_DIR)) {
    if (file.startsWith(`prestop-${run.id}.`)) fs.rmSync(path.join(CNI_RESULTS_DIR, file));
  }
  removeEmptyDir(CNI_RESULTS_DIR);
  removeEmptyDir(path.dirname(CNI_RESULTS_DIR));
  restoreKernelTunables(run);
  if (!opts.keepDir) fs.rmSync(run.dir, { recursive: true, force: true });
}

/** The pids that belong to a run, this process excluded. */
export function runProcesses(run: RunState): number[] {
  const pids = new Set<number>();
  const inNetns = spawnSync('ip', ['netns', 'pids', run.netns], { encoding: 'utf8' });
  if (inNetns.status === 0) {
    for (const line of inNetns.stdout.split('\n')) if (/^\d+$/.test(line)) pids.add(Number(line));
  }
  for (const dir of runCgroupDirs(run)) {
    for (const sub of walkDirs(dir)) {
      const procs = safeRead(path.join(sub, 'cgroup.procs'));
      for (const line of procs.split('\n')) if (/^\d+$/.test(line)) pids.add(Number(line));
    }
  }
  const marker = Buffer.from(`${run.dir}/`);
  for (const entry of safeReaddir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/cmdline`).includes(marker)) pids.add(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  pids.delete(process.pid);
  return [...pids];
}

function killRunProcesses(run: RunState): void {
  for (let round = 0; round < 50; round++) {
    const pids = runProcesses(run).filter((pid) => !isZombie(pid));
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    sleepSync(100);
  }
}

function isZombie(pid: number): boolean {
  const stat = safeRead(`/proc/${pid}/stat`);
  return stat === '' || stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
}

/** Mount points at or under `dir`, most recent first (the order to unmount them in). */
export function mountsUnder(dir: string): string[] {
  const mounts: string[] = [];
  for (const line of safeRead('/proc/self/mountinfo').split('\n')) {
    const field = line.split(' ')[4];
    if (field === undefined) continue;
    const mountPoint = field.replace(/\\([0-7]{3})/g, (_, octal: string) =>
      String.fromCharCode(parseInt(octal, 8)),
    );
    if (mountPoint === dir || mountPoint.startsWith(`${dir}/`)) mounts.push(mountPoint);
  }
  return mounts.reverse();
}

/** Unmounts everything at or under `dir` (lazily when busy). */
export function unmountUnder(dir: string): void {
  for (let round = 0; round < 10; round++) {
    const mounts = mountsUnder(dir);
    if (mounts.length === 0) return;
    for (const mountPoint of mounts) {
      const result = spawnSync('umount', [mountPoint], { stdio: 'ignore' });
      if (result.status !== 0) spawnSync('umount', ['-l', mountPoint], { stdio: 'ignore' });
    }
  }
}

function findShimSockets(dir: string): string[] {
  // Each task's bundle holds the address its shim listens on.
  const sockets: string[] = [];
  for (const sub of safeReaddir(dir)) {
    const tasks = path.join(dir, sub, 'state', 'io.containerd.runtime.v2.task');
    for (const namespace of safeReaddir(tasks)) {
      for (const id of safeReaddir(path.join(tasks, namespace))) {
        const address = safeRead(path.join(tasks, namespace, id, 'address')).trim();
        if (address.startsWith(`unix://${SHIM_SOCKET_DIR}/`))
          sockets.push(address.slice('unix://'.length));
      }
    }
  }
  return sockets;
}

// ----------------------------------------------------------------- cgroups

/** The cgroup hierarchies mounted under /sys/fs/cgroup (v1 controllers, unified). */
function cgroupHierarchies(): string[] {
  return safeReaddir(CGROUP_ROOT)
    .map((name) => path.join(CGROUP_ROOT, name))
    .filter((dir) => fs.existsSync(path.join(dir, 'cgroup.procs')));
}

/**
 * Creates a node's cgroup root in every hierarchy (the kubelet checks that
 * it exists), with the parent's cpus and memory nodes for cpuset.
 */
export function createCgroupRoot(name: string): void {
  for (const hierarchy of cgroupHierarchies()) {
    const dir = path.join(hierarchy, name);
    fs.mkdirSync(dir, { recursive: true });
    for (const file of ['cpuset.cpus', 'cpuset.mems']) {
      const parent = path.join(hierarchy, file);
      if (fs.existsSync(parent) && safeRead(path.join(dir, file)).trim() === '')
        fs.writeFileSync(path.join(dir, file), safeRead(parent));
    }
  }
}

function runCgroupDirs(run: RunState): string[] {
  const dirs: string[] = [];
  for (const hierarchy of cgroupHierarchies()) {
    for (const name of safeReaddir(hierarchy)) {
      if (name.startsWith(`prestop-${run.id}.`)) dirs.push(path.join(hierarchy, name));
    }
  }
  return dirs;
}

function removeCgroups(run: RunState): void {
  for (let round = 0; round < 20; round++) {
    let left = 0;
    for (const dir of runCgroupDirs(run)) {
      // Children before parents.
      for (const sub of walkDirs(dir).reverse()) {
        try {
          fs.rmdirSync(sub);
        } catch {
          left++;
        }
      }
    }
    if (left === 0) return;
    sleepSync(100);
  }
}

/** `dir` and every directory under it, parents before children. */
function walkDirs(dir: string): string[] {
  const out = [dir];
  for (let i = 0; i < out.length; i++) {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(out[i]!, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const entry of entries) if (entry.isDirectory()) out.push(path.join(out[i]!, entry.name));
  }
  return out;
}

// --------------------------------------------------------- kernel tunables

function saveKernelTunables(run: RunState): void {
  const values: Record<string, string> = {};
  for (const key of KERNEL_TUNABLES) values[key] = safeRead(`/proc/sys/${key}`).trim();
  fs.writeFileSync(path.join(run.dir, 'kernel-tunables.json'), JSON.stringify(values) + '\n');
}

function restoreKernelTunables(run: RunState): void {
  let saved: Record<string, string>;
  try {
    saved = JSON.parse(
      fs.readFileSync(path.join(run.dir, 'kernel-tunables.json'), 'utf8'),
    ) as Record<string, string>;
  } catch {
    return;
  }
  for (const [key, value] of Object.entries(saved)) {
    if (value === '' || safeRead(`/proc/sys/${key}`).trim() === value) continue;
    try {
      fs.writeFileSync(`/proc/sys/${key}`, value);
    } catch {
      // best effort
    }
  }
}

// ------------------------------------------------------------------ helpers

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function removeEmptyDir(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    // not empty, or not there
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
