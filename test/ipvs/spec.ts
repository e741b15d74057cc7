// What the IPVS lab's host side hands the guest (spec.json in the shared
// folder) and what the guest hands back (results.json). Both sides import
// this file; nothing in it runs.

export const STRATEGIES = ['none', 'delete-at-once', 'reaper', 'sysctl'] as const;
export type StrategyName = (typeof STRATEGIES)[number];

export interface Sysctls {
  connReuseMode: number;
  expireNodestConn: number;
}

/** The node's sysctls in each strategy: the report's, except for the sysctl fix. */
export const STRATEGY_SYSCTLS: Record<StrategyName, Sysctls> = {
  none: { connReuseMode: 0, expireNodestConn: 0 },
  'delete-at-once': { connReuseMode: 0, expireNodestConn: 0 },
  reaper: { connReuseMode: 0, expireNodestConn: 0 },
  sysctl: { connReuseMode: 1, expireNodestConn: 1 },
};

export interface LabSpec {
  /** Inside the guest. */
  kubeconfig: string;
  namespace: string;
  nodeName: string;
  /** The guest's address, the Node's InternalIP and every pod's hostIP. */
  nodeIP: string;
  service: { name: string; clusterIP: string; port: number; targetPort: number };
  strategies: StrategyName[];
  load: {
    /** New connections per second from the shared client, each from a pooled source port. */
    ratePerSecond: number;
    sourcePorts: number;
    shortRequestMs: number;
    /** Long requests sent just before the old pod starts terminating. */
    longRequests: number;
    longRequestMs: number;
  };
  /** The preStop sleep this project injects; longer than the long requests. */
  preStopSleepSeconds: number;
  terminationGracePeriodSeconds: number;
  warmupMs: number;
  /** How long the load runs after the old pod's app exited. */
  afterGoneMs: number;
}

export type FailureClass =
  'refused' | 'unreachable' | 'connect-timeout' | 'reset' | 'empty' | 'response-timeout' | 'other';

/** One request as the client saw it; times in ms since the epoch (one clock in the guest). */
export interface RequestRecord {
  startMs: number;
  endMs: number;
  port: number;
  long: boolean;
  /** The pod that answered. */
  pod?: string;
  failure?: FailureClass;
  /** The connection was established before it failed: the request was in flight. */
  connected: boolean;
}

/** The old pod's phase when a request started: gone once its app has exited. */
export type Phase = 'before' | 'terminating' | 'stopping' | 'gone';

export interface ScenarioResult {
  strategy: StrategyName;
  sysctls: Sysctls;
  requests: number;
  failed: number;
  /** Failed after the connection was established: in-flight requests cut. */
  cut: number;
  byFailure: Partial<Record<FailureClass, number>>;
  /** Failed requests by the old pod's phase when they started. */
  failedByPhase: Record<Phase, number>;
  /** Requests the old pod was serving when it began terminating, and how many of them failed. */
  inFlightAtTerminating: { requests: number; failed: number };
  /** Failed requests that started after the old pod's real server left the table (null: it stayed). */
  failedAfterRemoval: number | null;
  /** How many requests the old pod answered after it began terminating. */
  answeredWhileTerminating: number;
  p99Ms: number;
  /** Seconds from the old pod's deletion request. */
  timeline: {
    sigtermS: number;
    /** The app exited: the pod serves nothing from here on. */
    exitedS: number;
    /** The kubelet's CNI DEL: the address is no longer routed. */
    networkGoneS: number;
    podObjectDeletedS: number;
    /** Its real server left the IPVS table (kube-proxy or a reaper); null if it stayed. */
    realServerRemovedS: number | null;
  };
  /** Connection entries still pointing at the old pod at the end. */
  entriesLeftAtEnd: number;
  /** The project's `ipvs-reaper --diagnose --json` on the guest, with this strategy's sysctls. */
  diagnosis: { exposure: string; reasons: string[] };
  reaperMetrics?: Record<string, number>;
}

export interface LabResults {
  kernel: string;
  kubeVersion: string;
  scenarios: ScenarioResult[];
}
