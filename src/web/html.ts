/**
 * The operations page's HTML: functions from values to strings, every value escaped. Plain forms post
 * the actions (each with the session's CSRF token); htmx only refreshes the overview in place.
 */
import type { Listed } from '../store/types.js';
import { decimal, type Detail } from '../ops/deliveries.js';
import type { ReplayOutcome } from '../ops/replay.js';
import type { Status } from '../ops/status.js';

type Shown = string | number | bigint | boolean | null | undefined;

export const esc = (v: Shown): string => (v === null || v === undefined ? '' : String(v)).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const dash = (v: Shown) => (v === null || v === undefined || v === '' ? '–' : esc(v));
const at = (iso: string | null | undefined) => (iso ? `<time datetime="${esc(iso)}">${esc(iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z'))}</time>` : '–');
const outcome = (o: string, code?: string | null) => `<span class="o-${esc(o)}">${esc(o)}</span>${code ? ` <code>${esc(code)}</code>` : ''}`;
const link = (id: string) => `<a href="/deliveries/${encodeURIComponent(id)}">${esc(id)}</a>`;

function tableOf(head: string[], rows: string[][], empty: string): string {
  if (!rows.length) return `<p class="empty">${esc(empty)}</p>`;
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

const STYLE = `body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#cfe0ff;text-decoration:none}header .who{margin-left:auto}header form{display:inline}
main{padding:1em 1.2em;max-width:1400px}table{border-collapse:collapse;background:#fff;width:100%;margin:.5em 0 1.2em}
th,td{border:1px solid #dde1e7;padding:.3em .5em;text-align:left;vertical-align:top}th{background:#eef1f5}
.o-accepted{color:#176b2c;font-weight:600}.o-rejected{color:#b3261e;font-weight:600}.o-duplicate{color:#6b5a00}
.attention{background:#fff4e5;border:1px solid #f0b55c;padding:.5em .8em}.ok{background:#e8f5ec;border:1px solid #8cc79c;padding:.5em .8em}
.flash{background:#e8f0fe;border:1px solid #9ab6f0;padding:.5em .8em}.error{background:#fdecea;border:1px solid #e59a94;padding:.5em .8em}
dl{display:grid;grid-template-columns:12em 1fr;gap:.2em 1em;background:#fff;padding:.8em;border:1px solid #dde1e7}dt{font-weight:600}dd{margin:0}
form.inline{display:inline-block;margin-right:1em}button{padding:.3em .9em}code{font-size:12px}.empty{color:#667}`;

export function page(title: string, body: string, who?: { user: string; csrf: string }): string {
  const nav = who
    ? `<a href="/">Overview</a><a href="/deliveries">Deliveries</a><span class="who">${esc(who.user)} <form method="post" action="/logout"><input type="hidden" name="_csrf" value="${esc(who.csrf)}"><button>Log out</button></form></span>`
    : '';
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)} · inboxd</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>${STYLE}</style><script src="/static/htmx.min.js" defer></script></head>
<body><header><strong>inboxd</strong>${nav}</header><main><h1>${esc(title)}</h1>${body}</main></body></html>`;
}

export function loginPage(message?: string, next = '/'): string {
  return page('Log in', `${message ? `<p class="error" role="alert">${esc(message)}</p>` : ''}
<form method="post" action="/login"><input type="hidden" name="next" value="${esc(next)}">
<p><label>User <input name="user" autocomplete="username" required autofocus></label></p>
<p><label>Password <input name="password" type="password" autocomplete="current-password" required></label></p>
<p><button>Log in</button></p></form>`);
}

/** The overview's content, also what its refresh fetches (hx-select picks it out of the whole page). */
export function overview(s: Status): string {
  const flows = s.flows.map((f) => {
    const d = f.lastDelivery;
    return [
      esc(f.partner), esc(f.flow), d ? `${at(d.receivedAt)}<br>${link(d.id)}` : 'none yet', d ? `${outcome(d.outcome, d.code)}${d.late ? ' (late)' : ''}` : '–',
      dash(f.lastSeqApplied), f.held ? `${f.backlog} (waits for ${f.held.waitingFor} until ${at(f.held.until)})` : esc(f.backlog),
      f.lateWindows.length ? f.lateWindows.map((w) => `${at(w.opensAt)} – ${at(w.closesAt)}`).join('<br>') : '0', dash(f.circuit),
    ];
  });
  const errors = s.openErrors.map((e) => [link(e.id), esc(e.partner), dash(e.flow), dash(e.seq), esc(e.file), `<code>${esc(e.code)}</code>`, esc(e.reason), at(e.decidedAt)]);
  return `<div id="overview" hx-get="/" hx-trigger="every 15s" hx-select="#overview" hx-swap="outerHTML">
<p class="${s.attention ? 'attention' : 'ok'}">${s.attention ? 'Something needs attention.' : 'Nothing needs attention.'} As of ${at(s.generatedAt)}.</p>
${tableOf(['Partner', 'Flow', 'Last delivery', 'Outcome', 'Last sequence applied', 'Backlog', 'Open late windows', 'Circuit'], flows, 'No partners configured.')}
<h2>Rejected deliveries not yet dealt with (${s.openErrors.length})</h2>
${tableOf(['Delivery', 'Partner', 'Flow', 'Seq', 'File', 'Code', 'Reason', 'Decided'], errors, 'None.')}</div>`;
}

export interface ListView {
  rows: Listed[];
  filter: Record<string, string>;
  page: number;
  more: boolean;
  outcomes: readonly string[];
}

export function deliveriesPage(v: ListView): string {
  const f = v.filter;
  const input = (name: string, label: string, placeholder = '') => `<label>${label} <input name="${name}" value="${esc(f[name])}" placeholder="${esc(placeholder)}" size="14"></label>`;
  const select = `<label>Outcome <select name="outcome"><option value="">any</option>${v.outcomes.map((o) => `<option${f.outcome === o ? ' selected' : ''}>${esc(o)}</option>`).join('')}</select></label>`;
  const query = (page: number) => `?${new URLSearchParams({ ...f, page: String(page) }).toString()}`;
  const rows = v.rows.map((d) => [link(d.id), at(d.receivedAt), esc(d.partner), dash(d.flow), dash(d.seq), esc(d.file), `${outcome(d.outcome, d.code)}${d.late ? ' (late)' : ''}${d.replayOf ? ' (replay)' : ''}`, dash(d.records)]);
  const pager = [v.page > 1 ? `<a href="${esc(query(v.page - 1))}">← newer</a>` : '', `page ${v.page}`, v.more ? `<a href="${esc(query(v.page + 1))}">older →</a>` : ''].filter(Boolean).join(' · ');
  return `<form method="get" action="/deliveries">${input('partner', 'Partner')} ${input('flow', 'Flow')} ${select} ${input('since', 'Since', '24h or 2025-09-16')} ${input('until', 'Until')} <button>Filter</button></form>
${tableOf(['Delivery', 'Received', 'Partner', 'Flow', 'Seq', 'File', 'Outcome', 'Rows'], rows, 'No deliveries match.')}<p>${pager}</p>`;
}

type Report = { status?: string; code?: string; reason?: string; errors?: { line: number; column: string; reason: string }[]; error_count?: number; errors_truncated?: boolean };

export function detailPage(x: Detail, csrf: string, flash?: string, hasErrorsCsv = false): string {
  const d = x.delivery;
  const r = x.report as Report | null;
  const item = (k: string, v: string) => `<dt>${esc(k)}</dt><dd>${v}</dd>`;
  const facts = [
    item('Partner / flow', `${esc(d.partner)} / ${dash(d.flow)}`), item('File', `${esc(d.file)}${d.seq !== null ? ` (sequence ${esc(d.seq)})` : ''}`),
    item('Outcome', `${outcome(d.outcome, d.code)}${d.late ? ' (late)' : ''}`), ...(d.reason ? [item('Reason', esc(d.reason))] : []),
    item('Received', at(d.receivedAt)), item('Decided', at(d.decidedAt)), item('Answered', d.answeredAt ? at(d.answeredAt) : 'not yet'),
    item('SHA-256', d.sha256 ? `<code>${esc(d.sha256)}</code>` : 'not computed (rejected before the file was read)'),
    ...(d.replayOf ? [item('Replay of', link(d.replayOf))] : []),
    ...x.replays.map((p) => item('Replayed as', `${link(p.id)}: ${outcome(p.outcome, p.code)} at ${at(p.decidedAt)}`)),
    ...(x.resolution ? [item('Resolved', `${at(x.resolution.at)}${x.resolution.byDelivery ? ` by ${link(x.resolution.byDelivery)}` : ''}${x.resolution.note ? `: ${esc(x.resolution.note)}` : ''}`)] : []),
  ].join('');
  const actionable = d.outcome !== 'duplicate' && d.answeredAt;
  const open = d.outcome === 'rejected' && !d.replayOf && !x.resolution;
  const actions = `<h2>Actions</h2>
${actionable ? `<form class="inline" method="post" action="/deliveries/${encodeURIComponent(d.id)}/replay"><input type="hidden" name="_csrf" value="${esc(csrf)}"><button>Replay</button></form>` : ''}
${open ? `<form class="inline" method="post" action="/deliveries/${encodeURIComponent(d.id)}/resolve"><input type="hidden" name="_csrf" value="${esc(csrf)}"><label>Note <input name="note" required size="40"></label> <button>Mark resolved</button></form>` : ''}`;
  return `${flash ? `<p class="flash" role="status">${esc(flash)}</p>` : ''}<dl>${facts}</dl>${actionable || open ? actions : ''}
${totalsTable(x)}<h2>Timeline</h2>${tableOf(['At', 'Step', 'Detail'], x.timeline.map((e) => [at(e.at), esc(e.step), dash(e.detail)]), 'No events.')}
<h2>Files</h2>${tableOf(['Name', 'Where', 'Bytes', 'Present'], x.files.map((f) => [esc(f.name), `<code>${esc(f.path)}</code>`, dash(f.size), f.present ? 'yes' : 'no (removed or pruned)']), 'No files kept.')}
${r ? reportSection(r, d.id, hasErrorsCsv) : ''}`;
}

function totalsTable(x: Detail): string {
  if (!x.totals) return '';
  const t = x.totals;
  const columns = [...new Set([...Object.keys(t.expected?.sums ?? {}), ...Object.keys(t.found.sums)])];
  const found = (c: string) => {
    const v = t.found.sums[c];
    const scale = x.scales[c];
    return v === null || v === undefined ? 'unreadable' : scale === undefined ? esc(v) : esc(decimal(BigInt(v), scale));
  };
  return `<h2>Control totals</h2>${tableOf(['', 'Records', ...columns.map((c) => `Sum ${c}`)], [
    ['expected (manifest)', t.expected ? esc(t.expected.records) : 'no manifest', ...columns.map((c) => dash(t.expected?.sums[c]))],
    ['found', esc(t.found.records), ...columns.map(found)],
  ], '')}`;
}

function reportSection(r: Report, id: string, hasErrorsCsv: boolean): string {
  const errors = r.errors ?? [];
  const count = r.error_count ?? errors.length;
  return `<h2>Report the partner got (${esc(r.status)})</h2>${r.code ? `<p><code>${esc(r.code)}</code>: ${esc(r.reason)}</p>` : ''}
${errors.length ? `<h3>Row errors (${esc(count)}${count > errors.length ? `, ${errors.length} shown` : ''})</h3>${tableOf(['Line', 'Column', 'Reason'], errors.map((e) => [esc(e.line), esc(e.column), esc(e.reason)]), '')}` : ''}
${hasErrorsCsv ? `<p><a href="/deliveries/${encodeURIComponent(id)}/errors.csv" download>Download the error CSV the partner got</a></p>` : ''}`;
}

export function replayFlash(o: ReplayOutcome | undefined): string {
  if (!o) return 'Replay queued: the daemon carries it out at its next turn for this partner; reload to see it.';
  const r = o.record;
  if (!r) return `Replay ${o.result.status}: nothing was applied; try again.`;
  return `Replayed as ${r.id}: ${r.outcome}${r.code ? ` ${r.code}: ${r.reason ?? ''}` : ''}${o.resolved.length ? `; resolves ${o.resolved.join(', ')}` : ''}.`;
}
