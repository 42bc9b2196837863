/**
 * NDJSON's fast path: the values at the mapping's paths, read straight from a line's text while its
 * JSON grammar is checked, without building the object. `JSON.parse` builds every object of every line
 * (at ~100 MB/s, most of an NDJSON staging thread's time) only for a few of its values to be read.
 *
 * It answers only the plain case, and says `undefined` for everything else: text that is not JSON, an
 * escape in a key on a path, a key on a path written twice, an object or an inexact number at a path,
 * nesting deeper than MAX_DEPTH. The caller then reads the line with `JSON.parse`, which gives the same
 * values or the error. So what it accepts must be JSON, and what it reads must be what `JSON.parse`
 * reads: test/formats.test.ts compares the two on generated and mutated lines.
 */

/** A mapping path's step: the fields that end here, the keys that go on. */
interface Step {
  /** the key that leads here, and its UTF-8 */
  name: string;
  key: Buffer;
  fields: number[];
  next: Step[] | undefined;
  /** every `next` key is an array position as JSON.parse's arrays have them ("0", "1", not "01") */
  positionsOnly: boolean;
  /** the line that last set this step: a key written twice means JSON.parse's last-one-wins */
  line: number;
}

const MAX_DEPTH = 64;
/** thrown to leave a line to JSON.parse: made once, so a throw costs no stack trace */
const BAIL = new Error('not the plain case');
const bail = (): never => {
  throw BAIL;
};

const TAB = 9, LF = 10, CR = 13, SPACE = 32, QUOTE = 34, PLUS = 43, COMMA = 44, MINUS = 45, DOT = 46;
const ZERO = 48, NINE = 57, COLON = 58, UPPER_E = 69, OPEN_ARRAY = 91, BACKSLASH = 92, CLOSE_ARRAY = 93;
const LOWER_E = 101, OPEN_OBJECT = 123, CLOSE_OBJECT = 125;
const isDigit = (c: number) => c >= ZERO && c <= NINE;

export class JsonPaths {
  private readonly root: Step = step();
  private b: Buffer = Buffer.alloc(0);
  /** the line's text, ASCII: the character at byte i is text[i - start] */
  private lineText = '';
  private start = 0;
  private end = 0;
  private i = 0;
  private out: string[] = [];
  private line = 0;

  /**
   * @param paths each field's path, in mapping order
   * @param numberText a number's text as the map step gets it, or undefined where only JSON.parse can say
   */
  constructor(private readonly paths: readonly (readonly string[])[], private readonly numberText: (raw: string) => string | undefined) {
    paths.forEach((path, field) => {
      let at = this.root;
      for (const key of path) {
        at.next ??= [];
        let next = at.next.find((s) => s.name === key);
        if (!next) at.next.push((next = step(key)));
        at.positionsOnly &&= /^(?:0|[1-9]\d*)$/.test(key);
        at = next;
      }
      at.fields.push(field);
    });
  }

  /**
   * The values of a line in mapping order ('' where a path leads nowhere or to null), or undefined:
   * ask JSON.parse. The line is `text`, all ASCII, and its bytes are bytes[start, start + text.length):
   * the grammar is checked on bytes (several times faster than on a string's characters), values are cut from the text.
   */
  read(bytes: Buffer, start: number, text: string): string[] | undefined {
    this.b = bytes;
    this.lineText = text;
    this.start = this.i = start;
    const end = (this.end = start + text.length);
    this.out = new Array<string>(this.paths.length).fill('');
    this.line++;
    try {
      this.space();
      if (this.b[this.i] !== OPEN_OBJECT) return undefined;
      this.value(this.root, 0);
      this.space();
      return this.i === end ? this.out : undefined;
    } catch (err) {
      if (err === BAIL) return undefined;
      throw err;
    }
  }

  /** The value at this.i; `at` is its step on a path, if it is on one. */
  private value(at: Step | undefined, depth: number): void {
    const c = this.at(this.i);
    if (c === QUOTE) {
      const start = this.i;
      const escaped = this.string();
      if (at?.fields.length) this.set(at, escaped ? unescape(this.text(start, this.i)) : this.text(start + 1, this.i - 1));
      else if (escaped) unescape(this.text(start, this.i)); // checked all the same
    } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      if (at?.fields.length || depth >= MAX_DEPTH) bail(); // a value as JSON text, or deep: JSON.parse's job
      if (c === OPEN_OBJECT) this.object(at?.next, depth + 1);
      else if (at?.next && !at.positionsOnly) bail(); // `length` and the like: JSON.parse's job
      else this.array(at?.next, depth + 1);
    } else if (c === MINUS || isDigit(c)) {
      const start = this.i;
      const plain = this.number();
      if (at?.fields.length) {
        const raw = this.text(start, this.i);
        this.set(at, plain ? raw : (this.numberText(raw) ?? bail()));
      }
    } else {
      const word = c === 0x74 ? 'true' : c === 0x66 ? 'false' : c === 0x6e ? 'null' : bail();
      for (let k = 1; k < word.length; k++) if (this.at(this.i + k) !== word.charCodeAt(k)) bail();
      this.i += word.length;
      if (at?.fields.length) this.set(at, word === 'null' ? '' : word);
    }
  }

  private set(at: Step, text: string): void {
    for (const f of at.fields) this.out[f] = text;
  }

  private object(next: readonly Step[] | undefined, depth: number): void {
    this.i++;
    this.space();
    if (this.at(this.i) === CLOSE_OBJECT) return void this.i++;
    for (;;) {
      if (this.at(this.i) !== QUOTE) bail();
      const start = this.i;
      const escaped = this.string();
      let at: Step | undefined;
      if (escaped) {
        unescape(this.text(start, this.i));
        if (next) bail(); // a key written with escapes might still be one of ours
      } else if (next) {
        at = this.find(next, start + 1, this.i - 1);
        if (at) {
          if (at.line === this.line) bail();
          at.line = this.line;
        }
      }
      this.space();
      if (this.at(this.i) !== COLON) bail();
      this.i++;
      this.space();
      this.value(at, depth);
      if (this.after(CLOSE_OBJECT)) return;
    }
  }

  /** The step whose key is bytes[start, end), compared byte for byte: no string made, none hashed. */
  private find(next: readonly Step[], start: number, end: number): Step | undefined {
    const len = end - start;
    for (let n = 0; n < next.length; n++) {
      const step = next[n]!;
      const key = step.key;
      if (key.length !== len) continue;
      let k = 0;
      while (k < len && key[k] === this.b[start + k]) k++;
      if (k === len) return step;
    }
    return undefined;
  }

  private array(next: readonly Step[] | undefined, depth: number): void {
    this.i++;
    this.space();
    if (this.at(this.i) === CLOSE_ARRAY) return void this.i++;
    for (let position = 0; ; position++) {
      this.value(next?.find((s) => s.name === String(position)), depth);
      if (this.after(CLOSE_ARRAY)) return;
    }
  }

  /** After a member: true at the closing bracket, false after a comma (and the space before the next). */
  private after(close: number): boolean {
    this.space();
    const c = this.at(this.i++);
    if (c === close) return true;
    if (c !== COMMA) bail();
    this.space();
    return false;
  }

  /** Past a string from its opening quote; true if it has escapes (unchecked: see unescape). */
  private string(): boolean {
    let escaped = false;
    for (let i = this.i + 1; ; i++) {
      const c = this.at(i);
      if (c === QUOTE) {
        this.i = i + 1;
        return escaped;
      }
      if (c === BACKSLASH) {
        escaped = true;
        i++;
      } else if (!(c >= SPACE)) bail(); // a control character, or the end of the line
    }
  }

  /**
   * Past a number. True if it is written as String(Number(text)) would write it, so its text is what
   * the map step gets: no exponent, no "-0", no trailing zero after the point, 15 significant digits
   * or fewer (a double tells all of those apart, so no shorter text reads as the same number) and, below
   * one, fewer than six zeros after the point (from 1e-7 down, String writes an exponent).
   */
  private number(): boolean {
    let i = this.i;
    const negative = this.at(i) === MINUS;
    if (negative) i++;
    const whole = i;
    if (this.at(i) === ZERO) i++;
    else i = this.digits(i);
    const belowOne = i - whole === 1 && this.at(whole) === ZERO;
    let significant = belowOne ? 0 : i - whole;
    let plain = !(negative && belowOne);
    if (this.at(i) === DOT) {
      const fraction = i + 1;
      i = this.digits(fraction);
      let zeros = 0;
      if (belowOne) while (this.at(fraction + zeros) === ZERO) zeros++;
      significant += i - fraction - zeros;
      plain = this.at(i - 1) !== ZERO && zeros < 6;
    }
    const e = this.at(i);
    if (e === LOWER_E || e === UPPER_E) {
      const sign = this.at(i + 1);
      i = this.digits(sign === PLUS || sign === MINUS ? i + 2 : i + 1);
      plain = false;
    }
    this.i = i;
    return plain && significant <= 15;
  }

  /** Past one digit or more from i. */
  private digits(i: number): number {
    if (!isDigit(this.at(i))) bail();
    while (isDigit(this.at(i))) i++;
    return i;
  }

  /** Past white space, up to the end of the line (a line end is white space to JSON). */
  private space(): void {
    if (this.at(this.i) > SPACE) return; // the common case: compact JSON
    for (let c = this.at(this.i); this.i < this.end && (c === SPACE || c === TAB || c === LF || c === CR); c = this.at(++this.i));
  }

  /** The byte at i; -1 past the chunk. */
  private at(i: number): number {
    return this.b[i] ?? -1;
  }

  private text(start: number, end: number): string {
    return this.lineText.slice(start - this.start, end - this.start);
  }
}

function step(key = ''): Step {
  return { name: key, key: Buffer.from(key), fields: [], next: undefined, positionsOnly: true, line: 0 };
}

/** A string token with escapes, checked and unescaped by JSON.parse itself. */
function unescape(token: string): string {
  try {
    return JSON.parse(token) as string;
  } catch {
    return bail();
  }
}
