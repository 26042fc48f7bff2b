// Billing-cycle arithmetic. Boundaries are `anchor + k months` for every whole k, each computed
// from the anchor itself with the day clamped to the month's end, so 31 Jan -> 28/29 Feb -> 31 Mar.

export interface BillingCycle {
  startsAt: Date;
  endsAt: Date;
}

function daysInMonth(year: number, monthIndex: number): number {
  return new Date(Date.UTC(year, monthIndex + 1, 0)).getUTCDate();
}

/** The k-th boundary after (k > 0) or before (k < 0) the anchor, in UTC. */
export function cycleBoundary(anchor: Date, k: number): Date {
  const monthIndex = anchor.getUTCMonth() + k;
  const year = anchor.getUTCFullYear() + Math.floor(monthIndex / 12);
  const month = ((monthIndex % 12) + 12) % 12;
  const day = Math.min(anchor.getUTCDate(), daysInMonth(year, month));
  return new Date(
    Date.UTC(
      year,
      month,
      day,
      anchor.getUTCHours(),
      anchor.getUTCMinutes(),
      anchor.getUTCSeconds(),
      anchor.getUTCMilliseconds(),
    ),
  );
}

/** The cycle [startsAt, endsAt) that contains `now`, whether the anchor is in the past or the future. */
export function cycleContaining(anchor: Date, now: Date): BillingCycle {
  let k = (now.getUTCFullYear() - anchor.getUTCFullYear()) * 12 + (now.getUTCMonth() - anchor.getUTCMonth());
  // The month difference is off by at most one either way; step until the cycle holds `now`.
  while (cycleBoundary(anchor, k).getTime() > now.getTime()) k -= 1;
  while (cycleBoundary(anchor, k + 1).getTime() <= now.getTime()) k += 1;
  return { startsAt: cycleBoundary(anchor, k), endsAt: cycleBoundary(anchor, k + 1) };
}
