// proxy.md §7 and checklist items 89-93: the local software-release root. Each test starts
// the built proxy on a directory, supplies and requests software releases, stops it, moves
// or reconfigures, starts it again and reads what getFullComputerInformation and the
// database say. Test names start with the checklist numbers they cover.
import { DatabaseSync } from 'node:sqlite'
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { dumps, loads, type PyValue, SlapObject } from '../src/slap-protocol.ts'
import { requestForm, slapos, startProxy, type StartedProxy, tempDir } from './helpers.ts'

const HTTP = 'http://sr.example/a/software.cfg'
const HTTPS = 'https://sr//'

const t = suite('proxy local software release root')

/** The proxy as configured by the test: what to set the root with, and more options. */
interface Start {
  dir: string
  /** root in [slapproxy] local_software_release_root */
  root?: string
  /** root in [slapos] local_software_release_root */
  slaposRoot?: string
  args?: string[]
}
const running = new Set<StartedProxy>()
async function start(s: Start): Promise<StartedProxy> {
  const p = await startProxy({
    dir: s.dir,
    extraCfg: s.root === undefined ? '' : `local_software_release_root = ${s.root}\n`,
    slaposCfg: s.slaposRoot === undefined ? '' : `local_software_release_root = ${s.slaposRoot}\n`,
    args: ['--log-level', 'debug', ...(s.args ?? [])],
  })
  running.add(p)
  return p
}
async function stop(p: StartedProxy): Promise<void> {
  await p.stop()
  running.delete(p)
}
t.after.each(async () => {
  for (const p of running) await stop(p)
})

async function post(p: StartedProxy, path: string, form: Record<string, string>): Promise<string> {
  const res = await fetch(`${p.url}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
  })
  const text = await res.text()
  assert.is(res.status, 200, `${path}: ${text}`)
  return text
}
async function format(p: StartedProxy, n: number): Promise<void> {
  const partition_list: PyValue[] = Array.from({ length: n }, (_, i) => ({
    reference: `slappart${i}`,
    tap: { name: `tap${i}` },
    address_list: [{ addr: `10.0.0.${i + 2}`, netmask: '255.255.255.0' }],
  }))
  await post(p, 'loadComputerConfigurationFromXML', { xml: dumps({ reference: 'computer', address: '10.0.0.1', netmask: '255.255.255.0', partition_list }) })
}
const supply = (p: StartedProxy, url: string) => post(p, 'supplySupply', { url, computer_id: 'computer', state: 'available' })
async function request(p: StartedProxy, sr: string, title: string): Promise<string> {
  const state = (loads(await post(p, 'requestComputerPartition', requestForm({ title, sr }))) as SlapObject).state
  return String(state.slap_computer_partition_id)
}

/** What getFullComputerInformation says: the supplied URLs, and partition id -> its SR URL. */
async function seen(p: StartedProxy): Promise<{ software: string[]; partitions: Record<string, string | null> }> {
  const res = await fetch(`${p.url}getFullComputerInformation?computer_id=computer`)
  const text = await res.text()
  assert.is(res.status, 200, text)
  const c = (loads(text) as SlapObject).state
  const software = (c._software_release_list as SlapObject[]).map((s) => String(s.state._software_release))
  const partitions: Record<string, string | null> = {}
  for (const x of c._computer_partition_list as SlapObject[]) {
    const doc = x.state._software_release_document as SlapObject | null
    partitions[String(x.state._partition_id)] = doc ? String(doc.state._software_release) : null
  }
  return { software, partitions }
}

/** The rows as stored (the proxy is stopped or idle; WAL lets us read beside it). */
function dbRows(dbPath: string) {
  const db = new DatabaseSync(dbPath, { readOnly: true })
  try {
    const root = db.prepare("SELECT value FROM config17 WHERE name = 'local_software_release_root'").get() as { value: string } | undefined
    return {
      root: root?.value,
      software: (db.prepare('SELECT url FROM software17 ORDER BY rowid').all() as { url: string }[]).map((r) => r.url),
      partitions: Object.fromEntries(
        (db.prepare('SELECT reference, software_release FROM partition17 ORDER BY rowid').all() as { reference: string; software_release: string | null }[]).map((r) => [
          r.reference,
          r.software_release,
        ]),
      ),
    }
  } finally {
    db.close()
  }
}

const backups = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('proxy.db-backup-'))
/** The proxy's log lines without their "<time> slapos[pid] LEVEL " head. */
const messages = (p: StartedProxy) =>
  p
    .log()
    .split('\n')
    .map((l) => /^(?:\S+ \S+ )?slapos\[\d+\] ([A-Z]+) (.*)$/.exec(l))
    .filter((m) => m !== null)
    .map((m) => `${m[1]} ${m[2]}`)

function file(path: string): string {
  mkdirSync(join(path, '..'), { recursive: true })
  writeFileSync(path, '[buildout]\n')
  return path
}

t('89 90: moving the whole directory rebases the local paths under the old root, in software and partition; http(s) URLs and other paths stay', async () => {
  const base = tempDir('slapos-rebase-')
  const dir0 = join(base, '0')
  const dir1 = join(base, '1')
  mkdirSync(dir0)
  const inRoot = join(dir0, 'opt', 'soft', 'software.cfg')
  const outside = join(dir0, 'srv', 'soft', 'software.cfg')
  const urls = [inRoot, outside, HTTP, HTTPS]

  let p = await start({ dir: dir0, root: join(dir0, 'opt') })
  await format(p, 4)
  const ids: string[] = []
  for (const [i, url] of urls.entries()) {
    await supply(p, url)
    ids.push(await request(p, url, `instance${i}`))
  }
  assert.equal((await seen(p)).software, urls)
  await stop(p)
  assert.is(dbRows(p.dbPath).root, join(dir0, 'opt'))
  assert.equal(backups(dir0), [], 'no backup while the root stays')

  renameSync(dir0, dir1)
  p = await start({ dir: dir1, root: join(dir1, 'opt') })
  const moved = join(dir1, 'opt', 'soft', 'software.cfg')
  const expected = [moved, outside, HTTP, HTTPS]
  const s = await seen(p)
  assert.equal(s.software, expected)
  assert.equal(
    ids.map((id) => s.partitions[id]),
    expected,
  )
  const rows = dbRows(p.dbPath)
  assert.is(rows.root, join(dir1, 'opt'))
  assert.equal(rows.software, expected)
  assert.equal(
    ids.map((id) => rows.partitions[id]),
    expected,
  )

  // the log, at start-up (before the proxy listens), as the original words it
  const log = messages(p)
  const info = log.filter((l) => l.startsWith('INFO '))
  const at = info.findIndex((l) => l.startsWith('INFO Backuping database to '))
  assert.ok(at >= 0, p.log())
  const backupPath = info[at]!.slice('INFO Backuping database to '.length)
  assert.equal(info.slice(at + 1, at + 4), [
    'INFO Rebase URLs on local software release root path',
    `INFO Old root path: ${join(dir0, 'opt')}`,
    `INFO New root path: ${join(dir1, 'opt')}`,
  ])
  assert.ok(log.findIndex((l) => l.startsWith('INFO Listening on ')) > log.indexOf(`INFO New root path: ${join(dir1, 'opt')}`))
  for (const line of [
    `DEBUG Examining URL ${inRoot}`,
    `DEBUG   Migrate to rebased URL ${moved}`,
    `DEBUG Examining URL ${outside}`,
    `DEBUG   Do not rebase because it is not a subpath of ${join(dir0, 'opt')}`,
    `DEBUG Examining URL ${HTTPS}`,
    'DEBUG   Do not rebase because it is not a path',
  ]) {
    assert.ok(log.includes(line), `missing log line ${line}:\n${p.log()}`)
  }

  // the backup: <database_uri>-backup-<ISO local time>.sql, a loadable SQL dump of the
  // database taken once the new root was stored and before the URLs moved
  assert.match(backupPath, new RegExp(`^${join(dir1, 'proxy.db')}-backup-\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{6}\\.sql$`))
  assert.equal(backups(dir1), [backupPath.slice(dir1.length + 1)], 'one backup, no temporary file left')
  const dump = readFileSync(backupPath, 'utf8')
  assert.match(dump, 'CREATE TABLE')
  assert.match(dump, 'INSERT INTO')
  const copy = new DatabaseSync(':memory:')
  copy.exec(dump)
  assert.equal(
    (copy.prepare('SELECT url FROM software17 ORDER BY rowid').all() as { url: string }[]).map((r) => r.url),
    urls,
  )
  assert.is((copy.prepare("SELECT value FROM config17 WHERE name = 'local_software_release_root'").get() as { value: string }).value, join(dir1, 'opt'))
  copy.close()
  await stop(p)

  // same root again: nothing to do, no second backup
  p = await start({ dir: dir1, root: join(dir1, 'opt') })
  assert.equal((await seen(p)).software, expected)
  assert.not.match(p.log(), 'Rebase URLs')
  assert.is(backups(dir1).length, 1)
})

t('89 91: without a configured root nothing is stored; setting a first root rebases nothing, as every path is under /', async () => {
  const dir = tempDir('slapos-rebase-')
  const url = join(dir, 'opt', 'soft', 'software.cfg')
  let p = await start({ dir })
  await supply(p, url)
  await stop(p)
  assert.is(dbRows(p.dbPath).root, undefined, 'the original writes no config row for the default root')

  const root = join(dir, 'opt')
  p = await start({ dir, root })
  assert.equal((await seen(p)).software, [url])
  assert.ok(messages(p).includes(`INFO Do not rebase any URLs because ${root} is a subpath of /`), p.log())
  await stop(p)
  assert.is(dbRows(p.dbPath).root, root)
  assert.equal(backups(dir), [])
})

t('91: no rebase when the new root is a sub-path or a super-path of the old one', async () => {
  const dir = tempDir('slapos-rebase-')
  const url = join(dir, 'opt', 'soft', 'software.cfg')
  let p = await start({ dir, root: join(dir, 'opt') })
  await format(p, 1)
  await supply(p, url)
  const id = await request(p, url, 'MyInstance')
  await stop(p)

  const check = async (root: string, line: string) => {
    p = await start({ dir, root })
    const s = await seen(p)
    assert.equal(s.software, [url])
    assert.is(s.partitions[id], url)
    assert.ok(messages(p).includes(line), `missing ${line}:\n${p.log()}`)
    assert.not.match(p.log(), 'Backuping database')
    await stop(p)
    assert.is(dbRows(p.dbPath).root, root, 'the new root is stored all the same')
    assert.equal(backups(dir), [])
  }
  await check(join(dir, 'opt', 'soft'), `INFO Do not rebase any URLs because ${join(dir, 'opt', 'soft')} is a subpath of ${join(dir, 'opt')}`)
  await check(dir, `INFO Do not rebase any URLs because ${dir} is a superpath of ${join(dir, 'opt', 'soft')}`)
  // the same directory written differently is a sub-path too
  await check(`${dir}/`, `INFO Do not rebase any URLs because ${dir}/ is a subpath of ${dir}`)
})

t('92: a path whose old file exists while the new one does not is kept; when both exist it is rebased', async () => {
  const base = tempDir('slapos-rebase-')
  const old = file(join(base, '0', 'opt', 'soft', 'software.cfg'))
  const next = join(base, '1', 'opt', 'soft', 'software.cfg')
  mkdirSync(join(base, '1'))
  const dir = join(base, 'db')
  mkdirSync(dir)
  let p = await start({ dir, root: join(base, '0', 'opt') })
  await format(p, 1)
  await supply(p, old)
  const id = await request(p, old, 'MyInstance')
  await stop(p)

  p = await start({ dir, root: join(base, '1', 'opt') })
  let s = await seen(p)
  assert.equal(s.software, [old])
  assert.is(s.partitions[id], old)
  assert.ok(messages(p).includes(`DEBUG   Do not rebase because it refers to an existing file but ${next} does not`), p.log())
  assert.is(backups(dir).length, 1, 'the rebase ran (backup made), it only kept that URL')
  await stop(p)

  // a second database in the same situation, but the new file exists too
  const dir2 = join(base, 'db2')
  mkdirSync(dir2)
  p = await start({ dir: dir2, root: join(base, '0', 'opt') })
  await format(p, 1)
  await supply(p, old)
  const id2 = await request(p, old, 'MyInstance')
  await stop(p)
  file(next)
  p = await start({ dir: dir2, root: join(base, '1', 'opt') })
  s = await seen(p)
  assert.equal(s.software, [next])
  assert.is(s.partitions[id2], next)
  assert.equal(dbRows(p.dbPath).software, [next])
})

t('93: five successive moves rebase each time (root from [slapproxy], [slapos] or the command line)', async () => {
  const base = tempDir('slapos-rebase-')
  let dir = join(base, '0')
  mkdirSync(dir)
  let url = join(dir, 'opt', 'soft', 'software.cfg')
  let p = await start({ dir, root: join(dir, 'opt') })
  await format(p, 1)
  await supply(p, url)
  const id = await request(p, url, 'MyInstance')
  await stop(p)
  for (let i = 1; i <= 5; i++) {
    const next = join(base, String(i))
    renameSync(dir, next)
    dir = next
    const root = join(dir, 'opt')
    // the key is read from [slapproxy] or [slapos]; the command line wins over the file
    const how: Start[] = [
      { dir, root },
      { dir, slaposRoot: root },
      { dir, root: '/nowhere', args: ['--local-software-release-root', root] },
      { dir, root },
      { dir, slaposRoot: root },
    ]
    p = await start(how[i - 1]!)
    url = join(root, 'soft', 'software.cfg')
    const s = await seen(p)
    assert.equal(s.software, [url], `move ${i}`)
    assert.is(s.partitions[id], url, `move ${i}`)
    assert.ok(messages(p).includes(`INFO New root path: ${root}`), p.log())
    await stop(p)
    const rows = dbRows(p.dbPath)
    assert.is(rows.root, root)
    assert.equal(rows.software, [url])
    assert.is(backups(dir).length, i, 'one backup per move')
  }
})

t('89: a backup that cannot be written stops the start with one line and changes nothing', async () => {
  const dir = tempDir('slapos-rebase-')
  // the database file name leaves room for -wal and -shm but not for the backup suffix
  const db = join(dir, 'x'.repeat(230))
  const url = join(dir, 'opt', 'software.cfg')
  let p = await start({ dir, root: join(dir, 'opt'), args: ['--database-uri', db] })
  await supply(p, url)
  await stop(p)

  const r = slapos(['proxy', 'start', '--cfg', p.cfgPath, '--database-uri', db, '--local-software-release-root', join(dir, 'new')])
  assert.is(r.code, 1, r.stderr)
  assert.match(r.stderr, /ERROR cannot write the backup \S+-backup-\S+\.sql before rebasing software release URLs: ENAMETOOLONG: name too long \(check /)
  assert.is(r.stderr.split('\n').filter((l) => l.includes(' ERROR ')).length, 1, r.stderr)
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace')
  const rows = dbRows(db)
  assert.is(rows.root, join(dir, 'opt'), 'the new root was not stored')
  assert.equal(rows.software, [url])

  // started again with the old root it serves as before
  p = await start({ dir, root: join(dir, 'opt'), args: ['--database-uri', db] })
  assert.equal((await seen(p)).software, [url])
})

t.run()
