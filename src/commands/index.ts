// The command table: one entry per command, sorted by name, each loaded only when run
// (start-up time is a feature: `slapos --help` must not load the proxy or the node).
// File names in this folder match the command names with spaces turned into dashes.
import type { CommandSpec } from '../cli.ts'

export const COMMANDS: CommandSpec[] = [
  {
    name: 'computer info',
    group: 'client',
    summary: 'get information of an computer',
    load: () => import('./computer-info.ts'),
  },
  {
    name: 'computer list',
    group: 'client',
    summary: 'List all available compute nodes',
    load: () => import('./computer-list.ts'),
  },
  {
    name: 'configure client',
    group: 'client',
    summary: 'configure slapos client with an existing account',
    load: () => import('./configure-client.ts'),
  },
  {
    name: 'configure local',
    group: 'other',
    summary: 'Configure a slapos node, from scratch to ready-to-use, using slapproxy.',
    load: () => import('./configure-local.ts'),
  },
  {
    name: 'console',
    group: 'client',
    summary: 'open python console with slap library imported',
    load: () => import('./console.ts'),
  },
  {
    name: 'help',
    group: 'other',
    summary: 'print detailed help for another command',
    load: () => import('./help.ts'),
  },
  {
    name: 'node bang',
    group: 'node',
    summary: 'request update on all partitions',
    aliases: ['bang'],
    load: () => import('./node-bang.ts'),
  },
  {
    name: 'node format',
    group: 'node',
    summary: 'create users, partitions and network configuration',
    aliases: ['format'],
    load: () => import('./node-format.ts'),
  },
  {
    name: 'node instance',
    group: 'node',
    summary: 'deploy, start and stop the partitions the master asks for',
    aliases: ['grid instance'],
    load: () => import('./node-instance.ts'),
  },
  {
    name: 'node register',
    group: 'node',
    summary: 'Register a new computer on SlapOS Master.',
    load: () => import('./node-register.ts'),
  },
  {
    name: 'node report',
    group: 'node',
    summary: 'run instance reports and garbage collection',
    aliases: ['grid report'],
    load: () => import('./node-report.ts'),
  },
  {
    name: 'node software',
    group: 'node',
    summary: 'run software installation/deletion',
    aliases: ['grid software'],
    load: () => import('./node-software.ts'),
  },
  {
    name: 'node supervisord',
    group: 'node',
    summary: 'launch, if not already running, supervisor daemon',
    load: () => import('./node-supervisord.ts'),
  },
  {
    name: 'node watchdog',
    group: 'node',
    summary: 'supervisord event listener: bang partitions whose watched services fail',
    aliases: ['watchdog'],
    load: () => import('./node-watchdog.ts'),
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
  {
    name: 'remove',
    group: 'client',
    summary: 'remove a Software from a node',
    load: () => import('./remove.ts'),
  },
  {
    name: 'request',
    group: 'client',
    summary: 'request an instance and get status and parameters of instance',
    load: () => import('./request.ts'),
  },
  {
    name: 'service info',
    group: 'client',
    summary: 'get status, software_release and parameters of an instance',
    load: () => import('./service-info.ts'),
  },
  {
    name: 'service list',
    group: 'client',
    summary: 'List the title of all your slapos services',
    load: () => import('./service-list.ts'),
  },
  {
    name: 'supply',
    group: 'client',
    summary: 'supply a Software to a node',
    load: () => import('./supply.ts'),
  },
]
