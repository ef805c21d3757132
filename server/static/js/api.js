// Endpoints of the Transient server (docs/protocol.md) and small helpers every page shares.

import { authHeaders, withToken } from "./auth.js";

/**
 * WebSocket URL of `path` on the server that served this page (ws: or wss: to match http: or https:),
 * carrying the access token if there is one.
 */
export function wsUrl(path) {
  const url = new URL(withToken(path), window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

export const PATHS = {
  stream: "/api/v3/stream",
  streams: "/api/v3/streams",
  events: (streamId) => `/api/v3/streams/${encodeURIComponent(streamId)}/events`,
  webrtcOffer: "/api/v3/webrtc/offer",
  analysis: "/api/v3/analysis",
  task: (taskId) => `/api/v3/analysis/${encodeURIComponent(taskId)}`,
};

/** An error the server explained (`{"error": {"code", "message"}}`) or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

/** The error a failed response carries, whatever its body. */
export async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  const retry = Number(response.headers.get("Retry-After"));
  return new ApiError(response.status, code, message, Number.isFinite(retry) && retry > 0 ? retry : null);
}

/**
 * fetch() with the access token that returns parsed JSON or throws ApiError (status 0 when the server
 * cannot be reached).
 */
export async function fetchJson(path, init = {}) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: authHeaders(init.headers) });
  } catch (err) {
    throw new ApiError(0, "unreachable", `cannot reach the server (${err.message || err})`);
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/**
 * Why a WebSocket to `path` was refused, if the access checks refused it: a failed handshake hides its
 * HTTP status from the page, so the same path is asked for over plain HTTP, where the access checks
 * answer the same (401, 403) and an allowed request gets 426. The ApiError of a 401/403, else null.
 */
export async function accessRefusal(path) {
  try {
    const response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
    if (response.status === 401 || response.status === 403) return await errorOf(response);
  } catch {
    // unreachable: not an access problem
  }
  return null;
}

/**
 * Delays for reconnecting: 0.5 s doubling to `maxS`, with ±20 % jitter so many clients do not return
 * in step. `reset()` after a connection proved healthy.
 */
export class Backoff {
  constructor(firstS = 0.5, maxS = 10) {
    this.firstS = firstS;
    this.maxS = maxS;
    this.attempt = 0;
  }

  next() {
    const base = Math.min(this.maxS, this.firstS * 2 ** this.attempt);
    this.attempt += 1;
    return base * (0.8 + 0.4 * Math.random());
  }

  reset() {
    this.attempt = 0;
  }
}

/** Close codes after which reconnecting with the same request cannot help (docs/protocol.md). */
export const FATAL_CLOSE_CODES = new Set([1003, 1007, 1009]);

export const CLOSE_NAMES = {
  1000: "normal",
  1001: "going away",
  1003: "unsupported data",
  1006: "connection lost",
  1007: "invalid payload",
  1008: "policy",
  1009: "message too big",
  1011: "server fault",
  1012: "server restarting",
  1013: "server full, retry later",
};

export function describeClose(code, reason) {
  const name = CLOSE_NAMES[code] || "closed";
  return reason ? `${code} ${name}: ${reason}` : `${code} ${name}`;
}

export function formatSeconds(s, digits = 3) {
  return Number.isFinite(s) ? `${s.toFixed(digits)} s` : "–";
}

/** `m:ss.mmm` for positions in a file. */
export function formatClock(s) {
  if (!Number.isFinite(s)) return "–";
  const minutes = Math.floor(s / 60);
  const seconds = s - minutes * 60;
  return `${minutes}:${seconds.toFixed(3).padStart(6, "0")}`;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
