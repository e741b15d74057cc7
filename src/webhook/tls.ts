// Serving certificate with rotation. Kubernetes updates a mounted Secret by
// swapping a symlink (..data), which not every fs.watch backend reports, so
// the files are both watched and polled, and compared by content.

import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import { createSecureContext } from 'node:tls';
import { X509Certificate } from 'node:crypto';

export interface KeyPair {
  cert: Buffer;
  key: Buffer;
  /** Expiry of the leaf certificate, in ms since the epoch. */
  notAfterMs: number;
}

function loadKeyPair(certPath: string, keyPath: string): KeyPair {
  return checkedPair(readFileSync(certPath), readFileSync(keyPath));
}

/** Throws when the key does not match the certificate, or either is garbage. */
function checkedPair(cert: Buffer, key: Buffer): KeyPair {
  createSecureContext({ cert, key });
  const notAfterMs = Date.parse(new X509Certificate(cert).validTo);
  return { cert, key, notAfterMs };
}

export interface CertificateWatcherOptions {
  certPath: string;
  keyPath: string;
  pollMs: number;
  onChange(pair: KeyPair): void;
  onError(error: Error): void;
}

export class CertificateWatcher {
  #current: KeyPair;
  #options: CertificateWatcherOptions;
  #timer: NodeJS.Timeout | undefined;
  #watchers: FSWatcher[] = [];
  #debounce: NodeJS.Timeout | undefined;
  #lastError = '';

  constructor(options: CertificateWatcherOptions) {
    this.#options = options;
    this.#current = loadKeyPair(options.certPath, options.keyPath);
  }

  get current(): KeyPair {
    return this.#current;
  }

  start(): void {
    this.#timer = setInterval(() => this.check(), this.#options.pollMs);
    this.#timer.unref();
    for (const dir of new Set([dirname(this.#options.certPath), dirname(this.#options.keyPath)])) {
      try {
        const watcher = watch(dir, () => this.#scheduleCheck());
        watcher.on('error', () => watcher.close());
        watcher.unref();
        this.#watchers.push(watcher);
      } catch {
        // Polling still covers it.
      }
    }
  }

  #scheduleCheck(): void {
    clearTimeout(this.#debounce);
    // A Secret update writes several files; read once they have all landed.
    this.#debounce = setTimeout(() => this.check(), 100);
    this.#debounce.unref();
  }

  /**
   * Reloads when the files differ from what is being served. Unchanged files
   * are only read and compared: checking a pair parses the key, which takes
   * milliseconds of the event loop, every poll, from every admission in flight.
   */
  check(): boolean {
    let next: KeyPair;
    try {
      const cert = readFileSync(this.#options.certPath);
      const key = readFileSync(this.#options.keyPath);
      if (cert.equals(this.#current.cert) && key.equals(this.#current.key)) {
        this.#lastError = '';
        return false;
      }
      next = checkedPair(cert, key);
    } catch (error) {
      // Mid-swap, or a bad pair: keep serving the last good one, and say so once.
      const message = (error as Error).message;
      if (message !== this.#lastError) this.#options.onError(error as Error);
      this.#lastError = message;
      return false;
    }
    this.#lastError = '';
    this.#current = next;
    this.#options.onChange(next);
    return true;
  }

  stop(): void {
    clearInterval(this.#timer);
    clearTimeout(this.#debounce);
    for (const watcher of this.#watchers) watcher.close();
    this.#watchers = [];
  }
}
