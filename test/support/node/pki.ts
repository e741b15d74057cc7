// The node's certificates, made with openssl: one CA that signs the API
// server's serving certificate and the client certificates of the kubelets
// (system:node:NAME in system:nodes, as the Node authorizer needs) and of the
// API server's calls to the kubelets. Client certificates, unlike a static
// token file, can be issued for a node added after the API server started.

import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { mustRun } from '../cluster/processes.ts';

export interface CertificateAuthority {
  certPath: string;
  keyPath: string;
  pem: string;
}

export interface IssuedCertificate {
  certPath: string;
  keyPath: string;
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export async function makeCertificateAuthority(
  dir: string,
  commonName: string,
): Promise<CertificateAuthority> {
  await fsp.mkdir(dir, { recursive: true });
  const certPath = path.join(dir, 'ca.crt');
  const keyPath = path.join(dir, 'ca.key');
  await mustRun('openssl', [
    'req',
    '-x509',
    ...EC_KEY,
    '-sha256',
    '-days',
    '30',
    '-subj',
    `/CN=${commonName}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout',
    keyPath,
    '-out',
    certPath,
  ]);
  return { certPath, keyPath, pem: await fsp.readFile(certPath, 'utf8') };
}

export interface CertificateRequest {
  /** File name stem: NAME.crt and NAME.key in the CA's directory. */
  name: string;
  commonName: string;
  /** Subject O= entries: Kubernetes reads them as groups. */
  organizations?: string[];
  /** DNS names and IP addresses for a serving certificate. */
  hosts?: string[];
  usage: 'server' | 'client';
}

export async function issueCertificate(
  ca: CertificateAuthority,
  request: CertificateRequest,
): Promise<IssuedCertificate> {
  const dir = path.dirname(ca.certPath);
  const certPath = path.join(dir, `${request.name}.crt`);
  const keyPath = path.join(dir, `${request.name}.key`);
  const csrPath = path.join(dir, `${request.name}.csr`);
  const extPath = path.join(dir, `${request.name}.ext`);
  const subject =
    (request.organizations ?? []).map((o) => `/O=${o}`).join('') + `/CN=${request.commonName}`;
  await mustRun('openssl', [
    'req',
    ...EC_KEY,
    '-subj',
    subject,
    '-keyout',
    keyPath,
    '-out',
    csrPath,
  ]);
  const extensions = [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage=${request.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
  ];
  if (request.hosts?.length) {
    const sans = request.hosts.map((h) => (net.isIP(h) ? `IP:${h}` : `DNS:${h}`));
    extensions.push(`subjectAltName=${sans.join(',')}`);
  }
  await fsp.writeFile(extPath, extensions.join('\n') + '\n');
  await mustRun('openssl', [
    'x509',
    '-req',
    '-sha256',
    '-days',
    '30',
    '-in',
    csrPath,
    '-CA',
    ca.certPath,
    '-CAkey',
    ca.keyPath,
    '-CAcreateserial',
    '-extfile',
    extPath,
    '-out',
    certPath,
  ]);
  await fsp.rm(csrPath);
  await fsp.rm(extPath);
  return { certPath, keyPath };
}
