import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { HashingStream, chainIds, digestHex, isDigest, sha256Hex } from '../src/layers/digest.js'
import { formatPaxTime, parsePaxTime } from '../src/layers/pax.js'

const A = 'sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb'
const B = 'sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d'
const C = 'sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6'

t.test('sha256Hex', async (t) => {
  t.equal(`sha256:${sha256Hex('a')}`, A)
  t.equal(sha256Hex(Buffer.from('b')), digestHex(B))
})

t.test('chainIds against values computed by hand with sha256sum', async (t) => {
  t.same(chainIds([]), [])
  t.same(chainIds([A]), [A], 'ChainID of one layer is its DiffID')
  t.same(chainIds([A, B, C]), [
    A,
    'sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676',
    'sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106'
  ])
  t.not(chainIds([B, A])[1], chainIds([A, B])[1], 'order matters')
})

t.test('isDigest and digestHex', async (t) => {
  t.ok(isDigest(A))
  t.notOk(isDigest(A.toUpperCase()))
  t.notOk(isDigest(A.slice(7)))
  t.notOk(isDigest(`${A}0`))
  t.notOk(isDigest('sha512:' + A.slice(7)))
  t.notOk(isDigest(`sha256:../../${A.slice(20)}`))
  t.throws(() => digestHex('sha256:xyz'))
})

t.test('HashingStream passes data through, counts it and keeps the tail', async (t) => {
  const h = new HashingStream(4)
  const out: Buffer[] = []
  await pipeline(Readable.from([Buffer.from('ab'), Buffer.from('cdef'), Buffer.from('g')]), h,
    new Writable({ write (c: Buffer, _e, cb) { out.push(c); cb() } }))
  t.equal(Buffer.concat(out).toString(), 'abcdefg')
  t.equal(h.bytes, 7)
  t.equal(h.digest(), `sha256:${sha256Hex('abcdefg')}`)
  t.equal(h.tail().toString(), 'defg')
})

t.test('PAX times keep nanoseconds, negative ones included', async (t) => {
  t.same(parsePaxTime('1700000000.123456789'), [1_700_000_000, 123_456_789])
  t.same(parsePaxTime('1700000000.5'), [1_700_000_000, 500_000_000])
  t.same(parsePaxTime('1700000000'), [1_700_000_000, 0])
  t.same(parsePaxTime('-1.25'), [-2, 750_000_000])
  t.equal(parsePaxTime('soon'), undefined)
  for (const ts of [[1_700_000_000, 123_456_789], [5, 0], [-2, 750_000_000], [-3, 0]] as Array<[number, number]>) {
    t.same(parsePaxTime(formatPaxTime(ts)), ts, `round trip ${ts.join('.')}`)
  }
})
