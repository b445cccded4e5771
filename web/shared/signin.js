// signin.js — the one sign-in view of the chat (`/`) and the console (`/admin`).
//
// Renders the form into an empty element of the page and runs it: resuming the
// session kept for this tab (shared/client.js), signing in, creating an account
// where the page offers it, turning away users without the role the page needs,
// and coming back with the reason when the session ends. A page passes only what
// differs (texts, register or not, the role) and is told when someone is in or out.

import { ApiError, NetworkError } from "./client.js";
import { h, setText, showText } from "./dom.js";
import { authErrorWords, requestErrorWords, signedOutWords, wrongRoleWords } from "./errors.js";

const RESUME_MAX_WAIT = 15; // s between attempts to resume while the server is unreachable

function field(id, label, input, hint) {
  return h(
    "div",
    { class: "field" },
    h("label", { attrs: { for: id }, text: label }),
    input,
    hint,
  );
}

/**
 * options:
 *   session        the page's Session (client.js)
 *   root           the empty element to render into (shown and hidden as a whole)
 *   splash         the "Loading…" element, hidden once the form or the page shows
 *   brand          {name, tag?}: the brand line, e.g. {name: "Chat", tag: "admin"}
 *   heading, lead  the sign-in texts; docTitle: the tab title while the form shows
 *   register       null, or {lead, docTitle}: offer "Create an account"
 *   role           null, or the role a user must have ("admin"); others are told so
 *                  and stay out, and their session is left alone (a chat tab uses it)
 *   links          [{href, text}] under the form
 *   onEnter(user)  someone is in (signed in, registered or resumed)
 *   onLeave()      the session ended while in (before the form shows again)
 */
export class SignIn {
  constructor(options) {
    this.options = options;
    this.session = options.session;
    this.mode = "signin";
    this.inside = false;
    this.#render();
    this.session.on("signedout", ({ reason }) => this.#left(reason));
  }

  /** Resume the kept session, or show the form. Keeps trying while the server is down. */
  async start() {
    const { splash } = this.options;
    const loading = splash.textContent; // the page's own "Loading…" words
    for (let attempt = 0; ; attempt += 1) {
      try {
        const user = await this.session.resume();
        if (user) this.#arrive(user);
        else this.show();
        return;
      } catch (err) {
        const transient = err instanceof NetworkError || (err instanceof ApiError && (err.status >= 500 || err.status === 429));
        if (!transient || !this.session.signedIn) {
          this.show(requestErrorWords(err), "warn");
          return;
        }
        const wait = Math.min(RESUME_MAX_WAIT, 2 ** attempt);
        const why = err instanceof NetworkError ? "The server cannot be reached." : "The server is busy.";
        setText(splash, `${why} Trying again in ${wait} s…`);
        await new Promise((resolve) => setTimeout(resolve, wait * 1000));
        setText(splash, loading);
      }
    }
  }

  /** Show the form, with an optional notice ("info" or "warn"). */
  show(notice = "", tone = "info") {
    this.options.splash.hidden = true;
    this.options.root.hidden = false; // before #setMode, which sets the tab's title
    showText(this.el.notice, notice);
    if (tone === "warn") this.el.notice.dataset.tone = "warn";
    else delete this.el.notice.dataset.tone; // plain information
    this.#setMode(this.mode);
    this.el.password.value = "";
    this.el.submit.disabled = false;
    (this.el.username.value ? this.el.password : this.el.username).focus();
  }

  /** Sign out on the server and come back to the form ("You have signed out."). */
  async signOut() {
    await this.session.signOut();
    this.#left("signout"); // when there were no tokens left, no "signedout" event came
  }

  #arrive(user) {
    const { role } = this.options;
    if (role && user.role !== role) {
      this.el.username.value = "";
      this.show(wrongRoleWords(user, role), "warn");
      return;
    }
    this.inside = true;
    this.options.splash.hidden = true;
    this.options.root.hidden = true;
    showText(this.el.notice, "");
    this.options.onEnter(user);
  }

  #left(reason) {
    if (!this.inside) return;
    this.inside = false;
    this.options.onLeave();
    this.show(signedOutWords(reason), reason === "signout" ? "info" : "warn");
  }

  async #submit(event) {
    event.preventDefault();
    const { username: userInput, password: passInput, submit } = this.el;
    const username = userInput.value.trim();
    const password = passInput.value;
    if (!username || !password) {
      showText(this.el.error, "Enter a username and a password.");
      (username ? passInput : userInput).focus();
      return;
    }
    const register = this.mode === "register";
    submit.disabled = true;
    setText(submit, register ? "Creating account…" : "Signing in…");
    showText(this.el.error, "");
    try {
      if (register) await this.session.register(username, password);
      const user = await this.session.signIn(username, password);
      passInput.value = "";
      this.#arrive(user);
    } catch (err) {
      showText(this.el.error, authErrorWords(err, { register }));
      passInput.focus();
    } finally {
      submit.disabled = false;
      setText(submit, register ? "Create account" : "Sign in");
    }
  }

  #setMode(mode) {
    const { heading, lead, docTitle, register } = this.options;
    this.mode = register ? mode : "signin";
    const creating = this.mode === "register";
    setText(this.el.title, creating ? "Create an account" : heading);
    setText(this.el.lead, creating ? register.lead : lead);
    setText(this.el.submit, creating ? "Create account" : "Sign in");
    this.el.password.autocomplete = creating ? "new-password" : "current-password";
    this.el.userHint.hidden = !creating;
    this.el.passHint.hidden = !creating;
    showText(this.el.error, "");
    if (register) {
      setText(this.el.switchText, creating ? "Already have an account?" : "New here?");
      setText(this.el.switchButton, creating ? "Sign in instead" : "Create an account");
    }
    if (!this.options.root.hidden) document.title = creating ? register.docTitle : docTitle;
  }

  #render() {
    const { root, brand, register, links = [] } = this.options;
    const el = {
      title: h("h1", { id: "signin-title" }),
      lead: h("p", { id: "signin-lead", class: "muted" }),
      notice: h("p", { id: "signin-notice", class: "notice", hidden: true, attrs: { role: "status" } }),
      username: h("input", {
        id: "signin-username",
        name: "username",
        required: true,
        maxLength: 64,
        attrs: {
          autocomplete: "username",
          autocapitalize: "off",
          autocorrect: "off",
          spellcheck: "false",
          "aria-describedby": "signin-username-hint",
        },
      }),
      userHint: h("p", { id: "signin-username-hint", class: "hint", text: "3 to 32 letters, digits, “_”, “.” or “-”.", hidden: true }),
      password: h("input", {
        id: "signin-password",
        name: "password",
        type: "password",
        required: true,
        maxLength: 1024,
        attrs: { autocomplete: "current-password", "aria-describedby": "signin-password-hint" },
      }),
      passHint: h("p", { id: "signin-password-hint", class: "hint", text: "At least 8 characters.", hidden: true }),
      error: h("p", { id: "signin-error", class: "form-error", hidden: true, attrs: { role: "alert" } }),
      submit: h("button", { type: "submit", id: "signin-submit", class: "btn primary wide", text: "Sign in" }),
      switchText: h("span", { id: "signin-switch-text" }),
      switchButton: h("button", { type: "button", id: "signin-switch", class: "link" }),
    };
    this.el = el;
    const form = h(
      "form",
      { id: "signin-form", class: "stack", attrs: { novalidate: true }, on: { submit: (e) => this.#submit(e) } },
      field("signin-username", "Username", el.username, el.userHint),
      field("signin-password", "Password", el.password, el.passHint),
      el.error,
      el.submit,
    );
    el.switchButton.addEventListener("click", () => {
      this.#setMode(this.mode === "signin" ? "register" : "signin");
      el.username.focus();
    });
    const card = h(
      "section",
      { class: "signin-card", attrs: { "aria-labelledby": "signin-title" } },
      h(
        "div",
        { class: "brand brand-large" },
        h("span", { class: "logo", attrs: { "aria-hidden": "true" } }),
        brand.name,
        brand.tag ? h("span", { class: "brand-tag", text: brand.tag }) : null,
      ),
      h("div", { class: "signin-heading" }, el.title, el.lead),
      el.notice,
      form,
      register ? h("p", { class: "signin-switch" }, el.switchText, " ", el.switchButton) : null,
      links.length ? h("p", { class: "signin-links" }, links.map((link) => h("a", { href: link.href, text: link.text }))) : null,
    );
    root.classList.add("signin");
    root.replaceChildren(card);
    this.#setMode("signin");
  }
}
