// `slapos node prune` (grid.md §9.2): delete the shared parts (`<shared_root>/<name>/<hash>`,
// built once by slapos.recipe.cmmi and used by several software releases) that nothing on
// this node mentions any more. Used by commands/node-prune.ts.
//
// A part is used when its <hash> appears in the text of: a software release's .installed.cfg
// or bin/* script, another shared part's signature (.*signature, .buildout-shared.json), the
// same files under --additional-software-directory, or those of a SlapOS node nested in a
// partition (a slapos.cfg found under instance_root, followed recursively). Deleting a part
// can free the parts only it used, so passes repeat until one deletes nothing.
import { chmodSync, lstatSync, readdirSync, readFileSync, rmdirSync, statSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { inBeneath } from './beneath.ts'
import { ConfigFile } from './config.ts'
import type { Logger } from './log.ts'

export interface PruneOptions {
  /** the writable shared root: last line of shared_part_list */
  sharedRoot: string
  softwareRoot: string
  instanceRoot: string
  /** more software roots whose software releases keep their parts */
  additionalSoftwareDirectories: string[]
  /** only report what would go */
  dryRun: boolean
  log: Logger
}

/** Runs passes until nothing more is unused; returns every part deleted (or, dry, that would be). */
export function pruneSharedParts(o: PruneOptions): string[] {
  o.log.warning(`Pruning shared directories at ${o.sharedRoot}`)
  for (const dir of o.additionalSoftwareDirectories) {
    if (!isDir(dir)) o.log.warning(`Additional software directory does not exist: ${dir}`)
  }
  const pruned: string[] = []
  // in a dry run nothing goes away: the parts already found are counted as gone
  const ignored = new Set<string>()
  for (;;) {
    const found = prunePass(o, ignored)
    if (found.length === 0) break
    for (const p of found) ignored.add(p)
    pruned.push(...found)
  }
  return pruned
}

// --- internal ---

function prunePass(o: PruneOptions, ignored: ReadonlySet<string>): string[] {
  const texts = new Map<string, string>()
  collectSignatures(texts, o.softwareRoot, o.sharedRoot, ignored)
  for (const dir of o.additionalSoftwareDirectories) {
    if (isDir(dir)) collectSignatures(texts, dir, o.sharedRoot, ignored)
  }
  collectNested(texts, o.instanceRoot, new Set(), o.log)

  const found: string[] = []
  for (const part of sharedParts(o.sharedRoot)) {
    if (ignored.has(part.path)) continue
    let user: string | undefined
    for (const [file, text] of texts) {
      if (text.includes(part.hash)) {
        user = file
        break
      }
    }
    if (user !== undefined) {
      o.log.debug(`${part.path} is used in ${user}`)
      continue
    }
    if (!o.dryRun) removePart(o.sharedRoot, part)
    o.log.warning(`Unused shared parts at ${part.path}${o.dryRun ? '' : ' ... removed'}`)
    found.push(part.path)
  }
  return found
}

/** Signature texts of one software root (and of its shared root when given). */
function collectSignatures(texts: Map<string, string>, softwareRoot: string, sharedRoot: string | undefined, ignored: ReadonlySet<string>): void {
  for (const sr of globDirs(softwareRoot)) {
    readInto(texts, join(sr, '.installed.cfg'))
    for (const script of globNames(join(sr, 'bin'))) readInto(texts, join(sr, 'bin', script))
  }
  if (!sharedRoot) return
  for (const part of sharedParts(sharedRoot)) {
    if (ignored.has(part.path)) continue
    for (const name of safeReaddir(part.path)) {
      if (name === '.buildout-shared.json' || /^\..*signature$/.test(name)) readInto(texts, join(part.path, name))
    }
  }
}

/** Nodes running inside partitions (a slapos.cfg anywhere under instance_root), recursively. */
function collectNested(texts: Map<string, string>, instanceRoot: string, visited: Set<string>, log: Logger): void {
  if (visited.has(instanceRoot)) return
  visited.add(instanceRoot)
  for (const cfgPath of findFiles(instanceRoot, 'slapos.cfg')) {
    let file: ConfigFile
    try {
      file = ConfigFile.load(cfgPath)
    } catch {
      log.debug(`Ignored config at ${cfgPath}: it does not parse`)
      continue
    }
    const softwareRoot = file.get('slapos', 'software_root')?.trim()
    const nestedInstanceRoot = file.get('slapos', 'instance_root')?.trim()
    if (!softwareRoot || !nestedInstanceRoot) {
      log.debug(`Ignored config at ${cfgPath}: no software_root or instance_root in [slapos]`)
      continue
    }
    let sharedRoot = file.list('slapos', 'shared_part_list').at(-1)
    if (sharedRoot && !isDir(sharedRoot)) sharedRoot = undefined
    if (isDir(softwareRoot)) collectSignatures(texts, softwareRoot, sharedRoot, new Set())
    if (isDir(nestedInstanceRoot)) collectNested(texts, nestedInstanceRoot, visited, log)
  }
}

/** A shared part: `<shared_root>/<name>/<hash>`. */
interface SharedPart {
  name: string
  hash: string
  path: string
}

/**
 * `<shared_root>/*\/*` directories (names starting with a dot are skipped, as a shell glob
 * does). The shared root is root's choice, what is below it the software user's: a link
 * there (`<shared_root>/x` -> /var/lib) is not a part, each level is listed from the one
 * above opened without following a link.
 */
function sharedParts(sharedRoot: string): SharedPart[] {
  const parts: SharedPart[] = []
  inBeneath(sharedRoot, [], undefined, (root) => {
    for (const name of visible(root.list())) {
      const dir = root.sub(name)
      if (!dir) continue
      try {
        for (const hash of visible(dir.list())) {
          if (lstatSync(dir.at(hash), { throwIfNoEntry: false })?.isDirectory()) parts.push({ name, hash, path: join(sharedRoot, name, hash) })
        }
      } finally {
        dir.close()
      }
    }
  })
  return parts
}

function globDirs(dir: string): string[] {
  return globNames(dir)
    .map((n) => join(dir, n))
    .filter(isDir)
}

function globNames(dir: string): string[] {
  return visible(safeReaddir(dir))
}

/** The names a shell glob matches, in order. */
function visible(names: string[]): string[] {
  return names.filter((n) => !n.startsWith('.')).sort()
}

function readInto(texts: Map<string, string>, file: string): void {
  try {
    if (!statSync(file).isFile()) return
    texts.set(file, readFileSync(file, 'utf8'))
  } catch {
    // absent or unreadable: it names nothing
  }
}

function findFiles(root: string, name: string): string[] {
  const out: string[] = []
  const walk = (dir: string) => {
    for (const entry of safeReaddir(dir)) {
      const p = join(dir, entry)
      let st
      try {
        st = lstatSync(p)
      } catch {
        continue
      }
      if (st.isDirectory()) walk(p)
      else if (entry === name && st.isFile()) out.push(p)
    }
  }
  walk(root)
  return out
}

/**
 * As root, GNU rm (beneath.ts `removeTree`: it never follows a link, the part itself included),
 * given the part by its name in `<shared_root>/<name>` opened here without following a link:
 * the software user swapping `<name>` for a link meanwhile cannot send it elsewhere. `<name>`
 * no longer a directory: nothing of the shared root to remove. Otherwise (we are the software
 * user) in-process, making read-only directories writable.
 */
function removePart(sharedRoot: string, part: SharedPart): void {
  if (process.getuid?.() !== 0) return removeTree(part.path)
  inBeneath(sharedRoot, [part.name], undefined, (d) => d.removeTree(part.hash))
}

/** Recursive delete that also goes through read-only directories (built parts often are). */
function removeTree(path: string): void {
  const st = lstatSync(path)
  if (!st.isDirectory()) {
    unlinkSync(path)
    return
  }
  if ((st.mode & 0o700) !== 0o700) chmodSync(path, (st.mode & 0o7777) | 0o700)
  for (const n of readdirSync(path)) removeTree(join(path, n))
  rmdirSync(path)
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory()
  } catch {
    return false
  }
}
