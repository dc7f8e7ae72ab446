// The HTTP API, with the session token kept for this browser tab only.
const BASE = "/api/v1";
const KEY = "citisense.session";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.fields = (body && body.fields) || [];
  }
}

export const session = {
  get() {
    const raw = sessionStorage.getItem(KEY);
    return raw ? JSON.parse(raw) : null;
  },
  set(value) { sessionStorage.setItem(KEY, JSON.stringify(value)); },
  clear() { sessionStorage.removeItem(KEY); },
};

let onUnauthorized = () => {};
export function whenUnauthorized(callback) { onUnauthorized = callback; }

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const current = session.get();
  if (current) headers.Authorization = `Bearer ${current.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(BASE + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && path !== "/auth/login") onUnauthorized();
    throw new ApiError(response.status, data);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const put = (path, body) => call("PUT", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const del = (path) => call("DELETE", path);

export async function login(username, password) {
  const result = await post("/auth/login", { username, password });
  session.set({ token: result.token, user: result.user, expires_at: result.expires_at });
  return result.user;
}

export async function logout() {
  try { await post("/auth/logout"); } finally { session.clear(); }
}

const RANK = ["viewer", "operator", "technician", "admin"];
export function can(role) {
  const current = session.get();
  return !!current && RANK.indexOf(current.user.role) >= RANK.indexOf(role);
}
