// What the webhook's run-time certificates should be, decided from what the
// Secret holds and the clock: no I/O, so every rule is unit-tested.
//
// The Secret holds four PEM texts:
//   ca.crt  the CAs clients trust: the signing CA first, then older CAs
//           still valid (a rotated CA stays trusted until it expires, so a
//           serving certificate it signed never becomes untrusted)
//   ca.key  the signing CA's key
//   tls.crt the serving certificate, tls.key its key

import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import {
  certificatesOf,
  issueCertificateAuthority,
  issueServingCertificate,
  keyMatches,
  validFromMs,
  validToMs,
  type PemPair,
  type Validity,
} from './x509.ts';

export interface StoredCertificates {
  caCert: string;
  caKey: string;
  tlsCert: string;
  tlsKey: string;
}

export const EMPTY_CERTIFICATES: StoredCertificates = {
  caCert: '',
  caKey: '',
  tlsCert: '',
  tlsKey: '',
};

/** Secret data keys of each stored text. */
export const SECRET_KEYS: Readonly<Record<keyof StoredCertificates, string>> = {
  caCert: 'ca.crt',
  caKey: 'ca.key',
  tlsCert: 'tls.crt',
  tlsKey: 'tls.key',
};

export interface CertificatePolicy {
  /** DNS names and IP addresses the serving certificate must cover. */
  names: readonly string[];
  certValidityMs: number;
  /** The serving certificate is replaced this long before it expires. */
  certRenewBeforeMs: number;
  caValidityMs: number;
}

/** notBefore is set this far back: clocks of the API servers and nodes differ a little. */
export const CLOCK_SKEW_MS = 60_000;

/** A CA is replaced once less than this part of its validity is left. */
const CA_RENEW_FRACTION = 1 / 3;

export interface ServablePair {
  certPem: string;
  keyPem: string;
  notAfterMs: number;
}

/** The serving pair to use now, if the stored one is whole and not expired. */
export function servablePair(stored: StoredCertificates, nowMs: number): ServablePair | null {
  const leaf = certificatesOf(stored.tlsCert)[0];
  if (leaf === undefined || !keyMatches(leaf, stored.tlsKey)) return null;
  if (nowMs >= validToMs(leaf) || nowMs < validFromMs(leaf) - CLOCK_SKEW_MS) return null;
  return { certPem: stored.tlsCert, keyPem: stored.tlsKey, notAfterMs: validToMs(leaf) };
}

/** True when one of the CAs in `bundlePem` signed the certificate. */
export function bundleTrusts(bundlePem: string, certPem: string): boolean {
  const leaf = certificatesOf(certPem)[0];
  if (leaf === undefined) return false;
  return certificatesOf(bundlePem).some((ca) => ca.ca && leaf.verify(ca.publicKey));
}

function covers(cert: X509Certificate, names: readonly string[]): boolean {
  return names.every((name) =>
    isIP(name) ? cert.checkIP(name) !== undefined : cert.checkHost(name) !== undefined,
  );
}

const isoDate = (ms: number) => new Date(ms).toISOString();

export interface Issuers {
  ca(commonName: string, validity: Validity): PemPair;
  serving(ca: PemPair, names: readonly string[], validity: Validity): PemPair;
}

const REAL_ISSUERS: Issuers = {
  ca: issueCertificateAuthority,
  serving: issueServingCertificate,
};

export interface NextCertificates {
  data: StoredCertificates;
  /** Why it changed, one sentence each, for the log. */
  reasons: string[];
}

/**
 * What the writer stores next, or null when the stored certificates stay:
 *
 * - a CA is made when there is none usable (missing, expired, or its key is
 *   not the certificate's), or when less than a third of its validity is
 *   left; the replaced CA stays in ca.crt until it expires;
 * - expired CAs leave ca.crt;
 * - the serving certificate is issued when it is missing, its key does not
 *   match, it does not cover the names, no trusted CA signed it, or its
 *   renewal time has come. A CA made in this same pass signs it only if the
 *   current one cannot be served at all: otherwise the new CA first reaches
 *   the webhook configuration, and signs at the next pass.
 */
export function nextCertificates(
  stored: StoredCertificates,
  policy: CertificatePolicy,
  nowMs: number,
  issuers: Issuers = REAL_ISSUERS,
): NextCertificates | null {
  const reasons: string[] = [];
  const unexpired = certificatesOf(stored.caCert).filter((c) => c.ca && nowMs < validToMs(c));
  let signing = unexpired.find((c) => keyMatches(c, stored.caKey));
  let caKey = stored.caKey;
  let madeCa = false;
  if (
    signing === undefined ||
    nowMs >= validToMs(signing) - policy.caValidityMs * CA_RENEW_FRACTION
  ) {
    reasons.push(
      signing === undefined
        ? stored.caCert === ''
          ? 'no CA yet: made one'
          : 'the stored CA is expired or does not match its key: made a new one'
        : `the CA expires at ${isoDate(validToMs(signing))}: made a new one; the old one stays trusted until then`,
    );
    const ca = issuers.ca(`prestop-injector-ca@${Math.floor(nowMs / 1000)}`, {
      notBeforeMs: nowMs - CLOCK_SKEW_MS,
      notAfterMs: nowMs + policy.caValidityMs,
    });
    signing = new X509Certificate(ca.certPem);
    caKey = ca.keyPem;
    madeCa = true;
  }
  const current = signing;
  const trusted = [
    current,
    ...unexpired.filter((c) => c.fingerprint256 !== current.fingerprint256),
  ];
  const caCert = trusted.map((c) => c.toString()).join('');
  const dropped = certificatesOf(stored.caCert).filter(
    (c) => !trusted.some((t) => t.fingerprint256 === c.fingerprint256),
  ).length;
  if (dropped > 0) reasons.push(`dropped ${dropped} expired or unusable CA certificate(s)`);

  let { tlsCert, tlsKey } = stored;
  const leafProblem = servingProblem(stored, trusted, policy, nowMs);
  if (leafProblem !== null) {
    const servableNow =
      servablePair(stored, nowMs) !== null && bundleTrusts(caCert, stored.tlsCert);
    if (madeCa && servableNow) {
      reasons.push(
        `the serving certificate ${leafProblem}: renewed at the next pass, by the new CA`,
      );
    } else {
      const notAfterMs = Math.min(nowMs + policy.certValidityMs, validToMs(current));
      const leaf = issuers.serving({ certPem: current.toString(), keyPem: caKey }, policy.names, {
        notBeforeMs: nowMs - CLOCK_SKEW_MS,
        notAfterMs,
      });
      tlsCert = leaf.certPem;
      tlsKey = leaf.keyPem;
      reasons.push(
        `the serving certificate ${leafProblem}: issued one valid until ${isoDate(notAfterMs)}`,
      );
    }
  }
  const data: StoredCertificates = { caCert, caKey, tlsCert, tlsKey };
  const unchanged = (Object.keys(data) as (keyof StoredCertificates)[]).every(
    (key) => data[key] === stored[key],
  );
  return unchanged ? null : { data, reasons };
}

/** Why the stored serving certificate must be replaced, or null when it may stay. */
function servingProblem(
  stored: StoredCertificates,
  trusted: readonly X509Certificate[],
  policy: CertificatePolicy,
  nowMs: number,
): string | null {
  const leaf = certificatesOf(stored.tlsCert)[0];
  if (leaf === undefined) return 'is missing';
  if (!keyMatches(leaf, stored.tlsKey)) return 'does not match its key';
  if (!covers(leaf, policy.names)) return `does not cover ${policy.names.join(', ')}`;
  if (!trusted.some((ca) => leaf.verify(ca.publicKey))) return 'is not signed by a trusted CA';
  if (nowMs < validFromMs(leaf) - CLOCK_SKEW_MS) return 'is not valid yet';
  if (nowMs >= validToMs(leaf) - policy.certRenewBeforeMs)
    return `expires at ${isoDate(validToMs(leaf))}`;
  return null;
}

// ------------------------------------------------------------------ lease

/** The fields of a coordination.k8s.io Lease that the writer election reads. */
export interface LeaseRecord {
  holder: string;
  /** The Lease's renewTime as written (compared as text: it is the record's version). */
  renewTime: string;
  durationMs: number;
}

/** When this process first saw the lease record as it is now (its own clock). */
export interface LeaseObservation {
  key: string;
  sinceMs: number;
}

export const leaseKey = (record: LeaseRecord) => `${record.holder}\u0000${record.renewTime}`;

/**
 * renew: this process holds it. acquire: it is free, or its holder has not
 * renewed it for a whole lease duration as this process observed it (its
 * own clock only, as client-go does: the clocks of two nodes are never
 * compared). follow: another process holds it.
 */
export function leaseAction(
  record: LeaseRecord,
  identity: string,
  observation: LeaseObservation | undefined,
  nowMs: number,
): 'renew' | 'acquire' | 'follow' {
  if (record.holder === identity) return 'renew';
  if (record.holder === '') return 'acquire';
  const sinceMs = observation?.key === leaseKey(record) ? observation.sinceMs : nowMs;
  return nowMs - sinceMs >= record.durationMs ? 'acquire' : 'follow';
}

/** A Lease MicroTime: RFC 3339 with microseconds, as the API server parses it. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}
