// errors.js — every failure a person can meet, worded once for the chat and the console.
//
// HTTP failures (ApiError / NetworkError from client.js), WebSocket close codes and
// `error` frames all become one short, specific sentence here. Pages pass what only
// they know (the room's name, a sentence for one status of one action) and never
// word a generic failure themselves, so the same failure reads the same everywhere.

import { ApiError, CloseCode, NetworkError } from "./client.js";

/** "1 second", "12 seconds", "3 minutes": a wait the server asked for, rounded up. */
export function waitWords(seconds) {
  const s = Math.max(1, Math.ceil(Number(seconds) || 1));
  if (s < 90) return s === 1 ? "1 second" : `${s} seconds`;
  return `${Math.ceil(s / 60)} minutes`;
}

/**
 * The server's terse `detail` ("no such user") as a sentence ("No such user."). A detail
 * that starts with a field's path ("params.steps: Input should be …") keeps its case.
 */
export function sentence(text) {
  const words = String(text ?? "").trim();
  if (!words) return "";
  const first = /^[\w.]+:/.test(words) ? words : words[0].toUpperCase() + words.slice(1);
  return /[.!?…]$/.test(first) ? first : `${first}.`;
}

const UNREACHABLE = "The server cannot be reached. Check your connection and try again.";
const SERVER_FAULT = "The server had a problem. Please try again in a moment.";
const UNEXPECTED = "Something went wrong. Please try again.";

/**
 * A failed HTTP call in plain words.
 *
 * `specific` maps a status (or "network") to the sentence this action wants instead,
 * e.g. `{404: "There is no user called “bob”."}`; a function value gets the error.
 */
export function requestErrorWords(err, specific = {}) {
  const pick = (key) => {
    const value = specific[key];
    return typeof value === "function" ? value(err) : value;
  };
  if (err instanceof NetworkError) return pick("network") ?? UNREACHABLE;
  if (!(err instanceof ApiError)) return UNEXPECTED;
  const own = pick(err.status);
  if (own) return own;
  const { status, retryAfter } = err;
  if (status === 401) return "Your session has ended. Please sign in again.";
  if (status === 403) return err.detail ? `You are not allowed to do that (${err.detail}).` : "You are not allowed to do that.";
  if (status === 429) return `You are doing that too often. Try again in ${waitWords(retryAfter ?? 30)}.`;
  if (status === 503 && retryAfter) return `The server is busy. Try again in ${waitWords(retryAfter)}.`;
  if (status >= 500) return SERVER_FAULT;
  return sentence(err.detail) || UNEXPECTED;
}

/** "Could not load tasks. The server cannot be reached. …": an action that failed, and why. */
export function couldNot(action, err, specific = {}) {
  return `Could not ${action}. ${requestErrorWords(err, specific)}`;
}

/** Why signing in (or creating an account) did not work. */
export function authErrorWords(err, { register = false } = {}) {
  return requestErrorWords(err, {
    400: register ? undefined : "Wrong username or password.",
    401: "Wrong username or password.",
    403: register ? "Registration is turned off here. Ask an administrator for an account." : undefined,
    409: register ? "That username is taken. Pick another one." : undefined,
    429: (e) => `Too many attempts. Try again in ${waitWords(e.retryAfter ?? 30)}.`,
    503: (e) => `Too many people are signing in right now. Try again in ${waitWords(e.retryAfter ?? 1)}.`,
  });
}

/** Why the session ended, for the sign-in view that comes back ("signedout" reasons). */
export function signedOutWords(reason) {
  if (reason === "signout") return "You have signed out.";
  if (reason === "revoked") return "Your session was ended (signed out elsewhere, kicked or banned). Please sign in again.";
  return "Your session has expired. Please sign in again.";
}

/** A signed-in user without the role a page needs (their session is left alone). */
export function wrongRoleWords(user, role) {
  return `You are signed in as ${user.name}, who is not an ${role}. Sign in with an ${role} account to use the console.`;
}

/** Why the WebSocket closed, for the "reconnecting" banner (close codes: chat/protocol.py). */
export function closeWords(code) {
  switch (code) {
    case CloseCode.GOING_AWAY:
      return "The server is restarting.";
    case CloseCode.POLICY:
    case CloseCode.TOKEN_EXPIRED:
      return "The session needed a fresh token.";
    case CloseCode.TOO_BIG:
      return "The server refused something too large.";
    case CloseCode.INTERNAL:
      return "The server had a problem.";
    case CloseCode.HEARTBEAT_TIMEOUT:
      return "The connection stopped responding.";
    case CloseCode.SLOW_CONSUMER:
      return "The connection fell behind.";
    case CloseCode.TOO_MANY_CONNECTIONS:
      return "Too many chat windows are open; close some.";
    case CloseCode.RATE_LIMITED:
      return "Disconnected for sending too fast.";
    case null:
    case undefined:
      return "Cannot reach the chat server.";
    default:
      return "Connection lost.";
  }
}

/**
 * An `error` frame (or a refused send) in plain words. `op` is what the frame answered
 * ({type, room}, from client.js); `maxBody` the server's message length limit.
 */
export function frameErrorWords({ code, detail, retry_after: retryAfter, op = {}, room }, { maxBody = 32000 } = {}) {
  const where = op.room ?? room;
  const sending = op.type === "send";
  if (CHANGES[op.type] && !["rate_limited", "overloaded", "unavailable", "internal"].includes(code)) {
    return changeErrorWords(op.type, code, detail, maxBody);
  }
  switch (code) {
    case "rate_limited":
      return sending
        ? `You are sending messages too fast. Yours will go out in ${waitWords(retryAfter)}.`
        : `Slow down a little: try again in ${waitWords(retryAfter)}.`;
    case "overloaded":
      return sending
        ? `The server is busy: yours will go out in ${waitWords(retryAfter)}.`
        : `The server is busy: try again in ${waitWords(retryAfter)}.`;
    case "unavailable":
      return sending
        ? `The server could not store it just now: yours will go out in ${waitWords(retryAfter)}.`
        : `The server is having trouble: try again in ${waitWords(retryAfter)}.`;
    case "too_large":
      return `That message is too large to send (the limit is ${maxBody.toLocaleString()} characters).`;
    case "forbidden":
      return op.type === "join" ? `You cannot join #${where}: it is a private room.` : "You are not allowed to do that here.";
    case "not_found":
      return op.type === "join" ? `The room #${where} does not exist any more.` : "That room does not exist any more.";
    case "not_joined":
      return "You were not in that room any more; rejoining and sending again.";
    case "bad_attachment":
      return `The files could not go with it (${detail}). Attach them again.`;
    case "bad_frame":
      return sending
        ? `The server refused it: ${detail}.`
        : `The server could not understand a request (${detail}). Reloading the page may help.`;
    case "resync_failed":
      return `Some messages missed in #${where} could not be loaded. Reload the page to see them.`;
    case "internal":
      return "The server had a problem with that. Please try again.";
    default:
      return sentence(detail) || UNEXPECTED;
  }
}

/** A short word for a waiting retryable send ("Sending too fast", "The server is busy"). */
export function sendDelayWords(code) {
  if (code === "rate_limited") return "Sending too fast";
  if (code === "unavailable") return "The server could not store it";
  return "The server is busy";
}

// What each change to a message is called in a sentence ("Could not edit the message").
const CHANGES = { edit: "edit the message", delete: "delete the message", react: "react to the message" };

/** A refused `edit`, `delete` or `react` in plain words (the server's detail says why). */
function changeErrorWords(type, code, detail, maxBody) {
  const action = `Could not ${CHANGES[type]}`;
  switch (code) {
    case "forbidden":
      return `${action}: ${detail ? sentence(detail) : "you are not allowed to."}`;
    case "not_found":
      return `${action}: it no longer exists, or you cannot read this room any more.`;
    case "too_large":
      if (type === "edit") return `${action}: the text is too long (the limit is ${maxBody.toLocaleString()} characters).`;
      return `${action}: ${detail ? sentence(detail) : "too many reactions on it already."}`;
    case "not_joined":
      return `${action}: you are not in that room any more. Reload the page.`;
    case "bad_frame":
      return `${action}: the server refused it (${detail}).`;
    default:
      return `${action}. ${sentence(detail) || UNEXPECTED}`;
  }
}
