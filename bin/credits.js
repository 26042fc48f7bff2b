#!/usr/bin/env node
// The `credits` command. It runs the TypeScript source through tsx (a runtime dependency, so it is
// there after a plain `npm ci`, also with --omit=dev): a command is short-lived, so tsx's start-up
// cost does not matter, and there is no compiled copy that could be older than the source.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
