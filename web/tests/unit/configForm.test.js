import { describe, expect, it } from 'vitest'
import {
  FIELDS,
  FORM_SECTIONS,
  KNOWN_FIELDS,
  buildConfig,
  defaultRunName,
  fieldHelp,
  fieldLabel,
  fieldName,
  formRules,
  mapValidationErrors,
  mergeConfig,
  normProblem,
  optionLabel,
  pickSections,
  privacyProblem,
  uiStateFor,
} from '../../src/lib/configForm'
import { SCHEMA, check } from './schema'

function formOf(overrides = {}) {
  const form = {
    name: 'run',
    federated: { num_clients: 4, strategy: 'FedAvg', rounds: 5, min_train_clients: 2 },
    model: { name: 'resnet18', norm: 'batch' },
    privacy: { mode: 'none', noise_multiplier: 1, target_epsilon: null },
    compression: { topk: 0.1 },
  }
  for (const [section, values] of Object.entries(overrides)) Object.assign(form[section], values)
  return form
}

describe('labels', () => {
  it('use the form’s wording where it has one, else the schema title', () => {
    expect(fieldLabel(SCHEMA, 'federated.num_clients')).toBe('Hospitals')
    expect(fieldLabel(SCHEMA, 'training.learning_rate')).toBe('Learning rate')
    expect(fieldLabel(SCHEMA, 'federated.rounds')).toBe('Rounds')
  })

  it('name a key in messages more fully where the label is short', () => {
    expect(fieldName(SCHEMA, 'federated.min_train_clients')).toBe('Min. training hospitals')
    expect(fieldName(SCHEMA, 'federated.rounds')).toBe('Rounds')
  })

  it('take help from the schema description', () => {
    expect(fieldHelp(SCHEMA, 'privacy.target_epsilon')).toBe('epsilon to calibrate the noise for')
  })

  it('show options by their form names', () => {
    expect(optionLabel('model.name', 'cancer_cnn')).toBe('Small CNN (fast)')
    expect(optionLabel('training.optimizer', 'sgd')).toBe('SGD')
    expect(optionLabel('compression.quant_bits', 8)).toBe('8 bits')
    expect(optionLabel('compression.quant_bits', 'off')).toBe('Off (32-bit floats)')
    expect(optionLabel('federated.strategy', 'FedAvg')).toBe('FedAvg')
  })

  it('cover every field the form shows, and only keys of the form’s sections', () => {
    for (const path of Object.keys(FIELDS)) expect(FORM_SECTIONS).toContain(path.split('.')[0])
    expect(KNOWN_FIELDS.has('name')).toBe(true)
    expect(KNOWN_FIELDS.has('federated.strategy')).toBe(true)
  })
})

describe('configs', () => {
  const defaults = {
    federated: { rounds: 5, strategy: 'FedAvg' },
    privacy: { mode: 'none' },
    api: { secret_key: 'x' },
  }

  it('picks the form’s sections as deep copies', () => {
    const picked = pickSections(defaults)
    expect(Object.keys(picked)).toEqual(FORM_SECTIONS)
    expect(picked.api).toBeUndefined()
    picked.federated.rounds = 9
    expect(defaults.federated.rounds).toBe(5)
  })

  it('overlays a partial config on the defaults', () => {
    const merged = mergeConfig(defaults, { federated: { rounds: 7 }, bogus: { x: 1 } })
    expect(merged.federated).toEqual({ rounds: 7, strategy: 'FedAvg' })
    expect(merged.bogus).toBeUndefined()
  })

  it('derives the form’s switches from a config', () => {
    expect(uiStateFor({ privacy: { target_epsilon: 3 }, compression: { topk: 0.1 } })).toEqual({
      calibrateBy: 'target',
      topkOn: true,
    })
    expect(uiStateFor({})).toEqual({ calibrateBy: 'noise', topkOn: false })
  })

  it('drops what the switches turn off', () => {
    const form = formOf({ privacy: { mode: 'sample', noise_multiplier: 1.1, target_epsilon: 8 } })
    const byNoise = buildConfig(form, { calibrateBy: 'noise', topkOn: false })
    expect(byNoise.privacy).toMatchObject({ noise_multiplier: 1.1, target_epsilon: null })
    expect(byNoise.compression.topk).toBeNull()
    const byTarget = buildConfig(form, { calibrateBy: 'target', topkOn: true })
    expect(byTarget.privacy).toMatchObject({ noise_multiplier: null, target_epsilon: 8 })
    expect(byTarget.compression.topk).toBe(0.1)
    expect(byTarget.name).toBeUndefined()
  })

  it('names a fresh run after the minute', () => {
    expect(defaultRunName(new Date(2026, 0, 5, 9, 7))).toBe('run-20260105-0907')
  })
})

describe('formRules', () => {
  it('derives number rules from the schema for the form’s numeric keys only', () => {
    const rules = formRules(SCHEMA, formOf())
    expect(check(rules['federated.rounds'], 0)).toBe('Rounds must be at least 1')
    expect(rules['federated.strategy']).toBeUndefined()
    expect(rules['compression.quant_bits']).toBeUndefined()
  })

  it('keeps the minimum hospitals at or below the number of hospitals', () => {
    const rules = formRules(SCHEMA, formOf({ federated: { num_clients: 2 } }))
    expect(check(rules['federated.min_train_clients'], 3)).toBe(
      'At most 2: cannot exceed the number of hospitals',
    )
    expect(check(rules['federated.min_train_clients'], 2)).toBeNull()
  })

  it('checks normalisation and strategy against privacy', () => {
    const plain = formOf()
    expect(normProblem(plain)).toBeNull()
    const dp = formOf({ privacy: { mode: 'sample' } })
    expect(normProblem(dp)).toMatch(/GroupNorm/)
    expect(check(formRules(SCHEMA, dp)['model.norm'], 'batch')).toMatch(/GroupNorm/)
    expect(privacyProblem(dp)).toBeNull()
    dp.federated.strategy = 'FedProx'
    expect(privacyProblem(dp)).toMatch(/proximal term is lost/)
  })
})

describe('mapValidationErrors', () => {
  it('puts a key’s error on its field', () => {
    const { fields, general } = mapValidationErrors([
      { loc: ['body', 'config', 'training', 'optimizer'], msg: "Input should be 'adam' or 'sgd'" },
      { loc: ['body', 'name'], msg: 'String should have at most 200 characters' },
    ])
    expect(fields['training.optimizer']).toMatch(/adam/)
    expect(fields.name).toMatch(/200/)
    expect(general).toEqual([])
  })

  it('lists unknown keys as general errors', () => {
    const { fields, general } = mapValidationErrors([
      { loc: ['body', 'config', 'federated', 'roundz'], type: 'extra_forbidden', msg: 'x' },
    ])
    expect(fields).toEqual({})
    expect(general[0]).toMatch(/^federated\.roundz: unknown setting/)
  })

  it('puts cross-key errors on every field they name', () => {
    const section = mapValidationErrors([
      {
        loc: ['body', 'config', 'federated'],
        msg: 'Value error, min_train_clients (5) exceeds num_clients (4)',
      },
    ])
    expect(Object.keys(section.fields).sort()).toEqual([
      'federated.min_train_clients',
      'federated.num_clients',
    ])
    expect(section.fields['federated.num_clients']).toBe('min_train_clients (5) exceeds num_clients (4)')
    const whole = mapValidationErrors([
      { loc: ['body', 'config'], msg: 'privacy.mode sample needs model.norm group' },
    ])
    expect(Object.keys(whole.fields).sort()).toEqual(['model.norm', 'privacy.mode'])
  })

  it('accepts a plain message', () => {
    expect(mapValidationErrors('Bad request').general).toEqual(['Bad request'])
  })
})
