// admin-bots.js — bots: list, create (the token shown once), rotate, revoke.
//
// `GET /api/bots`, `POST /api/bots`, `POST /api/bots/{id}/rotate`, `DELETE /api/bots/{id}`.
// A token is shown once, in the secret box, and never kept by the page.

import { clear, h, setText } from "/static/shared/dom.js";
import { couldNot } from "/static/shared/errors.js";
import { confirmButton, showSecret } from "/static/admin-kit.js";

export class Bots {
  constructor(session, els, { onChange }) {
    this.session = session;
    this.els = els; // form, name, list, status, secret
    this.onChange = onChange;
    els.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.create();
    });
  }

  async load() {
    try {
      const body = await this.session.api("/api/bots");
      clear(this.els.list);
      for (const bot of body.items) this.els.list.append(this.row(bot));
      if (!body.items.length) this.els.list.append(h("li", { class: "empty", text: "No bots yet." }));
    } catch (err) {
      setText(this.els.status, couldNot("load the bots", err));
    }
  }

  row(bot) {
    return h(
      "li",
      { class: "bot", data: { bot: bot.name, state: bot.state } },
      h("span", { class: "badge", data: { tone: bot.state === "active" ? "ok" : "danger" }, text: bot.state }),
      h("span", { class: "bot-name", text: bot.name }),
      h("span", { class: "muted small-print", text: bot.last_issued_at ? `token issued ${new Date(bot.last_issued_at).toLocaleString()}` : "no token issued" }),
      h(
        "span",
        { class: "bot-actions" },
        confirmButton("Rotate", "Rotate?", "", () => this.rotate(bot), "rotate"),
        bot.state === "active" ? confirmButton("Revoke", "Revoke?", "danger-outline", () => this.revoke(bot), "revoke") : null,
      ),
    );
  }

  async create() {
    const name = this.els.name.value.trim();
    if (!name) return;
    try {
      const bot = await this.session.api("/api/bots", { method: "POST", json: { name } });
      showSecret(this.els.secret, `The token of ${bot.name}:`, bot.token);
      setText(this.els.status, `${bot.name} was created.`);
      this.els.name.value = "";
    } catch (err) {
      setText(this.els.status, couldNot(`create ${name}`, err, { 409: `There is already an account called “${name}”.` }));
    }
    await this.load();
    this.onChange();
  }

  async rotate(bot) {
    try {
      const answer = await this.session.api(`/api/bots/${bot.id}/rotate`, { method: "POST" });
      showSecret(this.els.secret, `The new token of ${answer.name} (the old one no longer works):`, answer.token);
      setText(this.els.status, `${bot.name}'s token was rotated.`);
    } catch (err) {
      setText(this.els.status, couldNot(`rotate ${bot.name}'s token`, err));
    }
    await this.load();
    this.onChange();
  }

  async revoke(bot) {
    try {
      await this.session.api(`/api/bots/${bot.id}`, { method: "DELETE" });
      setText(this.els.status, `${bot.name}'s tokens were revoked.`);
    } catch (err) {
      setText(this.els.status, couldNot(`revoke ${bot.name}`, err));
    }
    await this.load();
    this.onChange();
  }
}
