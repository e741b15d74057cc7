// containerd for one kubelet: its own root, state, socket and config, runc
// with cgroupfs, and a CNI bridge network of its own. Images come from local
// tarballs (`ctr images import`): no registry is reachable.

import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  ExitedError,
  mustRun,
  spawnManaged,
  waitFor,
  type ManagedProcess,
} from '../cluster/processes.ts';

/** The Kubernetes namespace of containerd, where the CRI plugin keeps images and containers. */
const CRI_NAMESPACE = 'k8s.io';

export interface ContainerdOptions {
  /** Directory for root, state, socket, config and CNI config. */
  dir: string;
  netns: string;
  /** Image reference of the sandbox ("pause") image, imported before any pod runs. */
  sandboxImage: string;
  /** The node's pod network. */
  cni: {
    /** Name of the network (CNI result caches are named after it). */
    networkName: string;
    /** Linux bridge for the pods, e.g. cni0 (one per node in a shared namespace). */
    bridge: string;
    /** e.g. 10.244.0.0/24 */
    subnet: string;
  };
}

export interface Containerd {
  /** unix socket path */
  socket: string;
  proc: ManagedProcess;
  /** e.g. "containerd 1.6.20~ds1" */
  version: string;
  /** Imports an image tarball (docker-archive or OCI) into the CRI namespace. */
  importImage(tarball: string): Promise<void>;
  /** Runs `ctr` against this containerd. */
  ctr(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export async function startContainerd(options: ContainerdOptions): Promise<Containerd> {
  const { dir } = options;
  const root = path.join(dir, 'root');
  const state = path.join(dir, 'state');
  const cniConfDir = path.join(dir, 'cni');
  const socket = path.join(dir, 'containerd.sock');
  await fsp.mkdir(cniConfDir, { recursive: true });
  await fsp.writeFile(
    path.join(cniConfDir, '10-pods.conflist'),
    JSON.stringify(cniConfig(options, path.join(dir, 'ipam')), null, 2) + '\n',
  );
  const configPath = path.join(dir, 'config.toml');
  await fsp.writeFile(
    configPath,
    containerdConfig({ root, state, socket, cniConfDir, sandboxImage: options.sandboxImage }),
  );

  const proc = spawnManaged(
    'containerd',
    'containerd',
    ['--config', configPath],
    path.join(dir, 'containerd.log'),
    { netns: options.netns, dieWithParent: true },
  );
  const ctr = (...args: string[]) => mustRun('ctr', ['--address', socket, ...args]);
  await waitFor('containerd', 30_000, async () => {
    if (proc.hasExited()) throw new ExitedError(`containerd exited:\n${proc.logTail()}`);
    await ctr('version');
    return true;
  });
  const version = (await mustRun('containerd', ['--version'])).split(' ').slice(0, 3).join(' ');
  return {
    socket,
    proc,
    version: version.replace(/^containerd github\.com\/containerd\/containerd/, 'containerd'),
    ctr,
    async importImage(tarball) {
      // Unpacked for the CRI plugin's snapshotter; no registry is involved.
      await ctr('-n', CRI_NAMESPACE, 'images', 'import', '--snapshotter', 'overlayfs', tarball);
    },
    stop: () => proc.stop(10_000),
  };
}

function cniConfig(options: ContainerdOptions, ipamDir: string): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    name: options.cni.networkName,
    plugins: [
      {
        type: 'bridge',
        bridge: options.cni.bridge,
        isGateway: true,
        hairpinMode: true,
        ipMasq: false,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: options.cni.subnet }]],
          routes: [{ dst: '0.0.0.0/0' }],
          // Not the machine's /var/lib/cni/networks: leases die with the run.
          dataDir: ipamDir,
        },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
}

function containerdConfig(c: {
  root: string;
  state: string;
  socket: string;
  cniConfDir: string;
  sandboxImage: string;
}): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return `# Written by test/support/node/containerd.ts
version = 2
root = ${JSON.stringify(c.root)}
state = ${JSON.stringify(c.state)}
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = ${JSON.stringify(c.socket)}

[plugins."io.containerd.internal.v1.opt"]
  path = ${JSON.stringify(path.join(c.root, 'opt'))}

[${cri}]
  sandbox_image = ${JSON.stringify(c.sandboxImage)}
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj ("can't get
  # final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  # Pod network namespaces under the state dir, not in /run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

[${cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[${cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[${cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  # runc's own state, not /run/containerd/runc.
  Root = ${JSON.stringify(path.join(c.state, 'runc'))}

[${cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = ${JSON.stringify(c.cniConfDir)}
  max_conf_num = 1
`;
}
