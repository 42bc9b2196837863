/** Plain-text tables and times for the operations commands' terminal output. */

/** Left-aligned columns two spaces apart; cells are made single-line and cut at `max` characters. */
export function table(header: readonly string[], rows: readonly (readonly unknown[])[], max = 60): string {
  const cells = [header, ...rows].map((r) => r.map((c) => cell(c, max)));
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

function cell(value: unknown, max: number): string {
  const text = value === null || value === undefined || value === '' ? '-' : (typeof value === 'object' ? JSON.stringify(value) : `${value as string}`).replace(/\s+/g, ' ');
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** ISO-8601 UTC to the second: 2025-09-16T02:00:12Z. */
export function when(iso: string | null | undefined): string {
  return iso ? iso.replace(/\.\d+Z$/, 'Z') : '-';
}

/** "3 h ago", "2 d ago": how long since an ISO time, for people. */
export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172_800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86_400)} d ago`;
}
