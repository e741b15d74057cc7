// The IPVS lab's host side: a network namespace of its own with a bridge
// and a tap device, the control plane in it (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler: test/support/node), the objects
// the guest's pods belong to (a Namespace, the guest's Node kept alive by
// lease renewals, the Service), and the User-Mode Linux guest attached to
// the tap. Nothing is added to the machine's own network namespace.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { api } from '../support/chart.ts';
import { ensureTools } from '../support/cluster/binaries.ts';
import {
  makeTempDir,
  mustRun,
  onExit,
  repoRoot,
  spawnManaged,
  waitFor,
  type ManagedProcess,
} from '../support/cluster/processes.ts';
import { componentKubeconfig, startNodeControlPlane } from '../support/node/control-plane.ts';
import { startNetnsDialer } from '../support/node/netns.ts';
import { makeCertificateAuthority } from '../support/node/pki.ts';
import type { ControlPlane } from '../support/cluster/apiserver.ts';
import type { LabResults, LabSpec, StrategyName } from './spec.ts';

export const NETNS_PREFIX = 'prestop-ipvs-';
const HOST_IP = '10.240.0.1';
const GUEST_IP = '10.240.0.2';
const BRIDGE = 'ipvsbr0';
const TAP = 'ipvstap0';
const GUEST_MEMORY = '1536M';
const GUEST_SCRIPT = path.join(repoRoot, 'scripts', 'install-ipvs-guest.sh');

export interface GuestImage {
  kernel: string;
  initramfs: string;
}

/** Builds or finds the cached guest (scripts/install-ipvs-guest.sh). */
export function ensureGuestImage(log: (line: string) => void): GuestImage {
  const result = spawnSync('bash', [GUEST_SCRIPT], { encoding: 'utf8' });
  for (const line of result.stderr.trim().split('\n')) if (line) log(line);
  if (result.status !== 0) throw new Error(`install-ipvs-guest.sh failed (exit ${result.status})`);
  const values = new Map(
    result.stdout
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  const kernel = values.get('UML_KERNEL');
  const initramfs = values.get('INITRAMFS');
  if (!kernel || !initramfs) throw new Error(`install-ipvs-guest.sh printed: ${result.stdout}`);
  return { kernel, initramfs };
}

/** Namespaces of earlier runs whose process is gone. */
export function removeStaleNamespaces(): string[] {
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  const removed: string[] = [];
  for (const name of list.split('\n').map((l) => l.split(' ')[0] ?? '')) {
    const pid = Number(name.slice(NETNS_PREFIX.length));
    if (!name.startsWith(NETNS_PREFIX) || !Number.isInteger(pid)) continue;
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    if (alive) continue;
    spawnSync('ip', ['netns', 'del', name]);
    removed.push(name);
  }
  return removed;
}

async function createLabNetns(name: string): Promise<void> {
  await mustRun('ip', ['netns', 'add', name]);
  onExit(() => spawnSync('ip', ['netns', 'del', name]));
  const ip = (...args: string[]) => mustRun('ip', ['-n', name, ...args]);
  await ip('link', 'set', 'lo', 'up');
  await ip('link', 'add', BRIDGE, 'type', 'bridge');
  await ip('addr', 'add', `${HOST_IP}/24`, 'dev', BRIDGE);
  await ip('link', 'set', BRIDGE, 'up');
  await ip('tuntap', 'add', 'dev', TAP, 'mode', 'tap');
  await ip('link', 'set', TAP, 'master', BRIDGE);
  await ip('link', 'set', TAP, 'up');
}

const microTime = () => new Date().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

/** The guest's Node, Ready, with a lease renewed as a kubelet does, so no controller marks its pods not ready. */
async function registerGuestNode(cp: ControlPlane, name: string): Promise<() => void> {
  const must = async (method: string, urlPath: string, body: unknown, type?: string) => {
    const res = await api(cp, method, urlPath, body, type);
    if (res.status >= 300)
      throw new Error(`${method} ${urlPath}: ${res.status} ${JSON.stringify(res.body)}`);
  };
  await must('POST', '/api/v1/nodes', {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux' } },
  });
  const status = () => ({
    status: {
      addresses: [{ type: 'InternalIP', address: GUEST_IP }],
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          lastHeartbeatTime: new Date().toISOString(),
          lastTransitionTime: new Date().toISOString(),
        },
      ],
    },
  });
  await must('PATCH', `/api/v1/nodes/${name}/status`, status(), 'application/merge-patch+json');
  await must('POST', '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases', {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name },
    spec: { holderIdentity: name, leaseDurationSeconds: 40, renewTime: microTime() },
  });
  const renew = setInterval(() => {
    void api(
      cp,
      'PATCH',
      `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${name}`,
      { spec: { renewTime: microTime() } },
      'application/merge-patch+json',
    ).catch(() => {});
    void api(
      cp,
      'PATCH',
      `/api/v1/nodes/${name}/status`,
      status(),
      'application/merge-patch+json',
    ).catch(() => {});
  }, 10_000);
  return () => clearInterval(renew);
}

export interface LabControlPlane {
  netns: string;
  dir: string;
  controlDir: string;
  cp: ControlPlane;
  processes: ManagedProcess[];
  stop(): Promise<void>;
}

/** The lab's namespace, bridge and tap, and the control plane in it. */
export async function startLabControlPlane(): Promise<LabControlPlane> {
  const tools = await ensureTools();
  const dir = await makeTempDir('prestop-ipvs-');
  await fsp.chmod(dir, 0o755);
  const netns = `${NETNS_PREFIX}${process.pid}`;
  const processes: ManagedProcess[] = [];
  const stop = async () => {
    for (const proc of [...processes].reverse()) await proc.stop(5_000);
    spawnSync('ip', ['netns', 'del', netns]);
  };
  try {
    await createLabNetns(netns);
    const dialer = await startNetnsDialer(netns, dir);
    processes.push(dialer.proc);
    const ca = await makeCertificateAuthority(path.join(dir, 'pki'), 'prestop-ipvs-lab');
    const controlDir = path.join(dir, 'control-plane');
    const plane = await startNodeControlPlane({
      dir: controlDir,
      netns,
      dialer,
      ca,
      advertiseIP: HOST_IP,
      serviceCIDR: '10.96.0.0/16',
      clusterCIDR: '10.244.0.0/16',
      binaries: {
        etcd: tools.etcd,
        kubeApiserver: tools.kubeApiserver,
        kubeControllerManager: tools.kubeControllerManager,
        kubeScheduler: tools.kubeScheduler,
      },
    });
    processes.push(...plane.processes);
    return { netns, dir, controlDir, cp: plane.controlPlane, processes, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * Boots the guest with `main` (a .ts file of the work tree) as its program
 * and `outDir` shared read-write at /out; resolves when it has powered off
 * after `main` exited 0. Console lines go to `log` as they come.
 */
export async function bootGuest(options: {
  image: GuestImage;
  main: string;
  outDir: string;
  logDir: string;
  network?: { netns: string; tap: string; address: string };
  log: (line: string) => void;
  processes?: ManagedProcess[];
  timeoutMs?: number;
}): Promise<void> {
  if (/\s/.test(repoRoot) || /\s/.test(options.outDir)) {
    throw new Error(
      `UML's command line cannot carry paths with blanks: ${repoRoot}, ${options.outDir}`,
    );
  }
  const consoleLog = path.join(options.logDir, 'guest-console.log');
  const { network } = options;
  const guest = spawnManaged(
    'uml-guest',
    options.image.kernel,
    [
      `mem=${GUEST_MEMORY}`,
      `initrd=${options.image.initramfs}`,
      'con=null',
      'con0=fd:0,fd:1',
      ...(network
        ? [`vec0:transport=tap,ifname=${network.tap}`, `PRESTOP_IP=${network.address}`]
        : []),
      'quiet',
      `PRESTOP_REPO=${repoRoot.replace(/\/$/, '')}`,
      `PRESTOP_OUT=${options.outDir}`,
      `PRESTOP_MAIN=${options.main}`,
    ],
    consoleLog,
    { ...(network ? { netns: network.netns } : {}), dieWithParent: true },
  );
  options.processes?.push(guest);
  let shown = 0;
  const follow = setInterval(() => {
    const text = fs.existsSync(consoleLog) ? fs.readFileSync(consoleLog, 'utf8') : '';
    const complete = text.slice(shown).split('\n').slice(0, -1);
    shown += complete.reduce((n, line) => n + line.length + 1, 0);
    for (const line of complete) options.log(line);
  }, 500);
  const timeoutMs = options.timeoutMs ?? 15 * 60_000;
  const exit = await Promise.race([
    guest.exited,
    new Promise<null>((resolve) => setTimeout(resolve, timeoutMs, null)),
  ]);
  clearInterval(follow);
  if (exit === null) await guest.stop(1000);
  const status = await fsp
    .readFile(path.join(options.outDir, 'guest-exit-status'), 'utf8')
    .catch(() => '');
  if (exit === null || status.trim() !== '0') {
    throw new Error(
      `the guest ${exit === null ? `did not finish in ${timeoutMs / 1000} s` : `ended with status ${JSON.stringify(status.trim())}`}:\n${guest.logTail(60)}`,
    );
  }
}

export interface LabRun {
  results: LabResults;
  /** Seconds: the control plane up, the guest's whole run. */
  timings: { controlPlaneS: number; guestS: number };
}

export async function runIpvsLab(options: {
  strategies: StrategyName[];
  log: (line: string) => void;
  verbose: boolean;
}): Promise<LabRun> {
  const { log } = options;
  const image = ensureGuestImage(log);
  const started = Date.now();
  const lab = await startLabControlPlane();
  const { netns, dir, controlDir, cp, processes } = lab;
  const outDir = path.join(dir, 'out');
  let stopHeartbeat = () => {};
  try {
    await fsp.mkdir(outDir);
    const spec: LabSpec = {
      kubeconfig: '/out/kubeconfig',
      namespace: 'ipvs-lab',
      nodeName: 'ipvs-guest',
      nodeIP: GUEST_IP,
      service: { name: 'web', clusterIP: '10.96.0.10', port: 80, targetPort: 8080 },
      strategies: options.strategies,
      load: {
        ratePerSecond: 100,
        sourcePorts: 64,
        shortRequestMs: 5,
        longRequests: 6,
        longRequestMs: 2500,
      },
      preStopSleepSeconds: 3,
      terminationGracePeriodSeconds: 30,
      warmupMs: 1500,
      afterGoneMs: 5000,
    };
    for (const [method, urlPath, body] of [
      [
        'POST',
        '/api/v1/namespaces',
        { apiVersion: 'v1', kind: 'Namespace', metadata: { name: spec.namespace } },
      ],
      [
        'POST',
        `/api/v1/namespaces/${spec.namespace}/services`,
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: spec.service.name },
          spec: {
            clusterIP: spec.service.clusterIP,
            selector: { app: spec.service.name },
            ports: [
              { port: spec.service.port, targetPort: spec.service.targetPort, protocol: 'TCP' },
            ],
          },
        },
      ],
    ] as const) {
      const res = await api(cp, method, urlPath, body);
      if (res.status >= 300)
        throw new Error(`${method} ${urlPath}: ${res.status} ${JSON.stringify(res.body)}`);
    }
    stopHeartbeat = await registerGuestNode(cp, spec.nodeName);
    // Pods need their ServiceAccount, made by the controller manager.
    await waitFor('the default ServiceAccount', 60_000, async () => {
      const res = await api(
        cp,
        'GET',
        `/api/v1/namespaces/${spec.namespace}/serviceaccounts/default`,
      );
      return res.status === 200;
    });
    await fsp.copyFile(componentKubeconfig(controlDir, 'admin'), path.join(outDir, 'kubeconfig'));
    await fsp.writeFile(path.join(outDir, 'spec.json'), JSON.stringify(spec, null, 2));
    const controlPlaneS = (Date.now() - started) / 1000;
    log(
      `ipvs lab: control plane ${cp.version} ready in ${controlPlaneS.toFixed(1)} s; booting the guest`,
    );

    const guestStarted = Date.now();
    await bootGuest({
      image,
      main: 'test/ipvs/guest/main.ts',
      outDir,
      logDir: dir,
      network: { netns, tap: TAP, address: `${GUEST_IP}/24` },
      log: (line) => {
        if (options.verbose || line.startsWith('[guest')) log(line);
      },
      processes,
    });
    const guestS = (Date.now() - guestStarted) / 1000;
    const results = JSON.parse(
      await fsp.readFile(path.join(outDir, 'results.json'), 'utf8'),
    ) as LabResults;
    return { results, timings: { controlPlaneS, guestS } };
  } finally {
    stopHeartbeat();
    await lab.stop();
  }
}
