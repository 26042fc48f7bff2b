import { describe, expect, it } from 'vitest';
import { authorizationOf, closeReason } from '../../src/realtime/connection-auth.ts';

describe('the Authorization value of a connection_init payload', () => {
  it('is found at the top level or under headers, in any letter case', () => {
    for (const params of [
      { authorization: 'Bearer a' },
      { Authorization: 'Bearer a' },
      { aUtHoRiZaTiOn: 'Bearer a' },
      { headers: { Authorization: 'Bearer a' } },
      { headers: { AUTHORIZATION: 'Bearer a' }, other: 1 },
      // The same value twice is one token.
      { authorization: 'Bearer a', headers: { Authorization: 'Bearer a' } },
    ]) {
      expect(authorizationOf(params), JSON.stringify(params)).toEqual({ kind: 'header', value: 'Bearer a' });
    }
  });

  it('is none without one, and unreadable when it is not text or there are two', () => {
    for (const params of [undefined, {}, { headers: 'Bearer a' }, { headers: ['Bearer a'] }, { token: 'Bearer a' }]) {
      expect(authorizationOf(params), JSON.stringify(params)).toEqual({ kind: 'none' });
    }
    expect(authorizationOf({ Authorization: 42 })).toMatchObject({ kind: 'unreadable' });
    expect(authorizationOf({ headers: { Authorization: null } })).toMatchObject({ kind: 'unreadable' });
    expect(authorizationOf({ authorization: 'Bearer a', Authorization: 'Bearer b' })).toMatchObject({
      kind: 'unreadable',
      reason: expect.stringMatching(/two different/),
    });
  });
});

describe('a close reason', () => {
  it('is kept whole up to 123 bytes of UTF-8 and cut on a character boundary beyond', () => {
    const fits = 'x'.repeat(123);
    expect(closeReason(fits)).toBe(fits);
    const long = 'é'.repeat(100); // 200 bytes
    const cut = closeReason(long);
    expect(Buffer.byteLength(cut, 'utf8')).toBeLessThanOrEqual(123);
    expect(cut.endsWith('…')).toBe(true);
    expect(cut.slice(0, -1)).toBe('é'.repeat(cut.length - 1));
    expect(cut.length - 1).toBe(60); // 120 bytes of é and the 3-byte ellipsis
  });
});
