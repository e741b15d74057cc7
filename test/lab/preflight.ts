// What both labs (the real node and the emulator) check before they start
// anything, and their shared option parsing.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const INSTALLER = fileURLToPath(
  new URL('../../scripts/install-debian-packages.sh', import.meta.url),
);

/** Prints `${label}: message` and exits 2, as a usage error. */
export function refuse(label: string, message: string): never {
  process.stderr.write(`${label}: ${message}\n`);
  process.exit(2);
}

/**
 * Installs the Debian packages the lab runs (notes to stderr: stdout carries
 * only tables and the JSON line) and checks that network namespaces can be
 * made; refuses, having started nothing, when either fails.
 */
export function preflight(options: {
  label: string;
  packages: readonly string[];
  /** Says what was not started, e.g. "no node was started". */
  notStarted: string;
  probeName: string;
}): void {
  const { label, packages } = options;
  const install = spawnSync('bash', [INSTALLER, ...packages], {
    stdio: ['ignore', 2, 'pipe'],
    encoding: 'utf8',
  });
  if (install.status !== 0) {
    refuse(label, `cannot install ${packages.join(' and ')}: ${install.stderr.trim()}`);
  }
  const created = spawnSync('ip', ['netns', 'add', options.probeName], { encoding: 'utf8' });
  if (created.error !== undefined || created.status !== 0) {
    refuse(
      label,
      `cannot create network namespaces, so ${options.notStarted}. The lab needs root ` +
        '(CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2. `ip netns add` said: ' +
        (created.stderr?.trim() || created.error?.message || `exit ${created.status}`),
    );
  }
  spawnSync('ip', ['netns', 'del', options.probeName]);
}

/** A comma-separated option as a list; undefined when not given. */
export function listOption(value: string | undefined): string[] | undefined {
  return value
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}
