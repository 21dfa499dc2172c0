// The old program names (a link named slapos-watchdog, slapgrid-cp ...), shared by the command
// line and by the watchdog, which starts itself again by its path.

/** Old program names of slapos.core 0.35.1 (spec cli.md §10.1) and the command each runs. */
export const LEGACY_NAMES: Record<string, string> = {
  bang: 'node bang',
  slapconsole: 'console',
  slapformat: 'node format',
  slapgrid: 'slapgrid',
  'slapgrid-cp': 'node instance',
  'slapgrid-sr': 'node software',
  'slapgrid-supervisorctl': 'node supervisorctl',
  'slapgrid-supervisord': 'node supervisord',
  'slapgrid-ur': 'node report',
  'slapos-watchdog': 'node watchdog',
  slapproxy: 'proxy start',
  'slapproxy-query': 'proxy show',
}
