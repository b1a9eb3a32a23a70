/**
 * The Veil sidebar. Every call goes to the Veil server extension (`/veil/...` on the
 * Jupyter server), which holds the user's Veil token: the browser never sees it.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

const ICON = new LabIcon({
  name: 'veil:shield',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16">' +
    '<path class="jp-icon3" fill="#616161" d="M12 2 4 5v6c0 5 3.4 9.7 8 11 ' +
    '4.6-1.3 8-6 8-11V5z"/></svg>'
});

type Json = { [key: string]: any };

async function api(path: string, init: RequestInit = {}): Promise<Json> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'veil', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  let data: Json = {};
  try {
    data = await response.json();
  } catch {
    data = { error: `HTTP ${response.status}` };
  }
  if (!response.ok) {
    throw new Error(data.error || `HTTP ${response.status}`);
  }
  return data;
}

function el(
  tag: string,
  attrs: { [key: string]: string } = {},
  ...children: (Node | string)[]
): HTMLElement {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child);
  }
  return node;
}

function fill(node: HTMLElement, ...children: (Node | string)[]): void {
  node.replaceChildren(...children);
}

function fmt(value: number | null | undefined): string {
  return value === null || value === undefined ? '—' : value.toPrecision(3);
}

class VeilSidebar extends Widget {
  private status = el('div', { 'data-veil': 'status' });
  private datasets = el('div', { 'data-veil': 'datasets' });
  private submission = el('div', { 'data-veil': 'submit' });
  private jobs = el('div', { 'data-veil': 'jobs' });
  private verdicts = new Map<string, HTMLElement>();
  private timer: number | undefined;
  private checked: Json | null = null;
  private jobStates = '';
  lastRefreshMs = 0;

  constructor(private tracker: INotebookTracker) {
    super();
    this.id = 'veil-sidebar';
    this.addClass('veil-sidebar');
    this.title.icon = ICON;
    this.title.caption = 'Veil';
    const refresh = el('button', { 'data-veil': 'refresh' }, 'Refresh');
    refresh.onclick = () => void this.refresh();
    this.node.append(
      el('h2', {}, 'Veil'),
      this.status,
      refresh,
      el('h2', {}, 'Datasets you may use'),
      this.datasets,
      el('h2', {}, 'Submit this notebook'),
      this.submission,
      el('h2', {}, 'Jobs'),
      this.jobs
    );
    this.renderSubmit();
    tracker.currentChanged.connect(() => {
      this.checked = null;
      this.renderSubmit();
    });
  }

  protected onAfterAttach(): void {
    void this.refresh();
    this.timer = window.setInterval(() => void this.refreshJobs(), 2000);
  }

  protected onBeforeDetach(): void {
    window.clearInterval(this.timer);
  }

  async refresh(): Promise<void> {
    const start = performance.now();
    try {
      const me = await api('status');
      fill(
        this.status,
        el('span', {}, `${me.user} (${me.role}, ${me.party}) at ${me.url}`)
      );
    } catch (err) {
      fill(this.status, el('span', { class: 'veil-error' }, String(err)));
    }
    await Promise.all([this.refreshDatasets(), this.refreshJobs()]);
    this.lastRefreshMs = performance.now() - start;
    this.node.dataset.refreshMs = this.lastRefreshMs.toFixed(1);
    this.status.append(
      el('div', { class: 'veil-muted' }, `refreshed in ${this.lastRefreshMs.toFixed(0)} ms`)
    );
  }

  private async refreshDatasets(): Promise<void> {
    try {
      const { datasets } = await api('datasets');
      if (!datasets.length) {
        fill(this.datasets, el('div', { class: 'veil-muted' }, 'none visible'));
        return;
      }
      fill(
        this.datasets,
        ...datasets.map((d: Json) => {
          const views = d.views
            .map((v: string) => `${v} (${d.view_rows[v] ?? '?'} rows)`)
            .join(', ');
          const columns = d.columns
            .map((c: Json) => `${c.name}: ${c.type}`)
            .join(', ');
          return el(
            'div',
            { class: 'veil-item', 'data-veil-dataset': d.name },
            el('b', {}, d.name),
            el('div', {}, `views: ${views}`),
            el(
              'div',
              {},
              `ε left: ${fmt(d.epsilon_left)} of ${fmt(d.epsilon_total)}`
            ),
            el('details', {}, el('summary', {}, 'schema'), el('code', {}, columns))
          );
        })
      );
    } catch (err) {
      fill(this.datasets, el('div', { class: 'veil-error' }, String(err)));
    }
  }

  private currentPath(): string | null {
    const panel = this.tracker.currentWidget;
    return panel ? panel.context.path : null;
  }

  private renderSubmit(): void {
    const path = this.currentPath();
    if (!path) {
      fill(this.submission, el('div', { class: 'veil-muted' }, 'open a notebook'));
      return;
    }
    const check = el('button', { 'data-veil': 'check' }, 'Check');
    check.onclick = () => void this.check(path);
    const body = el('div', { 'data-veil': 'check-result' });
    fill(this.submission, el('div', {}, el('code', {}, path)), check, body);
    if (this.checked && this.checked.path === path) {
      this.renderChecked(body, path, this.checked);
    }
  }

  private async check(path: string): Promise<void> {
    const panel = this.tracker.currentWidget;
    if (panel && panel.context.path === path && panel.context.model.dirty) {
      await panel.context.save(); // the digest is over what is on disk
    }
    try {
      const result = await api('inspect', {
        method: 'POST',
        body: JSON.stringify({ path })
      });
      this.checked = { ...result, path };
    } catch (err) {
      this.checked = { path, error: String(err) };
    }
    this.renderSubmit();
  }

  private renderChecked(body: HTMLElement, path: string, r: Json): void {
    if (r.error) {
      fill(body, el('div', { class: 'veil-error' }, r.error));
      return;
    }
    const pre = r.preflight;
    const preflight = el(
      'div',
      { 'data-veil': 'preflight' },
      el(
        'div',
        {},
        pre.ok
          ? `pre-flight on the views: ran in ${pre.run_s.toFixed(1)} s; nothing charged or released`
          : 'pre-flight on the views: the notebook failed'
      ),
      ...(pre.error
        ? [
            el(
              'div',
              { class: 'veil-error', 'data-veil': 'preflight-error' },
              [
                pre.error.error_type,
                pre.error.cell !== null ? `cell ${pre.error.cell}` : null,
                pre.error.line !== null ? `line ${pre.error.line}` : null,
                pre.error.message || pre.error.reason
              ]
                .filter(Boolean)
                .join(' · ')
            )
          ]
        : []),
      el(
        'ul',
        {},
        ...(pre.outputs || []).map((o: Json) =>
          el(
            'li',
            { 'data-veil': 'verdict-preview' },
            `${o.name}: ${o.verdict}` +
              (o.epsilon !== null ? ` (ε ${fmt(o.epsilon)})` : '') +
              (o.reason ? ` — ${o.reason}` : '')
          )
        ),
        ...(pre.budgets || []).map((b: Json) =>
          el(
            'li',
            { class: b.fits === false ? 'veil-error' : '' },
            `${b.dataset}: needs ε ${fmt(b.epsilon_needed)}, ${fmt(b.epsilon_left)} left`
          )
        )
      )
    );
    const send = el('button', { 'data-veil': 'send' }, 'Submit');
    send.onclick = async () => {
      send.setAttribute('disabled', 'true');
      try {
        const job = await api('submit', {
          method: 'POST',
          body: JSON.stringify({ path, digest: r.digest })
        });
        fill(body, el('div', { 'data-veil': 'submitted' }, `submitted job ${job.id}`));
        this.checked = null;
        await this.refreshJobs();
      } catch (err) {
        fill(body, el('div', { class: 'veil-error' }, String(err)));
      }
    };
    fill(
      body,
      el('div', {}, `inputs: ${r.inputs.join(', ')}`),
      el('div', {}, `declared outputs: ${r.outputs.join(', ') || '—'}`),
      el('div', {}, r.pinned
          ? 'queries pinned (from the last stage-1 run or veil.plans.json)'
          : 'no pinned queries: DP and aggregate outputs will wait for review'),
      el('div', {}, 'digest: ', el('code', { 'data-veil': 'digest' }, r.digest)),
      preflight,
      send
    );
  }

  async refreshJobs(): Promise<void> {
    try {
      const { jobs } = await api('jobs');
      const states = jobs.map((j: Json) => `${j.id}:${j.state}`).join(',');
      if (this.jobStates && states !== this.jobStates) {
        void this.refreshDatasets(); // a run may have spent budget
      }
      this.jobStates = states;
      if (!jobs.length) {
        fill(this.jobs, el('div', { class: 'veil-muted' }, 'no jobs yet'));
        return;
      }
      fill(this.jobs, ...jobs.map((j: Json) => this.renderJob(j)));
    } catch (err) {
      fill(this.jobs, el('div', { class: 'veil-error' }, String(err)));
    }
  }

  private renderJob(j: Json): HTMLElement {
    const lines: (Node | string)[] = [
      el('div', {}, el('code', {}, j.id), ' ', el('span', { class: 'veil-state' }, j.state))
    ];
    if (j.awaiting_approval.length) {
      lines.push(el('div', {}, `awaiting approval: ${j.awaiting_approval.join(', ')}`));
    }
    if (j.awaiting_review.length) {
      lines.push(el('div', {}, `awaiting review: ${j.awaiting_review.join(', ')}`));
    }
    if (j.reason) {
      lines.push(el('div', { class: 'veil-muted' }, j.reason));
    }
    if (j.outputs.length) {
      lines.push(
        el(
          'ul',
          {},
          ...j.outputs.map((o: Json) => el('li', {}, `${o.name} (${o.kind}): ${o.status}`))
        )
      );
    }
    if (j.outputs.some((o: Json) => o.status === 'released')) {
      const download = el('button', { 'data-veil': 'download' }, 'Download all');
      const verify = el('button', { 'data-veil': 'verify' }, 'Verify');
      const out = this.verdicts.get(j.id) ?? el('div', { 'data-veil': 'verdict' });
      this.verdicts.set(j.id, out);
      download.onclick = async () => {
        try {
          const r = await api(`jobs/${j.id}/download`, { method: 'POST' });
          fill(out, el('div', { 'data-veil': 'downloaded' }, `${r.files.length} files in ${r.folder}`));
        } catch (err) {
          fill(out, el('div', { class: 'veil-error' }, String(err)));
        }
      };
      verify.onclick = async () => {
        try {
          const r = await api(`jobs/${j.id}/verdict`);
          fill(
            out,
            el(
              'div',
              { class: r.ok ? 'veil-pass' : 'veil-fail', 'data-veil': 'verdict-line' },
              r.ok ? 'PASS: verified against the JWKS' : 'FAIL: not verified'
            ),
            el(
              'ul',
              {},
              ...r.checks.map((c: Json) =>
                el('li', {}, `${c.ok ? 'PASS' : 'FAIL'} ${c.name}: ${c.detail}`)
              )
            ),
            el(
              'div',
              { class: 'veil-muted' },
              `ear.status=${r.claims['ear.status']} hwmodel=${r.claims.hwmodel} ` +
                `backend=${r.claims.backend} hardware_backed=${r.claims.hardware_backed}`
            )
          );
        } catch (err) {
          fill(out, el('div', { class: 'veil-error' }, String(err)));
        }
      };
      lines.push(download, verify, out);
    }
    return el('div', { class: 'veil-item', 'data-veil-job': j.id }, ...lines);
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'veil-lab:sidebar',
  description: 'The Veil sidebar: datasets, submit, jobs, results and their verdict.',
  autoStart: true,
  requires: [ILabShell, INotebookTracker],
  activate: (app: JupyterFrontEnd, shell: ILabShell, tracker: INotebookTracker) => {
    const sidebar = new VeilSidebar(tracker);
    shell.add(sidebar, 'right', { rank: 50 });
  }
};

export default plugin;
