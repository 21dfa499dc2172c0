// /etc/passwd as the node reads it: node instance and report (partition owners), node doctor
// and node collect (the accounts of the partitions' users). A module of its own, on node's fs
// only, so that node collect (every minute from cron) loads nothing else for it.
import { readFileSync } from 'node:fs'

/** One account of /etc/passwd. */
export interface PasswdEntry {
  name: string
  uid: number
  gid: number
  home: string
}

/** The accounts of a text in /etc/passwd format, in file order; malformed lines are skipped. Pure. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = []
  for (const line of text.split('\n')) {
    const f = line.split(':')
    if (f.length < 7 || !f[0] || !/^\d+$/.test(f[2] ?? '') || !/^\d+$/.test(f[3] ?? '')) continue
    out.push({ name: f[0], uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '' })
  }
  return out
}

/** /etc/passwd read directly (no NSS: nodes create their users locally with useradd); [] when unreadable. */
export function readPasswd(path = '/etc/passwd'): PasswdEntry[] {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return []
  }
  return parsePasswd(text)
}
