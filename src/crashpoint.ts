/**
 * Test hooks, and nothing else. With `INBOXD_TEST_CRASH_AT=<point>` set, the process kills itself with
 * SIGKILL on reaching that point, so tests can prove that the next run recovers from a crash at an
 * exact moment. With `INBOXD_TEST_THROW_AT=<point>`, it throws a TypeError there instead, as a bug in
 * our code would, so tests can prove that a bug is retried a bounded number of times. Points: mid-stream
 * (part of the file read, nothing committed), before-commit (every check passed), after-commit
 * (committed, partner not answered), after-ack (ACK or error report written, originals not moved),
 * mid-archive (the first original moved). Unset, as always outside tests, they do nothing.
 */
const crashAt = process.env.INBOXD_TEST_CRASH_AT;
const throwAt = process.env.INBOXD_TEST_THROW_AT;

export function crashPoint(name: 'mid-stream' | 'before-commit' | 'after-commit' | 'after-ack' | 'mid-archive'): void {
  if (name === crashAt) process.kill(process.pid, 'SIGKILL');
  if (name === throwAt) throw new TypeError(`Cannot read properties of undefined (reading '${name}') [INBOXD_TEST_THROW_AT]`);
}
