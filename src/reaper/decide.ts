// Which weight-0 real servers to remove. kube-proxy sets a real server's
// weight to 0 when its endpoint leaves the Service and deletes it only once
// it has no connection entries left; with conn_reuse_mode=0 (and, on
// kernels without upstream commit c95c07836fa4, whatever
// expire_nodest_conn says) a new connection reusing a source port follows
// its old entry to that real server, so under steady port reuse the entries
// never run out and the server is never deleted. Removing it while its pod
// is terminating would cut the pod's in-flight requests; once the pod is
// gone, nothing it could still serve is lost.

import type { AddressState } from './address-book.ts';
import { realServerName, type RealServer } from './ipvs-table.ts';

type Verdict =
  /** Its pod is gone: remove it. */
  | { action: 'reap'; pod: string }
  /** Terminating, serving, or not known as a pod's: leave it to kube-proxy. */
  | { action: 'keep'; reason: string };

export interface Decision {
  server: RealServer;
  /** "TCP 10.96.0.10:80 -> 10.244.1.2:8080" */
  name: string;
  verdict: Verdict;
}

function verdictFor(state: AddressState): Verdict {
  switch (state.kind) {
    case 'gone':
      return { action: 'reap', pod: state.pod };
    case 'terminating':
      return { action: 'keep', reason: `terminating (${state.holder}): in-flight requests finish` };
    case 'live':
      return { action: 'keep', reason: `held by ${state.holder}` };
    case 'unknown':
      return { action: 'keep', reason: 'not known as a pod address' };
  }
}

/** A verdict for each weight-0 real server; servers with weight are kube-proxy's business. */
export function decide(
  servers: readonly RealServer[],
  stateOf: (address: string) => AddressState,
): Decision[] {
  return servers
    .filter((server) => server.weight === 0)
    .map((server) => ({
      server,
      name: realServerName(server),
      verdict: verdictFor(stateOf(server.address)),
    }));
}
