/**
 * Partner text quoted in a message (a file name, a value, a manifest key) with nothing hidden in it: a
 * byte-order mark, a zero-width space, a control character or a right-to-left override would otherwise
 * make "x.csv" and "x.csv" look the same in a report.
 */
import { isUtf8 } from 'node:buffer';

/** Controls, format characters, separators other than the space, and what renders as nothing. */
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}]|(?! )\p{Zs}/gu;

/** Each invisible character as `<U+FEFF>`. */
export function visible(text: string): string {
  return text.replace(INVISIBLE, (c) => `<U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}>`);
}

/**
 * A file name as bytes, as a string: its UTF-8 characters, and each byte that is not part of one as
 * `%FF` (so the name can be shown, and a file moved to it, on every SFTP client). Undefined when the
 * name is valid UTF-8 throughout.
 */
export function escapeBytes(name: Buffer): string | undefined {
  if (isUtf8(name)) return undefined;
  let out = '';
  for (let i = 0; i < name.length; ) {
    // A UTF-8 character is 1 to 4 bytes, and no shorter prefix of it is valid on its own.
    const len = [1, 2, 3, 4].find((n) => i + n <= name.length && isUtf8(name.subarray(i, i + n)));
    if (len === undefined) out += `%${name[i++]!.toString(16).toUpperCase().padStart(2, '0')}`;
    else {
      out += name.subarray(i, i + len).toString('utf8');
      i += len;
    }
  }
  return out;
}
