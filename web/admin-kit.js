// admin-kit.js — small pieces the console's sections share: the two-click confirm
// button, a secret shown once, and number formats. Text only, no inline styles.

import { h, setText } from "/static/shared/dom.js";

const CONFIRM_FOR = 4000;

/** A button that asks for a second click within a few seconds before acting. */
export function confirmButton(label, confirmLabel, style, action, name = label.toLowerCase()) {
  let armed = null;
  const button = h("button", {
    type: "button",
    class: `btn small ${style}`,
    text: label,
    attrs: { "data-action": name },
    on: {
      click: async () => {
        if (!armed) {
          setText(button, confirmLabel);
          button.classList.add("confirming");
          armed = setTimeout(() => {
            armed = null;
            setText(button, label);
            button.classList.remove("confirming");
          }, CONFIRM_FOR);
          return;
        }
        clearTimeout(armed);
        armed = null;
        button.disabled = true;
        await action();
      },
    },
  });
  return button;
}

/** A plain button that runs `action` (disabled while it runs). */
export function actionButton(label, style, action, name = label.toLowerCase()) {
  const button = h("button", { type: "button", class: `btn small ${style}`, text: label, attrs: { "data-action": name } });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/**
 * Show a secret (a token, a one-time password) once in `box`: the words, the value
 * selectable, Copy, and Done (which clears it: the server will not show it again).
 */
export function showSecret(box, words, value) {
  const code = h("code", { class: "secret-value", text: value });
  const copy = h("button", { type: "button", class: "btn small", text: "Copy" });
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(value);
      setText(copy, "Copied");
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      setText(copy, "Selected: press Ctrl+C");
    }
  });
  const done = h("button", { type: "button", class: "btn small subtle", text: "Done" });
  done.addEventListener("click", () => {
    box.replaceChildren();
    box.hidden = true;
  });
  box.replaceChildren(
    h("p", { class: "secret-words", text: words }),
    h("div", { class: "secret-row" }, code, copy, done),
    h("p", { class: "hint", text: "It is shown this once: copy it now." }),
  );
  box.hidden = false;
}

/** 1234.5 -> "1,235"; small numbers keep a decimal ("0.4"). */
export function num(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString();
  return Number(value.toFixed(digits)).toLocaleString();
}
