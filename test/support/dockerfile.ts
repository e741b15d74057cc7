// The Dockerfile and .dockerignore, read as Docker reads them, for the fast
// static checks of test/unit/dockerfile.test.ts. The image itself is built
// by buildah from the same Dockerfile (test/support/node/webhook-image.ts)
// and run on a real node (test/node/).
//
// Only the instructions this project's Dockerfile uses are understood; any
// other one fails loudly, so the Dockerfile cannot outgrow its checks.

import path from 'node:path';

export type Instruction =
  | { op: 'FROM'; image: string; name?: string }
  | { op: 'WORKDIR'; dir: string }
  | { op: 'COPY'; from?: string; sources: string[]; dest: string }
  | { op: 'RUN'; command: string }
  | { op: 'ENV' | 'LABEL'; vars: Record<string, string> }
  | { op: 'ARG'; name: string; default?: string }
  | { op: 'USER'; user: string }
  | { op: 'EXPOSE'; ports: number[] }
  | { op: 'ENTRYPOINT' | 'CMD'; argv: string[] };

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

/** KEY=value pairs, values optionally in double quotes (which may hold spaces). */
function keyValues(op: string, rest: string): Record<string, string> {
  const vars: Record<string, string> = {};
  const pair = /([A-Za-z0-9_.-]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))\s*/y;
  let index = 0;
  while (index < rest.length) {
    pair.lastIndex = index;
    const m = pair.exec(rest);
    if (!m?.[1])
      throw new Error(`Dockerfile: ${op} must be KEY=value pairs, got ${rest.slice(index)}`);
    vars[m[1]] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '');
    index = pair.lastIndex;
  }
  return vars;
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
      case 'ENV':
      case 'LABEL':
        return { op, vars: keyValues(op, rest) };
      case 'ARG': {
        const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$/.exec(rest);
        if (!m?.[1]) throw new Error(`Dockerfile: cannot read ARG ${rest}`);
        return m[2] === undefined ? { op, name: m[1] } : { op, name: m[1], default: m[2] };
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
