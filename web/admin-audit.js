// admin-audit.js — the audit log: every admin action, newest first, filtered by actor,
// action (`user` for every `user.*`), target and time, paged with "Older"
// (`GET /api/admin/audit`). Details are shown as text.

import { clear, h, setText, timeElement } from "/static/shared/dom.js";
import { couldNot } from "/static/shared/errors.js";

export class Audit {
  constructor(session, els) {
    this.session = session;
    this.els = els; // form, actor, action, target, since, until, list, status, more
    this.nextBefore = null;
    els.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.load();
    });
    els.form.addEventListener("reset", () => setTimeout(() => this.load(), 0));
    els.more.addEventListener("click", () => this.load({ more: true }));
  }

  query() {
    const q = { limit: 50 };
    for (const key of ["actor", "action", "target"]) {
      const value = this.els[key].value.trim();
      if (value) q[key] = value;
    }
    for (const key of ["since", "until"]) {
      const value = this.els[key].value; // local time from <input type=datetime-local>
      if (value) q[key] = new Date(value).toISOString();
    }
    return q;
  }

  async load({ more = false } = {}) {
    const query = this.query();
    if (more && this.nextBefore) query.before = this.nextBefore;
    try {
      const page = await this.session.api("/api/admin/audit", { query });
      if (!more) clear(this.els.list);
      for (const entry of page.items) this.els.list.append(this.row(entry));
      this.nextBefore = page.next_before;
      this.els.more.hidden = !page.next_before;
      const shown = this.els.list.children.length;
      setText(this.els.status, shown ? `${shown} shown` : "No admin action matches.");
    } catch (err) {
      setText(this.els.status, couldNot("load the audit log", err));
    }
  }

  row(entry) {
    const detail = Object.entries(entry.detail ?? {})
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
      .join(" · ");
    return h(
      "tr",
      { class: "audit-row", data: { action: entry.action, id: entry.id } },
      h("td", {}, timeElement(entry.ts, "audit-time")),
      h("td", { class: "audit-actor", text: entry.actor.name }),
      h("td", {}, h("span", { class: "badge audit-action", text: entry.action })),
      h("td", { class: "audit-target", text: entry.target === null ? "" : `${entry.target_kind ?? ""} ${entry.target}`.trim() }),
      h("td", { class: "audit-detail small-print", text: detail }),
      h("td", { class: "audit-address muted small-print", text: entry.address ?? "" }),
    );
  }
}
