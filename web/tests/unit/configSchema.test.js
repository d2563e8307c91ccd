import { describe, expect, it } from 'vitest'
import {
  bounds,
  enumOf,
  fieldSchema,
  isNumeric,
  numberRules,
  schemaHelp,
  schemaLabel,
  sentenceCase,
} from '../../src/lib/configSchema'
import { SCHEMA, check } from './schema'

describe('fieldSchema', () => {
  it('follows $refs to a key', () => {
    expect(fieldSchema(SCHEMA, 'federated.rounds')).toMatchObject({ type: 'integer', minimum: 1 })
  })

  it('unwraps optional keys and keeps their title and description', () => {
    expect(fieldSchema(SCHEMA, 'privacy.target_epsilon')).toEqual({
      type: 'number',
      exclusiveMinimum: 0,
      nullable: true,
      title: 'Target Epsilon',
      description: 'epsilon to calibrate the noise for',
    })
  })

  it('is null for unknown keys or without a schema', () => {
    expect(fieldSchema(SCHEMA, 'federated.nope')).toBeNull()
    expect(fieldSchema(SCHEMA, 'nope.rounds')).toBeNull()
    expect(fieldSchema(null, 'federated.rounds')).toBeNull()
  })
})

describe('enumOf', () => {
  it('lists the schema enum in its order', () => {
    expect(enumOf(SCHEMA, 'federated.strategy')).toEqual(['FedAvg', 'FedProx', 'Krum'])
    expect(enumOf(SCHEMA, 'compression.quant_bits')).toEqual([4, 8])
  })

  it('is empty when the schema has none (no list is kept in the web code)', () => {
    expect(enumOf(SCHEMA, 'federated.rounds')).toEqual([])
    expect(enumOf(null, 'federated.strategy')).toEqual([])
  })
})

describe('isNumeric and bounds', () => {
  it('tells free numbers from enumerations', () => {
    expect(isNumeric(SCHEMA, 'federated.rounds')).toBe(true)
    expect(isNumeric(SCHEMA, 'privacy.target_epsilon')).toBe(true)
    expect(isNumeric(SCHEMA, 'compression.quant_bits')).toBe(false)
    expect(isNumeric(SCHEMA, 'federated.strategy')).toBe(false)
    expect(isNumeric(SCHEMA, 'federated.nope')).toBe(false)
  })

  it('takes inclusive or exclusive bounds, unbounded otherwise', () => {
    expect(bounds(SCHEMA, 'federated.rounds')).toEqual({ min: 1, max: Infinity })
    expect(bounds(SCHEMA, 'federated.trim_beta')).toEqual({ min: 0, max: 0.5 })
    expect(bounds(SCHEMA, 'training.seed')).toEqual({ min: -Infinity, max: Infinity })
    expect(bounds(null, 'training.seed')).toEqual({ min: -Infinity, max: Infinity })
  })
})

describe('labels and help', () => {
  it('puts titles in sentence case', () => {
    expect(sentenceCase('Learning Rate')).toBe('Learning rate')
    expect(sentenceCase('')).toBe('')
    expect(schemaLabel(SCHEMA, 'training.learning_rate')).toBe('Learning rate')
  })

  it('falls back to the key name without a title', () => {
    expect(schemaLabel(SCHEMA, 'compression.topk')).toBe('Topk')
    expect(schemaLabel(null, 'training.weight_decay')).toBe('Weight decay')
  })

  it('reads the description as help', () => {
    expect(schemaHelp(SCHEMA, 'federated.num_clients')).toBe('hospitals')
    expect(schemaHelp(SCHEMA, 'federated.rounds')).toBe('')
  })
})

describe('numberRules', () => {
  const rules = (path, options) => numberRules(SCHEMA, path, 'Value', options)

  it('requires a value unless told otherwise', () => {
    expect(check(rules('federated.rounds'), null)).toBe('Value is required')
    expect(check(rules('federated.rounds', { required: false }), '')).toBeNull()
  })

  it('checks type and every kind of bound', () => {
    expect(check(rules('federated.rounds'), 'x')).toBe('Value must be a number')
    expect(check(rules('federated.rounds'), 2.5)).toBe('Value must be a whole number')
    expect(check(rules('federated.rounds'), 0)).toBe('Value must be at least 1')
    expect(check(rules('training.learning_rate'), 0)).toBe('Value must be greater than 0')
    expect(check(rules('compression.topk'), 1.5)).toBe('Value must be at most 1')
    expect(check(rules('training.momentum'), 1)).toBe('Value must be less than 1')
    expect(check(rules('training.momentum'), 0.9)).toBeNull()
  })

  it('adds the caller’s own check', () => {
    const extra = (n) => (n > 3 ? 'too many' : null)
    expect(check(rules('federated.rounds', { extra }), 4)).toBe('too many')
    expect(check(rules('federated.rounds', { extra }), 3)).toBeNull()
  })
})
