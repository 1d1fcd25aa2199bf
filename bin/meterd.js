#!/usr/bin/env node
// Runs the TypeScript command line through tsx, so that `npx meterd` works from a checkout.
import { register } from "tsx/esm/api";

register();
await import("../src/cli.ts");
