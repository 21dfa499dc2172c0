// MD5 (RFC 1321) of short texts, in JavaScript: a software release's directory is the md5 of
// its URL (grid.md §2.1), needed by every `node instance` run. Loading node:crypto for it
// cost ~10 ms of start-up and ~2.3 MB of memory; hashing a URL here takes microseconds.
// Not for large data nor for anything that needs a secure hash.

// per-round left rotations, and the sine-derived constants K[i] = floor(|sin(i + 1)| * 2^32)
const SHIFTS = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21]
const K = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) >>> 0)

/** Lowercase hex md5 of the UTF-8 bytes of `text`. */
export function md5hex(text: string): string {
  const data = new TextEncoder().encode(text)
  // message + 0x80 + zero padding + 64-bit little-endian bit length, in 64-byte blocks
  const blocks = Math.ceil((data.length + 9) / 64)
  const bytes = new Uint8Array(blocks * 64)
  bytes.set(data)
  bytes[data.length] = 0x80
  const view = new DataView(bytes.buffer)
  const bits = data.length * 8
  view.setUint32(bytes.length - 8, bits >>> 0, true)
  view.setUint32(bytes.length - 4, Math.floor(bits / 2 ** 32), true)

  let a0 = 0x67452301
  let b0 = 0xefcdab89
  let c0 = 0x98badcfe
  let d0 = 0x10325476
  const m = new Uint32Array(16)
  for (let block = 0; block < blocks; block++) {
    for (let j = 0; j < 16; j++) m[j] = view.getUint32(block * 64 + j * 4, true)
    let a = a0
    let b = b0
    let c = c0
    let d = d0
    for (let i = 0; i < 64; i++) {
      let f: number
      let g: number
      const round = i >> 4
      if (round === 0) {
        f = (b & c) | (~b & d)
        g = i
      } else if (round === 1) {
        f = (d & b) | (~d & c)
        g = (5 * i + 1) & 15
      } else if (round === 2) {
        f = b ^ c ^ d
        g = (3 * i + 5) & 15
      } else {
        f = c ^ (b | ~d)
        g = (7 * i) & 15
      }
      const sum = (a + f + K[i]! + m[g]!) >>> 0
      const s = SHIFTS[round * 4 + (i & 3)]!
      a = d
      d = c
      c = b
      b = (b + ((sum << s) | (sum >>> (32 - s)))) >>> 0
    }
    a0 = (a0 + a) >>> 0
    b0 = (b0 + b) >>> 0
    c0 = (c0 + c) >>> 0
    d0 = (d0 + d) >>> 0
  }
  let hex = ''
  for (const word of [a0, b0, c0, d0]) {
    for (let k = 0; k < 4; k++) hex += ((word >>> (8 * k)) & 0xff).toString(16).padStart(2, '0')
  }
  return hex
}
