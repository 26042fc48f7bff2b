// The `credits` command line (bin/credits.js loads this under tsx). See README "Command line".
import { runCli } from './program.ts';

process.exitCode = await runCli(process.argv);
