// The kernel's IPVS tables as text: /proc/net/ip_vs (virtual services and
// their real servers, with weights and connection counts) and
// /proc/net/ip_vs_conn (one line per connection entry). Pure parsing: the
// files are read elsewhere (node.ts).
//
// IPv4 addresses and every port are hexadecimal there; IPv6 addresses are
// written out in full, in brackets in ip_vs and bare in ip_vs_conn.

type IpvsProtocol = 'TCP' | 'UDP' | 'SCTP';

interface VirtualService {
  protocol: IpvsProtocol;
  address: string;
  port: number;
}

export interface RealServer {
  service: VirtualService;
  address: string;
  port: number;
  weight: number;
  /** Entries in ESTABLISHED state. */
  activeConnections: number;
  /** Entries in every other state (TIME_WAIT, CLOSE, SYN_RECV, ...). */
  inactiveConnections: number;
}

export interface ConnectionEntry {
  protocol: IpvsProtocol;
  client: { address: string; port: number };
  service: { address: string; port: number };
  destination: { address: string; port: number };
  state: string;
  expiresSeconds: number;
}

const PROTOCOLS: ReadonlySet<string> = new Set(['TCP', 'UDP', 'SCTP']);

/** 0A60000A -> 10.96.0.10; a full IPv6 address is shortened to its usual form. */
export function parseAddress(text: string): string | null {
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (/^[0-9A-Fa-f]{8}$/.test(bare)) {
    const value = Number.parseInt(bare, 16);
    return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join('.');
  }
  if (bare.includes(':')) return shortenIPv6(bare);
  return null;
}

/** 2001:0db8:0000:0000:0000:0000:0000:0001 -> 2001:db8::1 (RFC 5952). */
function shortenIPv6(full: string): string | null {
  const groups = full.split(':');
  if (groups.length !== 8 || !groups.every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return null;
  const values = groups.map((g) => Number.parseInt(g, 16).toString(16));
  // The longest run of two or more zero groups becomes "::".
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (values[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && values[j] === '0') j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (bestStart === -1) return values.join(':');
  const head = values.slice(0, bestStart).join(':');
  const tail = values.slice(bestStart + bestLength).join(':');
  return `${head}::${tail}`;
}

function parsePort(text: string): number | null {
  if (!/^[0-9A-Fa-f]{1,4}$/.test(text)) return null;
  return Number.parseInt(text, 16);
}

/** "0A60000A:0050" or "[2001:...:0001]:0050" */
function parseEndpoint(text: string): { address: string; port: number } | null {
  const colon = text.lastIndexOf(':');
  if (colon === -1) return null;
  const address = parseAddress(text.slice(0, colon));
  const port = parsePort(text.slice(colon + 1));
  return address === null || port === null ? null : { address, port };
}

export interface IpvsTable {
  services: VirtualService[];
  realServers: RealServer[];
}

/**
 * /proc/net/ip_vs. Firewall-mark services (FWM) are not kube-proxy's and are
 * skipped with their real servers.
 */
export function parseIpvsTable(text: string): IpvsTable {
  const services: VirtualService[] = [];
  const servers: RealServer[] = [];
  let service: VirtualService | null = null;
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields[0] === '->') {
      // "-> RemoteAddress:Port Forward Weight ActiveConn InActConn"; the header says the same.
      if (service === null || fields.length < 6) continue;
      const endpoint = parseEndpoint(fields[1]!);
      const [weight, active, inactive] = fields.slice(3, 6).map(Number);
      if (endpoint === null || ![weight, active, inactive].every(Number.isInteger)) continue;
      servers.push({
        service,
        ...endpoint,
        weight: weight!,
        activeConnections: active!,
        inactiveConnections: inactive!,
      });
      continue;
    }
    if (PROTOCOLS.has(fields[0]!) && fields.length >= 2) {
      const endpoint = parseEndpoint(fields[1]!);
      service = endpoint === null ? null : { protocol: fields[0] as IpvsProtocol, ...endpoint };
      if (service !== null) services.push(service);
      continue;
    }
    // A firewall-mark service, or a header line: no service until the next one.
    if (fields[0] === 'FWM') service = null;
  }
  return { services, realServers: servers };
}

/** Entries of /proc/net/ip_vs_conn (or /proc/net/ip_vs_conn_sync). */
export function parseConnectionTable(text: string): ConnectionEntry[] {
  const entries: ConnectionEntry[] = [];
  for (const line of text.split('\n')) {
    // Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires [PEName PEData]
    const fields = line.trim().split(/\s+/);
    if (!PROTOCOLS.has(fields[0]!) || fields.length < 9) continue;
    const [client, clientPort, vip, vport, dest, destPort] = fields.slice(1, 7);
    const addresses = [client!, vip!, dest!].map(parseAddress);
    const ports = [clientPort!, vport!, destPort!].map(parsePort);
    const expires = Number(fields[8]);
    if (addresses.includes(null) || ports.includes(null) || !Number.isFinite(expires)) continue;
    entries.push({
      protocol: fields[0] as IpvsProtocol,
      client: { address: addresses[0]!, port: ports[0]! },
      service: { address: addresses[1]!, port: ports[1]! },
      destination: { address: addresses[2]!, port: ports[2]! },
      state: fields[7]!,
      expiresSeconds: expires,
    });
  }
  return entries;
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function serviceName(service: VirtualService): string {
  return `${service.protocol} ${hostPort(service.address, service.port)}`;
}

/** One line for logs and the identity of a real server: "TCP 10.96.0.10:80 -> 10.244.1.2:8080". */
export function realServerName(server: Pick<RealServer, 'service' | 'address' | 'port'>): string {
  return `${serviceName(server.service)} -> ${hostPort(server.address, server.port)}`;
}

/** ipvsadm's arguments that delete this real server. */
export function deleteRealServerArgs(server: RealServer): string[] {
  const flag = { TCP: '-t', UDP: '-u', SCTP: '--sctp-service' }[server.service.protocol];
  return [
    '-d',
    flag,
    hostPort(server.service.address, server.service.port),
    '-r',
    hostPort(server.address, server.port),
  ];
}
