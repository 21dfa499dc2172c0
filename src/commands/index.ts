// The command table: one entry per command, sorted by name, each loaded only when run
// (start-up time is a feature: `slapos --help` must not load the proxy or the node).
// File names in this folder match the command names with spaces turned into dashes.
import type { CommandSpec } from '../cli.ts'

export const COMMANDS: CommandSpec[] = [
  {
    name: 'help',
    group: 'other',
    summary: 'print detailed help for another command',
    load: () => import('./help.ts'),
  },
  {
    name: 'proxy start',
    group: 'other',
    summary: 'minimalist, stand-alone SlapOS Master',
    load: () => import('./proxy-start.ts'),
  },
  {
    name: 'proxy show',
    group: 'other',
    summary: 'display proxy instances and parameters',
    load: () => import('./proxy-show.ts'),
  },
]
