import type t from 'tap'

/** A test as tap hands it to a subtest's function, plugins (`testdir`…) included. */
export type Tap = Parameters<Parameters<typeof t.test>[0]>[0]
