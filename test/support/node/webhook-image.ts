// The webhook's image, built from the project's Dockerfile, unchanged, by
// buildah (Debian's), with no registry:
//
//   - private storage for each build (--root/--runroot in a temp dir);
//   - the Dockerfile's base images are made here (image-archive.ts) and
//     pulled into that storage under the Dockerfile's fully qualified names,
//     the only way a short name such as `node:24-bookworm-slim` is found
//     locally: busybox-static as /bin/sh, the pinned Node 24 with the
//     libraries it links (Debian 12's glibc, as distroless debian12 has), and
//     the host's npm for the build stage;
//   - `bud --isolation chroot --pull=never --layers=false --force-rm`: no
//     intermediate images, since fresh storage has no layer cache to reuse
//     (80 s with --layers, 54 s without, here). RUN steps use the host
//     network (npm ci reaches the npm registry), with the host's npm cache
//     and, when the host's npm trusts an extra CA bundle, the bundle mounted
//     (see buildMounts);
//   - `buildah push IMAGE docker-archive:FILE:IMAGE`, cached by a hash of the
//     Dockerfile, the build context and the base images.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  makeTempDir,
  mustRun,
  onExit,
  removeDirectory,
  repoRoot,
  runCommand,
} from '../cluster/processes.ts';
import {
  IMAGE_CACHE_DIR,
  binaryWithLibraries,
  buildImageArchive,
  busyboxEntries,
  fileSha256,
  pruneImageCache,
  userEntries,
  type ImageTarball,
} from './image-archive.ts';
import { pinnedNodeBinary } from './images.ts';
import { unmountUnder } from './run-state.ts';

export const WEBHOOK_REPOSITORY = 'localhost/prestop-injector/webhook';
const MACHINE_CONTAINERS_DIR = '/var/lib/containers';

/** The Dockerfile's build-stage base: Node 24 with npm and a shell. */
export async function nodeBuildBaseImage(): Promise<ImageTarball> {
  const npm = await hostNpmDir();
  return buildImageArchive({
    repository: 'docker.io/library/node',
    tag: '24-bookworm-slim',
    entries: [
      ...(await busyboxEntries()),
      ...(await binaryWithLibraries(pinnedNodeBinary(), '/usr/local/bin/node')),
      { path: '/usr/local/lib/node_modules/npm', copyTreeFrom: npm },
      { path: '/usr/local/bin/npm', symlinkTo: '../lib/node_modules/npm/bin/npm-cli.js' },
      { path: '/usr/local/bin/npx', symlinkTo: '../lib/node_modules/npm/bin/npx-cli.js' },
      ...userEntries([
        ['root', 0, '/root'],
        ['node', 1000, '/home/node'],
      ]),
      { path: '/root', directory: true, mode: 0o700 },
      { path: '/tmp', directory: true, mode: 0o1777 },
    ],
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['node'],
    },
  });
}

/** The Dockerfile's runtime base: Node 24 at /nodejs/bin/node, no shell, uid 65532. */
export async function distrolessNodeBaseImage(): Promise<ImageTarball> {
  return buildImageArchive({
    repository: 'gcr.io/distroless/nodejs24-debian12',
    tag: 'nonroot',
    entries: [
      ...(await binaryWithLibraries(pinnedNodeBinary(), '/nodejs/bin/node')),
      ...userEntries([
        ['root', 0, '/root'],
        ['nonroot', 65532, '/home/nonroot'],
        ['nobody', 65534, '/nonexistent'],
      ]),
      { path: '/home/nonroot', directory: true, mode: 0o755 },
      { path: '/tmp', directory: true, mode: 0o1777 },
    ],
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Entrypoint: ['/nodejs/bin/node'],
      User: '65532',
      WorkingDir: '/home/nonroot',
    },
  });
}

export interface WebhookImage extends ImageTarball {
  /** Seconds the build took (0 when cached). */
  buildSeconds: number;
}

/** Builds (or takes from the cache) the webhook's image from the Dockerfile. */
export async function buildWebhookImage(contextDir: string = repoRoot): Promise<WebhookImage> {
  const bases = [await nodeBuildBaseImage(), await distrolessNodeBaseImage()];
  const mounts = await buildMounts();
  const key = createHash('sha256');
  key.update((await mustRun('buildah', ['--version'])).trim());
  for (const base of bases) key.update(`${base.ref} ${path.basename(base.tarball)}\n`);
  for (const file of await buildContextFiles(contextDir)) {
    key.update(`${file}\0${await fileSha256(path.join(contextDir, file))}\n`);
  }
  const hash = key.digest('hex');
  const ref = `${WEBHOOK_REPOSITORY}:${hash.slice(0, 12)}`;
  const tarball = path.join(IMAGE_CACHE_DIR, `webhook-${hash.slice(0, 16)}.tar`);
  if (fs.existsSync(tarball)) return { ref, tarball, cached: true, buildSeconds: 0 };

  const started = Date.now();
  // containers/image keeps a blob-info cache there whatever --root says.
  const machineCacheExisted = fs.existsSync(MACHINE_CONTAINERS_DIR);
  const storage = await makeTempDir('prestop-buildah-');
  // overlay storage mounts under its root; unmounted even if the build is killed.
  const forget = onExit(() => unmountUnder(storage));
  const partial = `${tarball}.partial-${process.pid}`;
  const logPath = path.join(IMAGE_CACHE_DIR, 'webhook-build.log');
  await fsp.mkdir(IMAGE_CACHE_DIR, { recursive: true });
  await fsp.writeFile(logPath, '');
  const buildah = async (...args: string[]): Promise<void> => {
    const all = [
      '--root',
      path.join(storage, 'root'),
      '--runroot',
      path.join(storage, 'run'),
      '--storage-driver',
      'overlay',
      ...args,
    ];
    await fsp.appendFile(logPath, `\n$ buildah ${all.join(' ')}\n`);
    const result = await runCommand('buildah', all, { cwd: contextDir, timeoutMs: 15 * 60_000 });
    await fsp.appendFile(
      logPath,
      `${result.stdout}${result.stderr}[${((Date.now() - started) / 1000).toFixed(1)} s]\n`,
    );
    if (result.code !== 0) {
      const tail = (result.stdout + result.stderr).trimEnd().split('\n').slice(-40).join('\n');
      throw new Error(`buildah ${args[0]} failed (exit ${result.code}); log: ${logPath}\n${tail}`);
    }
  };
  try {
    for (const base of bases) {
      // Named as the archive's RepoTags say: the Dockerfile's full names.
      await buildah('pull', '--quiet', `docker-archive:${base.tarball}`);
    }
    await buildah(
      'bud',
      '--isolation',
      'chroot',
      '--pull=never',
      '--layers=false',
      '--force-rm',
      ...mounts.flatMap((m) => ['-v', `${m.source}:${m.target}:${m.mode}`]),
      '-f',
      path.join(contextDir, 'Dockerfile'),
      '-t',
      ref,
      contextDir,
    );
    await buildah('push', '--quiet', ref, `docker-archive:${partial}:${ref}`);
    await fsp.rename(partial, tarball);
    pruneImageCache('webhook');
  } finally {
    await fsp.rm(partial, { force: true });
    await runCommand('buildah', [
      '--root',
      path.join(storage, 'root'),
      '--runroot',
      path.join(storage, 'run'),
      '--storage-driver',
      'overlay',
      'rm',
      '--all',
    ]);
    unmountUnder(storage);
    forget();
    await removeDirectory(storage);
    if (!machineCacheExisted)
      await fsp.rm(MACHINE_CONTAINERS_DIR, { recursive: true, force: true });
  }
  return { ref, tarball, cached: false, buildSeconds: (Date.now() - started) / 1000 };
}

/** The host's npm package directory (its global install). */
async function hostNpmDir(): Promise<string> {
  const npmCli = fs.realpathSync(
    (await mustRun('sh', ['-c', 'command -v npm'])).trim() || '/usr/bin/npm',
  );
  // .../npm/bin/npm-cli.js
  return path.dirname(path.dirname(npmCli));
}

interface BuildMount {
  source: string;
  target: string;
  mode: 'ro' | 'rw';
}

/**
 * Mounts for the RUN steps only (nothing of them stays in the image):
 *   - the host's npm cache as root's, so `npm ci` downloads only what the
 *     host has not fetched before;
 *   - the CA bundle the host's npm trusts beyond the default ones (its
 *     `cafile`, or NODE_EXTRA_CA_CERTS) with an npmrc that names it, when
 *     there is one: registry traffic may pass a TLS-intercepting proxy.
 */
async function buildMounts(): Promise<BuildMount[]> {
  const mounts: BuildMount[] = [];
  const npmConfig = async (key: string): Promise<string | undefined> => {
    const value = (await runCommand('npm', ['config', 'get', key])).stdout.trim();
    return /^(null|undefined|)$/.test(value) ? undefined : value;
  };
  const cache = await npmConfig('cache');
  if (cache !== undefined) {
    await fsp.mkdir(cache, { recursive: true });
    mounts.push({ source: cache, target: '/root/.npm', mode: 'rw' });
  }
  const bundle = (await npmConfig('cafile')) ?? process.env['NODE_EXTRA_CA_CERTS'];
  if (bundle !== undefined && bundle !== '' && fs.existsSync(bundle)) {
    const npmrcDir = path.join(IMAGE_CACHE_DIR, 'npmrc');
    await fsp.mkdir(npmrcDir, { recursive: true });
    const npmrc = path.join(npmrcDir, 'npmrc');
    await fsp.writeFile(npmrc, `cafile=${bundle}\n`);
    mounts.push(
      { source: bundle, target: bundle, mode: 'ro' },
      // npm's global config in the base image (prefix /usr/local).
      { source: npmrc, target: '/usr/local/etc/npmrc', mode: 'ro' },
    );
  }
  return mounts;
}

/**
 * The files of the build context, for the cache key. An allow-list
 * .dockerignore (`*`, then `!path` lines) names them; with any other form,
 * every file but .git and node_modules counts.
 */
async function buildContextFiles(contextDir: string): Promise<string[]> {
  const ignore = await fsp.readFile(path.join(contextDir, '.dockerignore'), 'utf8').catch(() => '');
  const rules = ignore
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const allowList =
    rules[0] === '*' && rules.slice(1).every((rule) => /^![\w./-]+$/.test(rule))
      ? rules.slice(1).map((rule) => rule.slice(1).replace(/^\.?\//, ''))
      : undefined;
  const roots = allowList ?? ['.'];
  const files = new Set<string>(['Dockerfile', '.dockerignore']);
  for (const root of roots) {
    const full = path.join(contextDir, root);
    const stat = await fsp.stat(full).catch(() => undefined);
    if (stat === undefined) continue;
    if (stat.isFile()) {
      files.add(root);
      continue;
    }
    for (const relative of await fsp.readdir(full, { recursive: true })) {
      const file = path.join(root, relative);
      if (/(^|\/)(\.git|node_modules)(\/|$)/.test(file)) continue;
      if ((await fsp.stat(path.join(contextDir, file))).isFile()) files.add(path.normalize(file));
    }
  }
  return [...files].sort();
}
