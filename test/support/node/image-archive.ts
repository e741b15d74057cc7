// Container images made from files of this machine, with no image builder
// and no registry: a root filesystem is assembled in a directory, tarred as
// one layer, and written as a docker-archive (manifest.json, a config whose
// rootfs.diff_ids name the layer, the layer tar) that `ctr images import`
// and `buildah pull docker-archive:` read.
//
// Tarballs are cached outside the work tree, keyed by a hash of everything
// that goes into them (file contents included), so an unchanged image is
// built once per machine.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mustRun, removeDirectory, trackDirectory } from '../cluster/processes.ts';

/** ~/.cache/prestop-injector/images, or under $PRESTOP_TOOLS_CACHE. */
export const IMAGE_CACHE_DIR = path.join(
  process.env['PRESTOP_TOOLS_CACHE'] ?? path.join(os.homedir(), '.cache', 'prestop-injector'),
  'images',
);

/** One entry of the image's root filesystem (absolute paths inside the image). */
export type RootfsEntry =
  | { path: string; copyFrom: string; mode?: number }
  /** A directory tree, symlinks kept as symlinks. */
  | { path: string; copyTreeFrom: string }
  | { path: string; symlinkTo: string }
  | { path: string; directory: true; mode?: number }
  | { path: string; content: string; mode?: number };

/** The parts of an image config (OCI/Docker `config`) these images set. */
export interface ImageConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  User?: string;
  WorkingDir?: string;
}

export interface ImageSpec {
  /** Repository, e.g. localhost/prestop-injector/pause. */
  repository: string;
  /** Default: the first 12 hex digits of the content hash. */
  tag?: string;
  entries: RootfsEntry[];
  config: ImageConfig;
}

export interface ImageTarball {
  /** repository:tag */
  ref: string;
  /** docker-archive file */
  tarball: string;
  /** Taken from the cache, not built now. */
  cached: boolean;
}

// This file's own source is part of every key: a change in how images are
// made is a change of their inputs.
const builderSource = fs.readFileSync(fileURLToPath(import.meta.url));

/** Builds the image's docker-archive, or returns the cached one. */
export async function buildImageArchive(spec: ImageSpec): Promise<ImageTarball> {
  const hash = await specHash(spec);
  const ref = `${spec.repository}:${spec.tag ?? hash.slice(0, 12)}`;
  const tarball = path.join(
    IMAGE_CACHE_DIR,
    `${path.basename(spec.repository)}-${hash.slice(0, 16)}.tar`,
  );
  if (fs.existsSync(tarball)) return { ref, tarball, cached: true };

  await fsp.mkdir(IMAGE_CACHE_DIR, { recursive: true });
  removeAbandonedWork();
  const work = await fsp.mkdtemp(path.join(IMAGE_CACHE_DIR, `.build-${process.pid}-`));
  trackDirectory(work);
  const partial = `${tarball}.partial-${process.pid}`;
  try {
    const rootfs = path.join(work, 'rootfs');
    await assembleRootfs(rootfs, spec.entries);
    const layerTar = path.join(work, 'layer.tar');
    // Reproducible: sorted names, one mtime, root-owned, numeric ids.
    await mustRun('tar', [
      '--sort=name',
      '--mtime=@0',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '-C',
      rootfs,
      '-cf',
      layerTar,
      '.',
    ]);
    const layerDigest = await fileSha256(layerTar);
    const config = {
      architecture: 'amd64',
      os: 'linux',
      created: '1970-01-01T00:00:00Z',
      config: spec.config,
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
      history: [
        { created: '1970-01-01T00:00:00Z', created_by: 'test/support/node/image-archive.ts' },
      ],
    };
    const configText = JSON.stringify(config);
    const configDigest = createHash('sha256').update(configText).digest('hex');
    const archive = path.join(work, 'archive');
    await fsp.mkdir(path.join(archive, layerDigest), { recursive: true });
    await fsp.rename(layerTar, path.join(archive, layerDigest, 'layer.tar'));
    await fsp.writeFile(path.join(archive, `${configDigest}.json`), configText);
    await fsp.writeFile(
      path.join(archive, 'manifest.json'),
      JSON.stringify([
        {
          Config: `${configDigest}.json`,
          RepoTags: [ref],
          Layers: [`${layerDigest}/layer.tar`],
        },
      ]),
    );
    await mustRun('tar', ['-C', archive, '-cf', partial, '.']);
    await fsp.rename(partial, tarball);
    pruneImageCache(path.basename(spec.repository));
    return { ref, tarball, cached: false };
  } finally {
    await fsp.rm(partial, { force: true });
    await removeDirectory(work);
  }
}

/** Tarballs of an image kept in the cache: the newest ones, for switching branches. */
const TARBALLS_KEPT = 2;

/** Removes all but the newest tarballs named `<name>-<hash>.tar`. */
export function pruneImageCache(name: string): void {
  const pattern = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-[0-9a-f]{16}\\.tar$`);
  const tarballs = fs
    .readdirSync(IMAGE_CACHE_DIR)
    .filter((file) => pattern.test(file))
    .map((file) => path.join(IMAGE_CACHE_DIR, file))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  for (const old of tarballs.slice(TARBALLS_KEPT)) fs.rmSync(old, { force: true });
}

/**
 * Work dirs and half-written tarballs of builds whose process is gone
 * (killed): `.build-<pid>-*`, `*.partial-<pid>`.
 */
export function removeAbandonedWork(): void {
  for (const name of fs.readdirSync(IMAGE_CACHE_DIR)) {
    const m = /^\.build-(\d+)-|\.partial-(\d+)$/.exec(name);
    const pid = Number(m?.[1] ?? m?.[2]);
    if (m === null || pid === process.pid || processExists(pid)) continue;
    fs.rmSync(path.join(IMAGE_CACHE_DIR, name), { recursive: true, force: true });
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function assembleRootfs(rootfs: string, entries: readonly RootfsEntry[]): Promise<void> {
  await fsp.mkdir(rootfs, { mode: 0o755 });
  for (const entry of entries) {
    const target = path.join(rootfs, entry.path);
    await fsp.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
    if ('copyFrom' in entry) {
      // Contents only (hard links and symlinks of the host resolved).
      await fsp.copyFile(fs.realpathSync(entry.copyFrom), target);
      await fsp.chmod(target, entry.mode ?? fs.statSync(entry.copyFrom).mode & 0o777);
    } else if ('copyTreeFrom' in entry) {
      await fsp.cp(entry.copyTreeFrom, target, { recursive: true, verbatimSymlinks: true });
    } else if ('symlinkTo' in entry) {
      await fsp.symlink(entry.symlinkTo, target);
    } else if ('directory' in entry) {
      await fsp.mkdir(target, { recursive: true });
      await fsp.chmod(target, entry.mode ?? 0o755);
    } else {
      await fsp.writeFile(target, entry.content);
      await fsp.chmod(target, entry.mode ?? 0o644);
    }
  }
}

async function specHash(spec: ImageSpec): Promise<string> {
  const hash = createHash('sha256');
  hash.update(builderSource);
  hash.update(JSON.stringify({ repository: spec.repository, tag: spec.tag, config: spec.config }));
  for (const entry of spec.entries) {
    if ('copyFrom' in entry) {
      hash.update(JSON.stringify({ path: entry.path, mode: entry.mode }));
      hash.update(await fileSha256(fs.realpathSync(entry.copyFrom)));
    } else if ('copyTreeFrom' in entry) {
      hash.update(JSON.stringify({ path: entry.path }));
      await hashTree(hash, entry.copyTreeFrom);
    } else {
      hash.update(JSON.stringify(entry));
    }
  }
  return hash.digest('hex');
}

/** Names, modes, symlink targets and contents of a tree, in a stable order. */
async function hashTree(hash: ReturnType<typeof createHash>, root: string): Promise<void> {
  const entries = (await fsp.readdir(root, { recursive: true })).sort();
  for (const relative of entries) {
    const file = path.join(root, relative);
    const stat = await fsp.lstat(file);
    hash.update(`${relative}\0${stat.mode}\0`);
    if (stat.isSymbolicLink()) hash.update(await fsp.readlink(file));
    else if (stat.isFile()) hash.update(await fileSha256(file));
  }
}

const fileHashes = new Map<string, { key: string; digest: string }>();

/** sha256 of a file, remembered per process while its size and mtime stay the same. */
export async function fileSha256(file: string): Promise<string> {
  const stat = await fsp.stat(file);
  const key = `${stat.size}:${stat.mtimeMs}`;
  const known = fileHashes.get(file);
  if (known?.key === key) return known.digest;
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  const digest = hash.digest('hex');
  fileHashes.set(file, { key, digest });
  return digest;
}

// ------------------------------------------------ pieces the images share

/** busybox-static as /bin/busybox, with a symlink for each of its applets in /bin. */
export async function busyboxEntries(): Promise<RootfsEntry[]> {
  const busybox = '/bin/busybox';
  const out = await mustRun(busybox, ['--list']);
  const applets = out.split('\n').filter((name) => /^[\w.[-]+$/.test(name) && name !== 'busybox');
  const ldd = await mustRun('sh', ['-c', `ldd ${busybox} 2>&1 || true`]);
  if (!/not a dynamic executable|statically linked/.test(ldd))
    throw new Error(`${busybox} is not static (install busybox-static): ${ldd}`);
  return [
    { path: '/bin/busybox', copyFrom: busybox, mode: 0o755 },
    ...applets.map((name) => ({ path: `/bin/${name}`, symlinkTo: 'busybox' })),
    // Shebangs such as npm's `#!/usr/bin/env node`.
    { path: '/usr/bin/env', symlinkTo: '/bin/busybox' },
  ];
}

/** A binary and the shared libraries `ldd` lists for it, at the same paths. */
export async function binaryWithLibraries(
  binary: string,
  imagePath: string,
): Promise<RootfsEntry[]> {
  const out = await mustRun('ldd', [binary]);
  const libraries = new Set<string>();
  for (const line of out.split('\n')) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (m?.[1] !== undefined) libraries.add(m[1]);
  }
  return [
    { path: imagePath, copyFrom: binary, mode: 0o755 },
    ...[...libraries].map((lib) => ({ path: lib, copyFrom: lib, mode: 0o755 })),
  ];
}

/** /etc/passwd and /etc/group with the given users (name, uid; group = uid). */
export function userEntries(users: ReadonlyArray<[string, number, string]>): RootfsEntry[] {
  return [
    {
      path: '/etc/passwd',
      content: users
        .map(([name, id, home]) => `${name}:x:${id}:${id}:${name}:${home}:/sbin/nologin\n`)
        .join(''),
    },
    { path: '/etc/group', content: users.map(([name, id]) => `${name}:x:${id}:\n`).join('') },
  ];
}
