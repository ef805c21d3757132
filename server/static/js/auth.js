// The access token (docs/protocol.md, "Access tokens"). A page takes it from its address (?token=...),
// which it then removes from the address bar, or from the token field in its header. It is kept in
// sessionStorage (this tab only, gone with it; never localStorage) and sent with every request the page
// makes: `Authorization: Bearer` on HTTP requests, `?token=` on WebSockets (browsers cannot give those a
// header). Servers without tokens ignore both.

const STORAGE_KEY = "transient.token";
const listeners = new Set();

function stored() {
  try {
    return sessionStorage.getItem(STORAGE_KEY) || "";
  } catch {
    return ""; // storage disabled: the token lives as long as the page
  }
}

let token = stored();

/** The token this tab uses ("" for none). */
export function getToken() {
  return token;
}

/** Use `value` from now on (an empty value forgets the token); listeners hear of it. */
export function setToken(value) {
  token = (value || "").trim();
  try {
    if (token) sessionStorage.setItem(STORAGE_KEY, token);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // storage disabled: kept in memory only
  }
  for (const listener of listeners) listener(token);
}

export function onTokenChange(listener) {
  listeners.add(listener);
}

/** Move a `?token=` of the page's address into storage and out of the address bar (and its history entry). */
function takeTokenFromAddress() {
  const url = new URL(window.location.href);
  if (!url.searchParams.has("token")) return;
  const given = url.searchParams.get("token");
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.href);
  if (given.trim()) setToken(given);
}

takeTokenFromAddress(); // on import, before any request is made

/** `headers` plus `Authorization: Bearer TOKEN` when there is a token. */
export function authHeaders(headers = {}) {
  const all = new Headers(headers);
  if (token) all.set("Authorization", `Bearer ${token}`);
  return all;
}

/** `url` with `?token=TOKEN` added when there is a token (for WebSockets). */
export function withToken(url) {
  if (!token) return url;
  const full = new URL(url, window.location.href);
  full.searchParams.set("token", token);
  return full.href;
}

/**
 * What to tell the user about a refusal by the access checks (401 unauthorized, 403 forbidden or
 * origin_not_allowed), or null for any other error. `error` has `status`, `code` and `message`.
 */
export function accessProblem(error) {
  if (!error) return null;
  if (error.status === 401) {
    return token
      ? `The access token was not accepted (${error.message}). Enter a valid token in the token field at the top of the page.`
      : "This server needs an access token. Enter it in the token field at the top of the page, or open the page with ?token=… in its address.";
  }
  if (error.status === 403 && error.code === "forbidden") {
    return `This access token does not allow that: ${error.message}. Enter a token with that right in the token field at the top of the page.`;
  }
  if (error.status === 403 && error.code === "origin_not_allowed") return `The server refused this page: ${error.message}.`;
  return null;
}

/**
 * The token field in a page's header (a form with one password input): shows the token in use, takes a
 * new one on Enter or "Use", and is highlighted by `demand()` when the server asked for a (better) token.
 */
export class TokenField {
  constructor(form, onChange = () => {}) {
    this.form = form;
    this.input = form.querySelector("input");
    this.input.value = token;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      form.classList.remove("needed");
      setToken(this.input.value);
      onChange(token);
    });
    onTokenChange((value) => {
      if (document.activeElement !== this.input) this.input.value = value;
    });
  }

  demand() {
    this.form.classList.add("needed");
    this.input.focus();
  }
}
