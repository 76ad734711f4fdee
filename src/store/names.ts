import { randomInt } from 'node:crypto'

/**
 * Docker-style container names (`adjective_surname`): easier to type and tell apart than ids.
 */
const adjectives = [
  'admiring', 'agitated', 'amazing', 'bold', 'brave', 'busy', 'calm', 'clever', 'cool', 'crazy',
  'dazzling', 'determined', 'eager', 'elastic', 'epic', 'festive', 'focused', 'friendly', 'gallant',
  'gifted', 'happy', 'hopeful', 'jolly', 'keen', 'kind', 'laughing', 'loving', 'lucid', 'modest',
  'musing', 'nifty', 'optimistic', 'peaceful', 'pensive', 'quirky', 'relaxed', 'serene', 'sharp',
  'stoic', 'sweet', 'tender', 'trusting', 'upbeat', 'vibrant', 'wizardly', 'youthful', 'zealous'
]
const surnames = [
  'agnesi', 'babbage', 'bardeen', 'bell', 'bohr', 'curie', 'darwin', 'dijkstra', 'einstein',
  'euclid', 'euler', 'fermat', 'feynman', 'galileo', 'gauss', 'hamilton', 'hopper', 'hypatia',
  'kepler', 'knuth', 'lamarr', 'lamport', 'liskov', 'lovelace', 'mccarthy', 'meitner', 'newton',
  'noether', 'pascal', 'pike', 'ritchie', 'shannon', 'thompson', 'torvalds', 'turing', 'wozniak'
]

export function generateName (taken: (name: string) => boolean): string {
  for (let attempt = 0; ; attempt++) {
    const base = `${adjectives[randomInt(adjectives.length)]}_${surnames[randomInt(surnames.length)]}`
    const name = attempt < 10 ? base : `${base}${randomInt(1000)}`
    if (!taken(name)) return name
  }
}

const nameRe = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/

export function isValidName (name: string): boolean {
  return nameRe.test(name) && name.length <= 128
}
