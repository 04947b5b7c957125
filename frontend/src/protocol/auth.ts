/**
 * Signing in (docs/security.md, "Accounts and ownership"): the server keeps the sign-in in an
 * HttpOnly cookie; every request that changes something carries the CSRF token from the readable
 * `avatar_csrf` cookie in `X-CSRF-Token`.
 */

export const CSRF_COOKIE = 'avatar_csrf';
export const CSRF_HEADER = 'X-CSRF-Token';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The CSRF token of this browser's sign-in, or `null` when it has none. */
export function csrfToken(cookies: string = typeof document === 'undefined' ? '' : document.cookie): string | null {
  for (const part of cookies.split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === CSRF_COOKIE) return decodeURIComponent(rest.join('='));
  }
  return null;
}

/** `init` with the CSRF header added when the request changes something. */
export function withCsrf(init: RequestInit = {}, cookies?: string): RequestInit {
  const method = (init.method ?? 'GET').toUpperCase();
  const token = csrfToken(cookies);
  if (SAFE_METHODS.has(method) || !token) return init;
  const headers = new Headers(init.headers ?? {});
  headers.set(CSRF_HEADER, token);
  return { ...init, headers };
}

export interface Me {
  user_id: string;
  name: string;
  role: string;
}

/** Who is signed in (`null`: nobody). */
export async function whoAmI(base = ''): Promise<Me | null> {
  const res = await fetch(`${base}/api/v1/me`, { headers: { Accept: 'application/json' } });
  if (res.status === 401) return null;
  if (!res.ok) throw new Error(`GET /api/v1/me: HTTP ${res.status}`);
  return (await res.json()) as Me;
}

/** Sign in with an API key, or a name and password; throws with the server's message. */
export async function signIn(credentials: { key: string } | { name: string; password: string }, base = ''): Promise<Me> {
  const res = await fetch(`${base}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(credentials),
  });
  const body = (await res.json().catch(() => null)) as { user?: Me; error?: { message?: string } } | null;
  if (!res.ok || !body?.user) throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
  return body.user;
}
