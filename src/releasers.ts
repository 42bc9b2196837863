/**
 * What a start took (locks, the database, sockets, timers), given back in reverse order: graphile-worker's
 * releasers. Each acquisition pushes its releaser at once, so a start that fails halfway gives back
 * exactly what it had taken, and the process can exit with the error's code instead of being kept alive
 * by a timer or a socket. Every releaser is attempted even when one before it fails, and runs once.
 */
export class Releasers {
  private readonly held: Array<{ name: string; release: () => unknown }> = [];

  add(name: string, release: () => unknown): void {
    this.held.push({ name, release });
  }

  /** Newest first; `failed` hears of each releaser that threw (the others still run). */
  async releaseAll(failed: (name: string, err: unknown) => void): Promise<void> {
    for (let r = this.held.pop(); r; r = this.held.pop()) {
      try {
        await r.release();
      } catch (err) {
        failed(r.name, err);
      }
    }
  }
}
