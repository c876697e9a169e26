#!/usr/bin/env node
// The boxd CLI: a thin launcher that runs cli/main.ts through tsx.
import { register } from 'tsx/esm/api';
register();
await import('./main.ts');
