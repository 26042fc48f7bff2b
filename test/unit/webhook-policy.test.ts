import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BACKOFF_JITTER, WEBHOOK_ATTEMPTS_MAX, exponentialBackoff } from '../../src/webhooks/backoff.ts';
import { publicOnlyLookup } from '../../src/webhooks/sender.ts';
import {
  DEVELOPMENT_WEBHOOK_POLICY,
  PRODUCTION_WEBHOOK_POLICY,
  checkWebhookUrl,
  isPublicAddress,
} from '../../src/webhooks/url-policy.ts';

describe('webhook addresses', () => {
  it('takes only ordinary public unicast addresses as public', () => {
    for (const address of ['93.184.216.34', '8.8.8.8', '2606:4700:4700::1111'])
      expect(isPublicAddress(address)).toBe(true);
    for (const address of [
      '127.0.0.1',
      '127.255.0.9',
      '10.0.0.1',
      '172.16.0.1',
      '192.168.0.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '255.255.255.255',
      '224.0.0.1',
      '::1',
      '::',
      '::ffff:10.0.0.1',
      'fe80::1',
      'fd12:3456::1',
      '2002:7f00:1::', // 6to4 of 127.0.0.1
      '64:ff9b::7f00:1', // NAT64 of 127.0.0.1
      'not an address',
    ]) {
      expect(isPublicAddress(address), address).toBe(false);
    }
  });

  it('normalises what it accepts and keeps development permissive', () => {
    expect(checkWebhookUrl('https://Hooks.Example.com/a?b=1', PRODUCTION_WEBHOOK_POLICY).href).toBe(
      'https://hooks.example.com/a?b=1',
    );
    expect(checkWebhookUrl('http://127.0.0.1:9000/hook', DEVELOPMENT_WEBHOOK_POLICY).href).toBe(
      'http://127.0.0.1:9000/hook',
    );
    expect(() => checkWebhookUrl('http://127.0.0.1:9000/hook', PRODUCTION_WEBHOOK_POLICY)).toThrow(/https/);
  });

  it('refuses, at connection time, a name any of whose addresses is not public', async () => {
    const resolveTo =
      (...addresses: string[]) =>
      (_host: string, _options: object, callback: (error: Error | null, addresses: unknown) => void) =>
        callback(
          null,
          addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })),
        );
    const ask = (resolver: ReturnType<typeof resolveTo>) =>
      new Promise<{ error: Error | null; address: unknown }>((resolve) =>
        publicOnlyLookup(resolver as never)('hooks.example.com', { all: false }, (error, address) =>
          resolve({ error, address }),
        ),
      );
    expect(await ask(resolveTo('93.184.216.34'))).toEqual({ error: null, address: '93.184.216.34' });
    const mixed = await ask(resolveTo('93.184.216.34', '10.0.0.5'));
    expect(mixed.error?.message).toBe('hooks.example.com resolves to a non-public address (10.0.0.5)');
  });
});

describe('retry schedule', () => {
  it('waits about 5 s first, grows every time, and spreads 12 attempts over about a day', () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 0.999_999, noNaN: true }), { minLength: 11, maxLength: 11 }),
        (draws) => {
          let i = 0;
          const schedule = exponentialBackoff(undefined, undefined, () => draws[i++]!);
          const waits = Array.from({ length: WEBHOOK_ATTEMPTS_MAX - 1 }, (_, n) => schedule.delayMs(n + 1));
          expect(waits[0]).toBeGreaterThanOrEqual(5000 * (1 - BACKOFF_JITTER));
          expect(waits[0]).toBeLessThanOrEqual(5000 * (1 + BACKOFF_JITTER));
          // The factor (2.52) outgrows the jitter (0.8 to 1.2), so each wait is longer than the last.
          for (let n = 1; n < waits.length; n++) expect(waits[n]!).toBeGreaterThan(waits[n - 1]!);
          const hours = waits.reduce((sum, wait) => sum + wait, 0) / 3_600_000;
          expect(hours).toBeGreaterThan(23.7 * (1 - BACKOFF_JITTER));
          expect(hours).toBeLessThan(23.8 * (1 + BACKOFF_JITTER));
        },
      ),
    );
    expect(exponentialBackoff().attemptsMax).toBe(12);
  });
});
