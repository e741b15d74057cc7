// Runs the Dockerfile's steps without Docker: each stage gets a directory
// that stands for its root filesystem, COPY reads the build context filtered
// by .dockerignore (or another stage), RUN runs the same shell command with
// the pinned Node 24 standing in for the base image's. The result is the
// runtime stage's file layout plus its ENV, USER, WORKDIR, ENTRYPOINT and CMD,
// so tests can run the image's entrypoint as the image would.
//
// Only the instructions this project's Dockerfile uses are understood; any
// other one fails loudly, so the Dockerfile cannot outgrow its test.

import fsp from 'node:fs/promises';
import path from 'node:path';
import { runCommand } from './control-plane.ts';

export type Instruction =
  | { op: 'FROM'; image: string; name?: string }
  | { op: 'WORKDIR'; dir: string }
  | { op: 'COPY'; from?: string; sources: string[]; dest: string }
  | { op: 'RUN'; command: string }
  | { op: 'ENV'; vars: Record<string, string> }
  | { op: 'USER'; user: string }
  | { op: 'EXPOSE'; ports: number[] }
  | { op: 'ENTRYPOINT' | 'CMD'; argv: string[] };

/** What the base images provide, as far as these steps need. */
interface BaseImage {
  pattern: RegExp;
  /** Has /bin/sh (RUN works). */
  shell: boolean;
  /** Path of its node binary. */
  node: string;
}

const BASE_IMAGES: readonly BaseImage[] = [
  { pattern: /^node:(\d+)-bookworm-slim$/, shell: true, node: '/usr/local/bin/node' },
  {
    pattern: /^gcr\.io\/distroless\/nodejs(\d+)-debian12(?::nonroot)?$/,
    shell: false,
    node: '/nodejs/bin/node',
  },
];

function baseImage(image: string): BaseImage & { nodeMajor: number } {
  for (const base of BASE_IMAGES) {
    const match = base.pattern.exec(image);
    if (match) return { ...base, nodeMajor: Number(match[1]) };
  }
  throw new Error(`Dockerfile: base image ${image} is not one this test knows how to stand in for`);
}

/** Joins continued lines, drops comments and blank lines. */
function logicalLines(text: string): string[] {
  const lines: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (current === '' && /^\s*#/.test(line)) continue;
    if (line.endsWith('\\')) {
      current += line.slice(0, -1) + ' ';
      continue;
    }
    current += line;
    if (current.trim() !== '') lines.push(current.trim());
    current = '';
  }
  if (current.trim() !== '') lines.push(current.trim());
  return lines;
}

function jsonArgv(op: string, rest: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(rest);
  } catch {
    throw new Error(`Dockerfile: ${op} must use the exec (JSON array) form, got ${rest}`);
  }
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string'))
    throw new Error(`Dockerfile: ${op} must be an array of strings`);
  return parsed;
}

export function parseDockerfile(text: string): Instruction[] {
  return logicalLines(text).map((line): Instruction => {
    const space = line.search(/\s/);
    const op = (space === -1 ? line : line.slice(0, space)).toUpperCase();
    const rest = space === -1 ? '' : line.slice(space + 1).trim();
    switch (op) {
      case 'FROM': {
        const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
        if (!m?.[1]) throw new Error(`Dockerfile: cannot read FROM ${rest}`);
        return m[2] ? { op, image: m[1], name: m[2] } : { op, image: m[1] };
      }
      case 'WORKDIR':
        return { op, dir: rest };
      case 'COPY': {
        const words = rest.split(/\s+/);
        let from: string | undefined;
        while (words[0]?.startsWith('--')) {
          const flag = words.shift()!;
          const m = /^--from=(\S+)$/.exec(flag);
          if (!m?.[1]) throw new Error(`Dockerfile: COPY flag ${flag} is not supported here`);
          from = m[1];
        }
        const dest = words.pop();
        if (dest === undefined || words.length === 0)
          throw new Error(`Dockerfile: COPY needs sources and a destination: ${rest}`);
        return from === undefined
          ? { op, sources: words, dest }
          : { op, from, sources: words, dest };
      }
      case 'RUN':
        if (rest.startsWith('[')) throw new Error('Dockerfile: RUN in exec form is not supported');
        return { op, command: rest };
      case 'ENV': {
        const vars: Record<string, string> = {};
        for (const pair of rest.split(/\s+/)) {
          const eq = pair.indexOf('=');
          if (eq <= 0) throw new Error(`Dockerfile: ENV must be KEY=value, got ${pair}`);
          vars[pair.slice(0, eq)] = pair.slice(eq + 1).replace(/^"(.*)"$/, '$1');
        }
        return { op, vars };
      }
      case 'USER':
        return { op, user: rest };
      case 'EXPOSE':
        return { op, ports: rest.split(/\s+/).map((p) => Number(p.replace(/\/tcp$/, ''))) };
      case 'ENTRYPOINT':
      case 'CMD':
        return { op, argv: jsonArgv(op, rest) };
      default:
        throw new Error(`Dockerfile: instruction ${op} is not supported by the test that runs it`);
    }
  });
}

// ------------------------------------------------------------ .dockerignore

interface IgnoreRule {
  pattern: string;
  negated: boolean;
}

export function parseDockerignore(text: string): IgnoreRule[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const negated = line.startsWith('!');
      const pattern = path.posix.normalize((negated ? line.slice(1) : line).replace(/^\/+/, ''));
      return { pattern, negated };
    });
}

/**
 * A .dockerignore pattern as Docker matches it (Go's filepath.Match, plus
 * `**` for any number of directories): `*` and `?` stop at `/`, and unlike
 * shell globs they match names starting with a dot.
 */
function globToRegExp(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      // `**/` is zero or more directories; a trailing `**` is anything.
      const slash = pattern[i + 2] === '/';
      source += slash ? '(?:.*/)?' : '.*';
      i += slash ? 2 : 1;
    } else if (c === '*') source += '[^/]*';
    else if (c === '?') source += '[^/]';
    else if (c === '[') {
      const close = pattern.indexOf(']', i + 1);
      if (close === -1) throw new Error(`.dockerignore: unclosed [ in ${pattern}`);
      source += `[${pattern.slice(i + 1, close).replace(/^!/, '^')}]`;
      i = close;
    } else if (c === '\\' && i + 1 < pattern.length) {
      source += pattern[++i]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    } else source += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

/**
 * Docker's rule: the last pattern that matches the path, or one of its
 * parent directories, decides; `!` re-includes.
 */
export function isIgnored(relPath: string, rules: readonly IgnoreRule[]): boolean {
  const parts = relPath.split('/');
  const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
  let ignored = false;
  for (const rule of rules) {
    const re = globToRegExp(rule.pattern);
    if (candidates.some((candidate) => re.test(candidate))) {
      ignored = !rule.negated;
    }
  }
  return ignored;
}

// ------------------------------------------------------------------ build

export interface Stage {
  name: string;
  image: string;
  base: BaseImage & { nodeMajor: number };
  /** Host directory standing for the stage's `/`. */
  root: string;
  workdir: string;
  env: Record<string, string>;
  user: string;
  entrypoint: string[];
  cmd: string[];
  exposed: number[];
}

export interface BuiltImage {
  /** The last stage: what the image runs. */
  runtime: Stage;
  stages: Stage[];
  /** One line per step, with its duration. */
  steps: string[];
}

/** The host path of a path inside a stage. */
export function hostPath(stage: Stage, containerPath: string): string {
  const absolute = path.posix.resolve(stage.workdir, containerPath);
  return path.join(stage.root, absolute);
}

/**
 * The machine's environment (registry, proxy and CA settings reach npm as
 * they would reach a docker build), without the variables `npm run` sets for
 * the test itself: they would point npm at this checkout.
 */
function buildEnvironment(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key) && key !== 'INIT_CWD'),
  );
}

async function run(command: string, cwd: string, env: NodeJS.ProcessEnv): Promise<void> {
  // A cold `npm ci` may take a while; a step never runs unbounded.
  const result = await runCommand('/bin/sh', ['-c', command], { cwd, env, timeoutMs: 15 * 60_000 });
  if (result.code !== 0) {
    const output = `${result.stdout}${result.stderr}`;
    throw new Error(`RUN ${command} failed (exit ${result.code}):\n${output.slice(-4000)}`);
  }
}

async function copyFromContext(
  contextDir: string,
  rules: readonly IgnoreRule[],
  source: string,
  target: string,
): Promise<void> {
  const rel = path.posix.normalize(source).replace(/^\/+/, '').replace(/\/$/, '');
  const from = path.join(contextDir, rel);
  const exists = await fsp.stat(from).then(
    () => true,
    () => false,
  );
  if (!exists || isIgnored(rel, rules)) {
    throw new Error(
      `COPY ${source}: not in the build context${exists ? ' (excluded by .dockerignore)' : ''}`,
    );
  }
  await fsp.cp(from, target, {
    recursive: true,
    verbatimSymlinks: true,
    filter: (src) => {
      const relative = path.relative(contextDir, src).split(path.sep).join('/');
      return relative === '' || !isIgnored(relative, rules);
    },
  });
}

/**
 * Runs every stage of `dockerfile` (a path in `contextDir`) into `outDir`.
 * RUN commands get the pinned Node 24 first on PATH and may use the npm cache.
 */
export async function buildLikeDockerfile(
  contextDir: string,
  outDir: string,
  dockerfile = 'Dockerfile',
): Promise<BuiltImage> {
  const instructions = parseDockerfile(
    await fsp.readFile(path.join(contextDir, dockerfile), 'utf8'),
  );
  const ignoreText = await fsp
    .readFile(path.join(contextDir, '.dockerignore'), 'utf8')
    .catch(() => '');
  const rules = parseDockerignore(ignoreText);
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  const stages: Stage[] = [];
  const steps: string[] = [];
  let stage: Stage | undefined;
  await fsp.mkdir(outDir, { recursive: true });
  // Readable by the image's non-root user, as Docker's layers are.
  await fsp.chmod(outDir, 0o755);

  for (const instruction of instructions) {
    const started = Date.now();
    if (instruction.op === 'FROM') {
      const base = baseImage(instruction.image);
      if (base.nodeMajor !== nodeMajor) {
        throw new Error(
          `Dockerfile: ${instruction.image} has Node ${base.nodeMajor}, the project pins Node ${nodeMajor}`,
        );
      }
      const name = instruction.name ?? `stage-${stages.length}`;
      const root = path.join(outDir, name);
      await fsp.mkdir(root, { recursive: true, mode: 0o755 });
      stage = {
        name,
        image: instruction.image,
        base,
        root,
        workdir: '/',
        env: {},
        user: '0',
        entrypoint: [],
        cmd: [],
        exposed: [],
      };
      await placeBaseNode(stage);
      stages.push(stage);
      steps.push(`FROM ${instruction.image}${instruction.name ? ` AS ${instruction.name}` : ''}`);
      continue;
    }
    if (stage === undefined) throw new Error(`Dockerfile: ${instruction.op} before FROM`);
    const current: Stage = stage;
    switch (instruction.op) {
      case 'WORKDIR':
        current.workdir = path.posix.resolve(current.workdir, instruction.dir);
        await fsp.mkdir(hostPath(current, '.'), { recursive: true, mode: 0o755 });
        break;
      case 'ENV':
        Object.assign(current.env, instruction.vars);
        break;
      case 'USER':
        current.user = instruction.user;
        break;
      case 'EXPOSE':
        current.exposed.push(...instruction.ports);
        break;
      case 'ENTRYPOINT':
        current.entrypoint = instruction.argv;
        // Docker resets an inherited CMD when ENTRYPOINT is set.
        current.cmd = [];
        break;
      case 'CMD':
        current.cmd = instruction.argv;
        break;
      case 'COPY': {
        const many = instruction.sources.length > 1;
        if (many && !instruction.dest.endsWith('/'))
          throw new Error(`COPY with several sources needs a directory (…/) destination`);
        const dest = hostPath(current, instruction.dest);
        for (const source of instruction.sources) {
          const target = instruction.dest.endsWith('/')
            ? path.join(dest, path.posix.basename(source))
            : dest;
          await fsp.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
          if (instruction.from === undefined) {
            await copyFromContext(contextDir, rules, source, target);
          } else {
            const from = stages.find((s) => s.name === instruction.from);
            if (from === undefined)
              throw new Error(`COPY --from=${instruction.from}: no such stage before it`);
            const src = hostPath(from, source);
            await fsp.cp(src, target, { recursive: true, verbatimSymlinks: true }).catch((err) => {
              throw new Error(`COPY --from=${instruction.from} ${source}: ${String(err)}`);
            });
          }
        }
        break;
      }
      case 'RUN': {
        if (!current.base.shell)
          throw new Error(`RUN in stage ${current.name}: ${current.image} has no shell`);
        const env: NodeJS.ProcessEnv = {
          ...buildEnvironment(),
          PATH: `${path.dirname(process.execPath)}:${process.env['PATH'] ?? ''}`,
          // The cache only saves downloads; the lockfile decides what is installed.
          npm_config_prefer_offline: 'true',
          npm_config_update_notifier: 'false',
          ...current.env,
        };
        await run(instruction.command, hostPath(current, '.'), env);
        break;
      }
    }
    steps.push(
      `${instruction.op} ${describe(instruction)} (${((Date.now() - started) / 1000).toFixed(1)} s)`,
    );
  }
  if (stage === undefined) throw new Error('Dockerfile: no FROM');
  return { runtime: stage, stages, steps };
}

function describe(instruction: Instruction): string {
  switch (instruction.op) {
    case 'FROM':
      return instruction.image;
    case 'WORKDIR':
      return instruction.dir;
    case 'RUN':
      return instruction.command;
    case 'COPY':
      return `${instruction.from ? `--from=${instruction.from} ` : ''}${instruction.sources.join(' ')} ${instruction.dest}`;
    case 'ENV':
      return Object.entries(instruction.vars)
        .map(([key, value]) => `${key}=${value}`)
        .join(' ');
    case 'USER':
      return instruction.user;
    case 'EXPOSE':
      return instruction.ports.join(' ');
    case 'ENTRYPOINT':
    case 'CMD':
      return JSON.stringify(instruction.argv);
  }
}

/** uid and gid of a numeric USER, e.g. "65532:65532". */
export function numericUser(stage: Stage): { uid: number; gid: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(stage.user);
  if (!m?.[1]) throw new Error(`USER ${stage.user} is not numeric (runAsNonRoot needs a uid)`);
  return { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) };
}

/**
 * The process a container of this image runs, as the container runtime
 * resolves it: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces
 * CMD. The base image's node becomes the pinned Node running the tests.
 */
export function containerProcess(
  image: Stage,
  container: { command?: string[] | undefined; args?: string[] | undefined } = {},
): { file: string; args: string[]; cwd: string } {
  const argv =
    container.command !== undefined
      ? [...container.command, ...(container.args ?? [])]
      : [...image.entrypoint, ...(container.args ?? image.cmd)];
  const [first, ...rest] = argv;
  if (first !== image.base.node) {
    throw new Error(
      `the container would run ${JSON.stringify(first)}; only the base image's node (${image.base.node}) can be stood in for`,
    );
  }
  return { file: hostPath(image, image.base.node), args: rest, cwd: hostPath(image, '.') };
}

/**
 * Puts this Node binary where the base image has its node, inside the
 * stage's layout (hard-linked when it can be, else copied): the checkout, and
 * node_modules/node with it, may sit where the image's non-root user cannot
 * search, as a layer's files never would.
 */
async function placeBaseNode(stage: Stage): Promise<void> {
  const target = hostPath(stage, stage.base.node);
  await fsp.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
  await fsp.rm(target, { force: true });
  await fsp.link(process.execPath, target).catch(() => fsp.copyFile(process.execPath, target));
  await fsp.chmod(target, 0o755);
}
