/** The source of "now" for every rule that depends on time; tests move a manual clock instead of sleeping. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

export class ManualClock implements Clock {
  #nowMs: number;

  constructor(start: Date | string = '2026-01-15T12:00:00Z') {
    this.#nowMs = new Date(start).getTime();
  }

  now(): Date {
    return new Date(this.#nowMs);
  }

  advance(ms: number): void {
    this.#nowMs += ms;
  }

  advanceSeconds(seconds: number): void {
    this.advance(seconds * 1000);
  }

  set(to: Date | string): void {
    this.#nowMs = new Date(to).getTime();
  }
}
