// One heavy run (a guest, a control plane) at a time on this machine: a
// heavy entry point re-runs itself under `flock /tmp/prestop-heavy.lock`,
// unless one of its ancestors already holds that lock (someone ran it under
// flock, as the machine's rule asks): taking it again would wait forever.

import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';

export const HEAVY_LOCK = '/tmp/prestop-heavy.lock';

function parentOf(pid: number): number | null {
  try {
    // "pid (comm) state ppid ...": comm may hold spaces, so read after its ")".
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) && ppid > 0 ? ppid : null;
  } catch {
    return null;
  }
}

/** Whether a process holding the lock (per /proc/locks) is this one or an ancestor. */
export function heldByAncestor(lockFile = HEAVY_LOCK): boolean {
  let inode: number;
  try {
    inode = statSync(lockFile).ino;
  } catch {
    return false;
  }
  const holders = readFileSync('/proc/locks', 'utf8')
    .split('\n')
    // "1: FLOCK  ADVISORY  WRITE 12090 fe:00:9978623 0 EOF"; waiters' lines have "->".
    .filter((line) => !line.includes('->'))
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields[1] === 'FLOCK' && Number(fields[5]?.split(':')[2]) === inode)
    .map((fields) => Number(fields[4]));
  for (let pid: number | null = process.pid; pid !== null; pid = parentOf(pid)) {
    if (holders.includes(pid)) return true;
  }
  return false;
}

/** Returns only in a process under the lock; otherwise runs `script argv` under flock and exits with its status. */
export function holdHeavyLock(script: string, argv: readonly string[]): void {
  if (heldByAncestor()) return;
  closeSync(openSync(HEAVY_LOCK, 'a'));
  const result = spawnSync('flock', [HEAVY_LOCK, process.execPath, script, ...argv], {
    stdio: 'inherit',
  });
  process.exit(result.status ?? 1);
}
