// The serve process's log: pino's JSON lines on standard output, written in
// batches. pino's own asynchronous writer starts a write (a system call in
// libuv's thread pool, and a callback back) as soon as the last one is done,
// which under load is about once per turn of the event loop; gathering the
// lines of a few milliseconds into one write makes that once per batch. No
// line waits longer than BATCH_MS, and on exit (the graceful stop ends in
// process.exit) whatever is still pending is written synchronously, so every
// admission answered has been logged.

import pino, { type DestinationStream, type Logger } from 'pino';

const BATCH_MS = 10;
const BATCH_BYTES = 16 * 1024;
/** UTF-8 takes at most 3 bytes per UTF-16 code unit. */
const MAX_UTF8_PER_UNIT = 3;

/** pino's writer (sonic-boom) in buffer mode: it takes bytes, which its types do not say. */
interface ByteWriter {
  write(bytes: Buffer): boolean;
  flushSync(): void;
}

function byteWriter(fd: number, sync: boolean): ByteWriter {
  return pino.destination({ dest: fd, sync, contentMode: 'buffer' }) as unknown as ByteWriter;
}

export class BatchedDestination implements DestinationStream {
  // Each line is encoded as it arrives, while pino's freshly built string is
  // still in the cache: kept as strings until the write, the lines' many
  // small pieces had to be gathered from all over the heap.
  #batch = Buffer.allocUnsafe(BATCH_BYTES);
  #used = 0;
  #timer: NodeJS.Timeout | undefined;
  readonly #writer: ByteWriter;
  readonly #fd: number;

  constructor(fd: number) {
    this.#fd = fd;
    this.#writer = byteWriter(fd, false);
    process.on('exit', () => this.flushSync());
  }

  write(line: string): void {
    const room = line.length * MAX_UTF8_PER_UNIT;
    if (this.#used + room > BATCH_BYTES) {
      this.flush();
      if (room > BATCH_BYTES) {
        this.#writer.write(Buffer.from(line));
        return;
      }
    }
    this.#used += this.#batch.write(line, this.#used);
    if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.flush(), BATCH_MS);
      // A pending batch must not keep a stopping process alive: exit writes it.
      this.#timer.unref();
    }
  }

  /** Hands the pending lines to the asynchronous writer. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#used > 0) this.#writer.write(this.#take());
  }

  /** Writes what the writer holds, then the pending lines, before returning. */
  flushSync(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#writer.flushSync();
    // Not through the asynchronous writer: a write started now may never run.
    if (this.#used > 0) byteWriter(this.#fd, true).write(this.#take());
  }

  /** The pending bytes; the writer keeps them until written, so a new batch starts. */
  #take(): Buffer {
    const bytes = this.#batch.subarray(0, this.#used);
    this.#batch = Buffer.allocUnsafe(BATCH_BYTES);
    this.#used = 0;
    return bytes;
  }
}

export function createLogger(level: string): Logger {
  return pino({ level, base: { name: 'prestop-injector' } }, new BatchedDestination(1));
}
