// The lab's container image, built from this machine's files like the node
// tests' images (no registry, no image builder): busybox-static as /bin/sh
// and its applets (sleep, netstat: what the seeds' snippets call), the pinned
// Node 24 that runs the lab's TypeScript programs in /lab, and iptables
// (nf_tables backend) for the mesh pods' init containers, which set up
// Istio-like traffic capture.

import fs from 'node:fs';
import path from 'node:path';
import { mustRun, repoRoot } from '../support/cluster/processes.ts';
import {
  binaryWithLibraries,
  buildImageArchive,
  busyboxEntries,
  userEntries,
  type ImageTarball,
  type RootfsEntry,
} from '../support/node/image-archive.ts';
import { pinnedNodeBinary } from '../support/node/images.ts';

/** The programs pods run: path in the image -> file in the checkout. */
const LAB_PROGRAMS: Readonly<Record<string, string>> = {
  '/lab/app.ts': 'test/lab/app.ts',
  '/lab/proxy.ts': 'test/lab/proxy.ts',
  '/lab/load.ts': 'test/lab/load.ts',
  '/lab/stats.ts': 'test/lab/stats.ts',
};

/** The uids the lab's containers run as; named so that `ps` and netstat read well. */
export const UID = { app: 1000, istioProxy: 1337, linkerdProxy: 2102 } as const;

/** iptables (xtables-nft-multi), its libraries and its extension modules. */
async function iptablesEntries(): Promise<RootfsEntry[]> {
  const which = await mustRun('sh', ['-c', 'command -v xtables-nft-multi || true']);
  const binary = which.trim();
  if (binary === '') {
    throw new Error(
      'the lab image needs iptables with the nf_tables backend (apt-get install iptables)',
    );
  }
  const entries = await binaryWithLibraries(binary, '/usr/sbin/xtables-nft-multi');
  // Extensions (-m owner, -j REDIRECT, -p tcp) are loaded at run time from
  // the directory next to libxtables.
  const libxtables = entries.find((e) => /\/libxtables\.so/.test(e.path));
  if (libxtables === undefined) throw new Error(`${binary} does not link libxtables`);
  return [
    ...entries,
    { path: xtablesLibdir(libxtables.path), copyTreeFrom: xtablesLibdir(libxtables.path) },
    { path: '/usr/sbin/iptables', symlinkTo: 'xtables-nft-multi' },
    // iptables takes its lock here.
    { path: '/run', directory: true, mode: 0o755 },
  ];
}

/** Where iptables looks for its extensions: beside the real libxtables (merged /usr). */
function xtablesLibdir(libxtables: string): string {
  return path.join(path.dirname(fs.realpathSync(libxtables)), 'xtables');
}

export async function labImage(): Promise<ImageTarball> {
  return buildImageArchive({
    repository: 'localhost/prestop-injector/lab',
    entries: [
      ...(await busyboxEntries()),
      ...(await binaryWithLibraries(pinnedNodeBinary(), '/usr/local/bin/node')),
      ...(await iptablesEntries()),
      ...userEntries([
        ['root', 0, '/root'],
        ['app', UID.app, '/tmp'],
        ['istio-proxy', UID.istioProxy, '/tmp'],
        ['linkerd-proxy', UID.linkerdProxy, '/tmp'],
        ['nobody', 65534, '/nonexistent'],
      ]),
      { path: '/tmp', directory: true, mode: 0o1777 },
      { path: '/root', directory: true, mode: 0o700 },
      ...Object.entries(LAB_PROGRAMS).map(([imagePath, file]) => ({
        path: imagePath,
        copyFrom: path.join(repoRoot, file),
        mode: 0o644,
      })),
    ],
    config: {
      Env: ['PATH=/usr/local/bin:/usr/sbin:/bin:/usr/bin'],
      Cmd: ['/bin/sh'],
      WorkingDir: '/lab',
    },
  });
}
