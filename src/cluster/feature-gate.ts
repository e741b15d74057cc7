// The API server's own PodLifecycleSleepAction gate. An API server of
// 1.29 (gate off by default), or of 1.30-1.33 with the gate turned off,
// silently drops a sleep action from the pod after mutating admission; its
// version alone does not tell. Its kubernetes_feature_enabled metric does,
// and reading it needs only `get` on the /metrics non-resource URL.

import http from 'node:http';
import https from 'node:https';
import { createInterface } from 'node:readline';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeVersion } from '../core/capabilities.ts';

const SLEEP_ACTION_GATE = 'PodLifecycleSleepAction';

/** The gate's state in one line of the API server's metrics text; null when it is not there. */
function gateFromMetrics(line: string, gate: string = SLEEP_ACTION_GATE): boolean | null {
  if (!line.startsWith('kubernetes_feature_enabled{') || !line.includes(`name="${gate}"`)) {
    return null;
  }
  const value = line.slice(line.lastIndexOf(' ') + 1);
  return value === '1' ? true : value === '0' ? false : null;
}

/** The gate decides only for servers of 1.29 to 1.33: before, no sleep action; after, GA. */
export function gateMatters(version: KubeVersion | null): boolean {
  return version !== null && version.major === 1 && version.minor >= 29 && version.minor <= 33;
}

/**
 * Whether the current cluster's API server has the gate on, from GET
 * /metrics. Null when it cannot be read (no right, no answer in time): the
 * version's default is then assumed. Never throws.
 */
export async function readSleepActionGate(
  kc: KubeConfig,
  options: { timeoutMs: number; signal?: AbortSignal },
): Promise<boolean | null> {
  const server = kc.getCurrentCluster()?.server;
  if (server === undefined) return null;
  // Keep a path in the server's URL (a proxying front end such as Rancher's).
  const url = new URL(server.replace(/\/+$/, '') + '/metrics');
  const request: https.RequestOptions = { method: 'GET', timeout: options.timeoutMs };
  const secure = url.protocol === 'https:';
  try {
    await kc.applyToHTTPSOptions(request);
  } catch {
    // client-node refuses plain http without skipTLSVerify; kubectl proxy is plain http.
    if (secure) return null;
  }
  if (!secure) delete request.agent;
  if (options.signal !== undefined) request.signal = options.signal;
  const get = url.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve) => {
    const req = get(url, request, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        resolve(null);
        return;
      }
      let found: boolean | null = null;
      const lines = createInterface({ input: res });
      lines.on('line', (line) => {
        found ??= gateFromMetrics(line);
        // The answer is in: the rest of a large page is not read.
        if (found !== null) res.destroy();
      });
      lines.on('close', () => resolve(found));
      // readline does not close when its input is destroyed mid-page.
      res.on('close', () => resolve(found));
      res.on('error', () => resolve(found));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', () => resolve(null));
    req.end();
  });
}
