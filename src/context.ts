import type { Viewer } from './auth/tokens.ts';
import type { Clock } from './clock.ts';
import type { Db } from './db/client.ts';

/** What every resolver receives. The database handle comes from here, never from a global. */
export interface GraphQLContext {
  db: Db;
  clock: Clock;
  /** The verified caller, or null with the reason in `authFailure`. */
  viewer: Viewer | null;
  authFailure: string | null;
}
