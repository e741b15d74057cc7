// X.509 certificates for the webhook's own CA and serving certificate, made
// in process: Node can sign and verify but not build a certificate, so the
// few DER structures RFC 5280 needs are encoded here. ECDSA P-256 with
// SHA-256 throughout, as Go's crypto/x509 (the API server) and Node's TLS
// both accept. No I/O: the caller chooses the times.

import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { isIP } from 'node:net';

// ------------------------------------------------------------------- DER

function encodeLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), encodeLength(content.length), content]);
}

const sequence = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]) => tlv(0x31, Buffer.concat(items));
const octetString = (content: Buffer) => tlv(0x04, content);
const utf8String = (text: string) => tlv(0x0c, Buffer.from(text, 'utf8'));
/** [n] EXPLICIT: a constructed context tag around one value. */
const explicit = (n: number, content: Buffer) => tlv(0xa0 | n, content);
const TRUE = Buffer.from([0x01, 0x01, 0xff]);

/** A non-negative INTEGER from its big-endian bytes, minimal, with a sign byte when needed. */
function unsignedInteger(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const trimmed = bytes.subarray(start);
  return tlv(0x02, trimmed[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed);
}

const smallInteger = (n: number) => unsignedInteger(Buffer.from([n]));

/** A BIT STRING whose content is whole bytes. */
const bitString = (content: Buffer) => tlv(0x03, Buffer.concat([Buffer.from([0]), content]));

function objectIdentifier(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const bytes = [40 * arcs[0]! + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const chunk = [arc & 0x7f];
    for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128)) {
      chunk.unshift((rest & 0x7f) | 0x80);
    }
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

/** UTCTime through 2049, GeneralizedTime after (RFC 5280 4.1.2.5). */
function time(ms: number): Buffer {
  const iso = new Date(Math.floor(ms / 1000) * 1000).toISOString();
  const digits = iso.replace(/[-:T]/g, '').slice(0, 14);
  const year = Number(digits.slice(0, 4));
  return year < 2050
    ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, 'ascii'))
    : tlv(0x18, Buffer.from(`${digits}Z`, 'ascii'));
}

// ------------------------------------------------------------ structures

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

const signatureAlgorithm = () => sequence(objectIdentifier(OID.ecdsaWithSha256));

const distinguishedName = (commonName: string) =>
  sequence(set(sequence(objectIdentifier(OID.commonName), utf8String(commonName))));

function extension(oid: string, critical: boolean, value: Buffer): Buffer {
  return sequence(objectIdentifier(oid), ...(critical ? [TRUE] : []), octetString(value));
}

/** RFC 5280 key identifier: SHA-1 of the subjectPublicKey bits. */
function keyIdentifier(publicKey: KeyObject): Buffer {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  // For P-256 the SPKI ends with the 65-byte uncompressed point.
  return createHash('sha1')
    .update(spki.subarray(spki.length - 65))
    .digest();
}

/** keyUsage bits, numbered from the most significant bit of the first byte. */
const KEY_USAGE = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;

function keyUsage(...usages: (keyof typeof KEY_USAGE)[]): Buffer {
  let byte = 0;
  for (const usage of usages) byte |= 0x80 >> KEY_USAGE[usage];
  let unused = 0;
  while (unused < 7 && !(byte & (1 << unused))) unused++;
  return tlv(0x03, Buffer.from([unused, byte]));
}

function subjectAltName(names: readonly string[]): Buffer {
  return sequence(
    ...names.map((name) => {
      const version = isIP(name);
      if (version === 4) return tlv(0x87, Buffer.from(name.split('.').map(Number)));
      if (version === 6) return tlv(0x87, ipv6Bytes(name));
      // dNSName [2] IMPLICIT IA5String
      return tlv(0x82, Buffer.from(name, 'ascii'));
    }),
  );
}

function ipv6Bytes(address: string): Buffer {
  const [head = '', tail] = address.split('::');
  const groups = (part: string) => (part === '' ? [] : part.split(':'));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const middle = new Array<string>(8 - left.length - right.length).fill('0');
  const all = tail === undefined ? left : [...left, ...middle, ...right];
  const out = Buffer.alloc(16);
  all.forEach((group, i) => out.writeUInt16BE(parseInt(group, 16), i * 2));
  return out;
}

// ----------------------------------------------------------------- issue

export interface PemPair {
  certPem: string;
  keyPem: string;
}

export interface Validity {
  notBeforeMs: number;
  notAfterMs: number;
}

function newKeyPair(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

function pem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

function signedCertificate(options: {
  subject: string;
  issuer: string;
  validity: Validity;
  publicKey: KeyObject;
  signingKey: KeyObject;
  extensions: Buffer[];
}): string {
  // 16 random bytes, positive: RFC 5280 allows up to 20 octets.
  const serial = randomBytes(16);
  serial[0] = serial[0]! & 0x7f;
  const tbs = sequence(
    explicit(0, smallInteger(2)),
    unsignedInteger(serial),
    signatureAlgorithm(),
    distinguishedName(options.issuer),
    sequence(time(options.validity.notBeforeMs), time(options.validity.notAfterMs)),
    distinguishedName(options.subject),
    options.publicKey.export({ type: 'spki', format: 'der' }),
    explicit(3, sequence(...options.extensions)),
  );
  const signature = sign('sha256', tbs, { key: options.signingKey, dsaEncoding: 'der' });
  return pem('CERTIFICATE', sequence(tbs, signatureAlgorithm(), bitString(signature)));
}

function privateKeyPem(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** A self-signed CA that may sign end-entity certificates only (pathLen 0). */
export function issueCertificateAuthority(commonName: string, validity: Validity): PemPair {
  const { privateKey, publicKey } = newKeyPair();
  const id = keyIdentifier(publicKey);
  const certPem = signedCertificate({
    subject: commonName,
    issuer: commonName,
    validity,
    publicKey,
    signingKey: privateKey,
    extensions: [
      extension(OID.basicConstraints, true, sequence(TRUE, smallInteger(0))),
      extension(OID.keyUsage, true, keyUsage('digitalSignature', 'keyCertSign', 'cRLSign')),
      extension(OID.subjectKeyIdentifier, false, octetString(id)),
    ],
  });
  return { certPem, keyPem: privateKeyPem(privateKey) };
}

/** A TLS server certificate for `names` (DNS names and IP addresses), signed by `ca`. */
export function issueServingCertificate(
  ca: PemPair,
  names: readonly string[],
  validity: Validity,
): PemPair {
  if (names.length === 0) throw new Error('a serving certificate needs at least one name');
  const caCert = new X509Certificate(ca.certPem);
  const caKey = createPrivateKey(ca.keyPem);
  const { privateKey, publicKey } = newKeyPair();
  const certPem = signedCertificate({
    subject: names[0]!,
    issuer: commonNameOf(caCert),
    validity,
    publicKey,
    signingKey: caKey,
    extensions: [
      extension(OID.basicConstraints, true, sequence()),
      extension(OID.keyUsage, true, keyUsage('digitalSignature')),
      extension(OID.extKeyUsage, false, sequence(objectIdentifier(OID.serverAuth))),
      extension(OID.subjectAltName, false, subjectAltName(names)),
      extension(OID.subjectKeyIdentifier, false, octetString(keyIdentifier(publicKey))),
      extension(
        OID.authorityKeyIdentifier,
        false,
        // keyIdentifier [0] IMPLICIT
        sequence(tlv(0x80, keyIdentifier(caCert.publicKey))),
      ),
    ],
  });
  return { certPem, keyPem: privateKeyPem(privateKey) };
}

function commonNameOf(cert: X509Certificate): string {
  const match = /^CN=(.*)$/m.exec(cert.subject);
  if (!match?.[1]) throw new Error(`the CA certificate has no common name: ${cert.subject}`);
  return match[1];
}

// ------------------------------------------------------------------ read

/** The certificates of a PEM bundle, in order; text that is not a certificate is skipped. */
export function certificatesOf(bundlePem: string): X509Certificate[] {
  const blocks = bundlePem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g);
  const out: X509Certificate[] = [];
  for (const block of blocks ?? []) {
    try {
      out.push(new X509Certificate(block));
    } catch {
      // Not a certificate after all: a bundle is read leniently.
    }
  }
  return out;
}

/** True when the private key is the one of the certificate's public key. */
export function keyMatches(cert: X509Certificate, keyPem: string): boolean {
  try {
    const derived = createPublicKey(createPrivateKey(keyPem));
    return derived
      .export({ type: 'spki', format: 'der' })
      .equals(cert.publicKey.export({ type: 'spki', format: 'der' }));
  } catch {
    return false;
  }
}

// validFromDate/validToDate need Node 22.10; the package runs on Node 20 too.
export const validFromMs = (cert: X509Certificate) => Date.parse(cert.validFrom);
export const validToMs = (cert: X509Certificate) => Date.parse(cert.validTo);
