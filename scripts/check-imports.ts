// `make check`: the import graph of src/ has no circle. Every import counts (static, dynamic
// `import('./x.ts')`, `import type`): a module that needs another's types belongs beside it
// or below it, not above. Prints each circle found and exits 1.
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'

const ROOT = join(import.meta.dirname, '..', 'src')

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []))
}

const graph = new Map<string, string[]>()
for (const f of files(ROOT)) {
  const text = readFileSync(f, 'utf8')
  const deps = new Set<string>()
  for (const m of text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^\s*import\s+)'(\.{1,2}\/[^']+\.ts)'/gm)) {
    deps.add(relative(ROOT, normalize(join(dirname(f), m[1]!))))
  }
  graph.set(relative(ROOT, f), [...deps].sort())
}

// Tarjan's strongly connected components: every component of more than one module (or a
// module importing itself) is a circle
let index = 0
const indexes = new Map<string, number>()
const low = new Map<string, number>()
const stack: string[] = []
const onStack = new Set<string>()
const circles: string[][] = []
function visit(v: string): void {
  indexes.set(v, index)
  low.set(v, index)
  index++
  stack.push(v)
  onStack.add(v)
  for (const w of graph.get(v) ?? []) {
    if (!graph.has(w)) continue
    if (!indexes.has(w)) {
      visit(w)
      low.set(v, Math.min(low.get(v)!, low.get(w)!))
    } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, indexes.get(w)!))
  }
  if (low.get(v) === indexes.get(v)) {
    const component: string[] = []
    let w: string
    do {
      w = stack.pop()!
      onStack.delete(w)
      component.push(w)
    } while (w !== v)
    if (component.length > 1 || (graph.get(v) ?? []).includes(v)) circles.push(component.sort())
  }
}
for (const v of [...graph.keys()].sort()) if (!indexes.has(v)) visit(v)

/** One path around the circle through `from`, to show which imports close it. */
function loop(component: string[]): string[] {
  const inside = new Set(component)
  const from = component[0]!
  const seen = new Map<string, string>()
  const queue = [from]
  while (queue.length) {
    const v = queue.shift()!
    for (const w of graph.get(v) ?? []) {
      if (!inside.has(w)) continue
      if (w === from) {
        const path = [from]
        for (let x = v; x !== from; x = seen.get(x)!) path.splice(1, 0, x)
        return [...path, from]
      }
      if (!seen.has(w)) {
        seen.set(w, v)
        queue.push(w)
      }
    }
  }
  return component
}

if (circles.length) {
  for (const c of circles) console.log(`import circle of ${c.length} modules: ${loop(c).join(' -> ')}`)
  console.log('break it: move what both sides need into a module of its own, or pass it in')
  process.exitCode = 1
} else console.log(`imports ok (${graph.size} modules, no circle)`)
