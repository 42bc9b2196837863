/**
 * Test hook, and nothing else: with `INBOXD_TEST_CRASH_AT=<point>` set, the process kills itself with
 * SIGKILL on reaching that point, so tests can prove that the next run recovers from a crash at an
 * exact moment. Points: mid-stream (part of the file read, nothing committed), after-commit (committed,
 * partner not answered), after-ack (ACK or error report written, originals not moved), mid-archive
 * (the first original moved). Unset, as always outside tests, it does nothing.
 */
const at = process.env.INBOXD_TEST_CRASH_AT;

export function crashPoint(name: 'mid-stream' | 'after-commit' | 'after-ack' | 'mid-archive'): void {
  if (name === at) process.kill(process.pid, 'SIGKILL');
}
