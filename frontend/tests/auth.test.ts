import { describe, expect, it } from 'vitest';
import { csrfToken, withCsrf } from '../src/protocol/auth';

describe('CSRF token (docs/security.md)', () => {
  it('is read from the avatar_csrf cookie', () => {
    expect(csrfToken('a=1; avatar_csrf=abc%3D; b=2')).toBe('abc=');
    expect(csrfToken('avatar_csrfx=1')).toBeNull();
    expect(csrfToken('')).toBeNull();
  });

  it('goes with requests that change something, never with reads', () => {
    const cookies = 'avatar_csrf=tok';
    const post = new Headers(withCsrf({ method: 'POST', headers: { Accept: 'application/json' } }, cookies).headers);
    expect(post.get('X-CSRF-Token')).toBe('tok');
    expect(post.get('Accept')).toBe('application/json');
    expect(new Headers(withCsrf({ method: 'delete' }, cookies).headers).get('X-CSRF-Token')).toBe('tok');
    expect(new Headers(withCsrf({}, cookies).headers).get('X-CSRF-Token')).toBeNull();
    expect(new Headers(withCsrf({ method: 'POST' }, '').headers).get('X-CSRF-Token')).toBeNull();
  });
});
