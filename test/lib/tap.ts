import type t from 'tap'

/** A test as tap hands it to a subtest's function, plugins (`testdir`…) included. */
export type Tap = Parameters<Parameters<typeof t.test>[0]>[0]

/** What a helper needs of a test: a place for its clean-up, run also when the test fails. */
export interface Teardownable { teardown (fn: () => unknown): void }
