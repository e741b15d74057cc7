// A real Kubernetes node for the tests, in a network namespace of its own:
// containerd and runc, the kubelet, kube-proxy (iptables), and a control
// plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler),
// all the project's own builds (scripts/install-test-tools.sh) or Debian's.
//
//   const node = await startNode();
//   await node.kubectl('apply', '-f', file);
//   ...
//   await node.stop();
//
// More kubelets (another release, e.g. for version-skew tests) join the same
// namespace with addNode(): each has its own node name and IP, containerd,
// pod subnet and cgroup root. The control plane's release is an option too.
//
// A run removes what a killed earlier run left before it starts, and on any
// exit of the test process stops what it started (see run-state.ts).

import fsp from 'node:fs/promises';
import path from 'node:path';
import type { V1Node } from '@kubernetes/client-node';
import type { ControlPlane } from '../cluster/apiserver.ts';
import { ensureTools, type Tools } from '../cluster/binaries.ts';
import {
  formatTails,
  keepTmp,
  mustRun,
  netnsArgv,
  onExit,
  runCommand,
  waitFor,
  type CommandResult,
  type Dialer,
  type ManagedProcess,
} from '../cluster/processes.ts';
import { startContainerd, type Containerd } from './containerd.ts';
import { componentKubeconfig, startNodeControlPlane } from './control-plane.ts';
import type { ImageTarball } from './image-archive.ts';
import { pauseImage, testAppImage } from './images.ts';
import { startKubeProxy } from './kube-proxy.ts';
import { startKubelet } from './kubelet.ts';
import { addNodeAddress, createNetns, startNetnsDialer } from './netns.ts';
import { makeCertificateAuthority } from './pki.ts';
import {
  createCgroupRoot,
  KEPT_MARKER,
  newRun,
  nodeScopedName,
  removeRun,
  removeStaleRuns,
  type RunState,
} from './run-state.ts';

/** Which build of a component: this release, the skew one (v1.31), the oldest kubelet (v1.29). */
export type Release = 'current' | 'skew' | 'oldest';

export interface StartNodeOptions {
  /** The first node's name; default node-1. */
  nodeName?: string;
  /**
   * The control plane's release: current (default) or skew. kube-proxy
   * follows it, since it must not be newer than the API server.
   */
  controlPlane?: 'current' | 'skew';
  /** The first kubelet: current (default), skew or oldest. */
  kubelet?: Release;
  extraApiserverArgs?: string[];
  /** The binaries; default: from scripts/install-test-tools.sh (ensureTools). */
  tools?: Tools;
  /** Time for the node to become Ready; default 120 s. */
  readyTimeoutMs?: number;
}

export interface NodeMember {
  name: string;
  ip: string;
  podCIDR: string;
  /** e.g. v1.37.2 */
  kubeletVersion: string;
  kubelet: ManagedProcess;
  containerd: Containerd;
}

export interface Versions {
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  kubeProxy: string;
  etcd: string;
  containerd: string;
  runc: string;
  /** node name -> kubelet version */
  kubelets: Record<string, string>;
}

export interface RealNode {
  /** The run's id, directory (configs, logs, data) and namespace. */
  run: RunState;
  dir: string;
  netns: string;
  /** The first node's IP. */
  nodeIP: string;
  /** The first node's pod subnet. */
  podCIDR: string;
  serviceCIDR: string;
  clusterCIDR: string;
  /** https://NODE_IP:6443, for clients inside the namespace. */
  apiserverUrl: string;
  /** Admin kubeconfig for clients inside the namespace. */
  kubeconfig: string;
  /** The API server for the test process (forwarded to its 127.0.0.1). */
  controlPlane: ControlPlane;
  versions: Versions;
  nodes: NodeMember[];
  images: { pause: ImageTarball; testApp: ImageTarball };
  /** kubectl inside the namespace as the admin; rejects unless it exits 0. */
  kubectl(...args: string[]): Promise<string>;
  /** `kubectl apply` of objects (JSON on stdin). */
  apply(...objects: object[]): Promise<string>;
  /** kubectl with input and the whole result, whatever the exit code. */
  kubectlRun(args: readonly string[], opts?: { input?: string }): Promise<CommandResult>;
  /** A TCP connection to an address inside the namespace (pod IPs, ClusterIPs). */
  dial: Dialer;
  /** Imports an image into every node's containerd (and into nodes added later). */
  importImage(image: ImageTarball): Promise<void>;
  addNode(options: { name: string; kubelet?: Release }): Promise<NodeMember>;
  logTails(lines?: number): string;
  /** Stops everything and removes every trace of the run. */
  stop(): Promise<void>;
}

const SERVICE_CIDR = '10.96.0.0/16';
const CLUSTER_CIDR = '10.244.0.0/16';
/** Node n (1-based): IP 10.99.0.n, pods 10.244.(n-1).0/24 on bridge cni(n-1). */
const nodeAddressing = (n: number) => ({
  ip: `10.99.0.${n}`,
  podCIDR: `10.244.${n - 1}.0/24`,
  bridge: `cni${n - 1}`,
});

export async function startNode(options: StartNodeOptions = {}): Promise<RealNode> {
  const tools = options.tools ?? (await ensureTools());
  removeStaleRuns();
  const run = newRun();
  const forgetExitHook = onExit(() => removeRun(run));
  const first = nodeAddressing(1);
  const nodes: NodeMember[] = [];
  const containerds: Containerd[] = [];
  const imported: ImageTarball[] = [];
  const stoppable: ManagedProcess[] = [];
  let controlPlane: ControlPlane | undefined;
  let stopping: Promise<void> | undefined;

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      // Node components first, then the control plane, each by its pid;
      // removeRun then kills what is left (shims, containers) and unmounts.
      await Promise.all(stoppable.map((proc) => proc.stop(5_000)));
      await controlPlane?.stop();
      await Promise.all(containerds.map((c) => c.stop()));
      forgetExitHook();
      if (keepTmp) await fsp.writeFile(path.join(run.dir, KEPT_MARKER), 'PRESTOP_E2E_KEEP_TMP=1\n');
      removeRun(run, { keepDir: keepTmp });
    })();
    return stopping;
  };

  try {
    const [images] = await Promise.all([
      Promise.all([pauseImage(), testAppImage()]),
      createNetns(run.netns, first.ip),
    ]);
    const [pause, testApp] = images;
    imported.push(pause, testApp);
    const dialer = await startNetnsDialer(run.netns, run.dir);
    stoppable.push(dialer.proc);
    const ca = await makeCertificateAuthority(path.join(run.dir, 'pki'), 'prestop-node CA');
    const release = options.controlPlane === 'skew' ? tools.skew : tools.current;

    let memberCount = 0;
    /** A node's runtime, which needs no API server: cgroup root, containerd, images. */
    const prepareRuntime = async (name: string) => {
      const addressing = nodeAddressing(++memberCount);
      if (memberCount > 1) await addNodeAddress(run.netns, addressing.ip);
      const scoped = nodeScopedName(run, name);
      createCgroupRoot(scoped);
      const containerd = await startContainerd({
        dir: path.join(run.dir, `containerd-${name}`),
        netns: run.netns,
        sandboxImage: pause.ref,
        cni: { networkName: scoped, bridge: addressing.bridge, subnet: addressing.podCIDR },
      });
      containerds.push(containerd);
      for (const image of imported) await containerd.importImage(image.tarball);
      return { addressing, cgroupRoot: `/${scoped}`, containerd };
    };
    const joinNode = async (
      name: string,
      kubeletRelease: Release,
      runtime: Awaited<ReturnType<typeof prepareRuntime>>,
      apiserverUrl: string,
    ): Promise<NodeMember> => {
      const kubeletBinary = kubeletBinaryOf(tools, kubeletRelease);
      const kubelet = await startKubelet({
        binary: kubeletBinary,
        nodeName: name,
        nodeIP: runtime.addressing.ip,
        dir: path.join(run.dir, `kubelet-${name}`),
        netns: run.netns,
        ca,
        apiserverUrl,
        containerdSocket: runtime.containerd.socket,
        cgroupRoot: runtime.cgroupRoot,
      });
      stoppable.unshift(kubelet);
      const member: NodeMember = {
        name,
        ...runtime.addressing,
        kubeletVersion: await binaryVersion(kubeletBinary),
        containerd: runtime.containerd,
        kubelet,
      };
      nodes.push(member);
      return member;
    };

    // The control plane and the first node's runtime start side by side.
    const nodeName = options.nodeName ?? 'node-1';
    const cpDir = path.join(run.dir, 'control-plane');
    const [cp, firstRuntime] = await allOrFirstError([
      startNodeControlPlane({
        dir: cpDir,
        netns: run.netns,
        dialer,
        ca,
        advertiseIP: first.ip,
        serviceCIDR: SERVICE_CIDR,
        clusterCIDR: CLUSTER_CIDR,
        binaries: {
          etcd: tools.etcd,
          kubeApiserver: release.kubeApiserver,
          kubeControllerManager: release.kubeControllerManager,
          kubeScheduler: release.kubeScheduler,
        },
        ...(options.extraApiserverArgs ? { extraApiserverArgs: options.extraApiserverArgs } : {}),
      }).then((started) => {
        controlPlane = started.controlPlane;
        return started;
      }),
      prepareRuntime(nodeName),
    ] as const);
    const api = cp.controlPlane;
    await joinNode(nodeName, options.kubelet ?? 'current', firstRuntime, cp.apiserverUrl);
    stoppable.unshift(
      await startKubeProxy({
        binary: release.kubeProxy,
        dir: path.join(run.dir, 'kube-proxy'),
        netns: run.netns,
        kubeconfig: componentKubeconfig(cpDir, 'kubeProxy'),
        nodeName,
        clusterCIDR: CLUSTER_CIDR,
      }),
    );

    const logTails = (lines = 40): string =>
      formatTails([...stoppable, ...cp.processes, ...containerds.map((c) => c.proc)], lines);
    const readyTimeoutMs = options.readyTimeoutMs ?? 120_000;
    await waitForNodeReady(api, nodeName, readyTimeoutMs);
    await waitFor('the default ServiceAccount', readyTimeoutMs, async () => {
      await api.core.readNamespacedServiceAccount({ namespace: 'default', name: 'default' });
      return true;
    });

    const kubectlRun = (args: readonly string[], opts: { input?: string } = {}) => {
      const [enter, ...enterArgs] = netnsArgv(run.netns);
      return runCommand(
        enter!,
        [...enterArgs, tools.kubectl, `--kubeconfig=${cp.kubeconfigPath}`, ...args],
        opts.input === undefined ? {} : { input: opts.input },
      );
    };
    const kubectl = async (args: readonly string[], input?: string): Promise<string> => {
      const result = await kubectlRun(args, input === undefined ? {} : { input });
      if (result.code !== 0)
        throw new Error(
          `kubectl ${args.join(' ')} failed (exit ${result.code}):\n${result.stderr}`,
        );
      return result.stdout;
    };
    const [kubeApiserver, kubeControllerManager, kubeScheduler, kubeProxy, runc] =
      await Promise.all([
        binaryVersion(release.kubeApiserver),
        binaryVersion(release.kubeControllerManager),
        binaryVersion(release.kubeScheduler),
        binaryVersion(release.kubeProxy),
        // "runc version 1.1.5+ds1" -> "runc 1.1.5+ds1"
        mustRun('runc', ['--version']).then((out) => out.split('\n')[0]!.replace(' version', '')),
      ]);
    const versions: Versions = {
      kubeApiserver,
      kubeControllerManager,
      kubeScheduler,
      kubeProxy,
      etcd: tools.etcdVersion,
      containerd: nodes[0]!.containerd.version,
      runc,
      kubelets: Object.fromEntries(nodes.map((n) => [n.name, n.kubeletVersion])),
    };

    return {
      run,
      dir: run.dir,
      netns: run.netns,
      nodeIP: first.ip,
      podCIDR: first.podCIDR,
      serviceCIDR: SERVICE_CIDR,
      clusterCIDR: CLUSTER_CIDR,
      apiserverUrl: cp.apiserverUrl,
      kubeconfig: cp.kubeconfigPath,
      controlPlane: api,
      versions,
      nodes,
      images: { pause, testApp },
      kubectlRun,
      kubectl: (...args) => kubectl(args),
      apply: (...objects) =>
        kubectl(
          ['apply', '-f', '-'],
          JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }),
        ),
      dial: dialer.dial,
      async importImage(image) {
        imported.push(image);
        for (const member of nodes) await member.containerd.importImage(image.tarball);
      },
      async addNode({ name, kubelet = 'current' }) {
        const member = await joinNode(name, kubelet, await prepareRuntime(name), cp.apiserverUrl);
        versions.kubelets[name] = member.kubeletVersion;
        await waitForNodeReady(api, name, readyTimeoutMs);
        return member;
      },
      logTails,
      stop,
    };
  } catch (err) {
    const tails = formatTails([...stoppable, ...containerds.map((c) => c.proc)], 30);
    await stop();
    (err as Error).message += `\n${tails}`;
    throw err;
  }
}

/**
 * Like Promise.all, but settles every promise first: nothing is still
 * starting when the caller cleans up after a failure.
 */
async function allOrFirstError<T extends readonly unknown[]>(
  promises: T,
): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as {
    -readonly [K in keyof T]: Awaited<T[K]>;
  };
}

function kubeletBinaryOf(tools: Tools, release: Release): string {
  if (release === 'skew') return tools.skew.kubelet;
  if (release === 'oldest') return tools.oldestKubelet.kubelet;
  return tools.kubelet;
}

/** "Kubernetes v1.37.2" -> "v1.37.2" */
async function binaryVersion(binary: string): Promise<string> {
  const out = await mustRun(binary, ['--version']);
  return /v\d+\.\d+\.\d+\S*/.exec(out)?.[0] ?? out.trim();
}

async function waitForNodeReady(
  api: ControlPlane,
  name: string,
  timeoutMs: number,
): Promise<V1Node> {
  let node: V1Node | undefined;
  await waitFor(`node ${name} to be Ready`, timeoutMs, async () => {
    node = await api.core.readNode({ name });
    return (node.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
  }).catch((err: Error) => {
    err.message += `\nconditions: ${JSON.stringify(node?.status?.conditions ?? null)}`;
    throw err;
  });
  return node!;
}
