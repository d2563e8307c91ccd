import { describe, expect, it } from 'vitest'
import {
  PRIVACY_PRESETS,
  SINGLE_CLASS_PRESET,
  applyPreset,
  nearestPreset,
  recipeWarnings,
} from '../../src/lib/recipes'
import { normProblem } from '../../src/lib/configForm'

function formOf(overrides = {}) {
  const form = {
    federated: {
      strategy: 'FedAvg',
      loss_correction: 'logit_adjustment',
      lr_decay: 'cosine',
      local_epochs: 1,
      rounds: 20,
    },
    training: { optimizer: 'adam', batch_size: 32 },
    model: { name: 'resnet18', norm: 'batch' },
    partition: { scheme: 'dirichlet' },
    privacy: { mode: 'none', target_epsilon: null },
  }
  for (const [section, values] of Object.entries(overrides)) Object.assign(form[section], values)
  return form
}

const keys = (form) => recipeWarnings(form).map((w) => w.key)

describe('recipe warnings', () => {
  it('say nothing about the recommended skew recipe', () => {
    expect(recipeWarnings(formOf())).toEqual([])
  })

  it('offer the single-class recipe to hospitals holding one class, then say nothing', () => {
    const form = formOf({ partition: { scheme: 'shards', classes_per_client: 1 } })
    const [warning] = recipeWarnings(form)
    expect(warning.preset).toBe(SINGLE_CLASS_PRESET)
    applyPreset(form, warning.preset)
    expect(form.federated.local_steps).toBe(1)
    expect(form.federated.rounds).toBe(80)
    expect(form.model.norm).toBe('group')
    expect(recipeWarnings(form)).toEqual([])
    form.federated.rounds = 30 // fewer rounds: still the recipe
    expect(recipeWarnings(form)).toEqual([])
    form.training.learning_rate = 0.1 // off the recipe: its plain cross-entropy is warned of too
    expect(keys(form)).toEqual(['partition.scheme', 'partition.classes_per_client'])
    expect(normProblem(form)).toBeNull()
  })

  it('warn about hospitals holding a single class, whatever the other recipes', () => {
    expect(keys(formOf({ partition: { scheme: 'shards', classes_per_client: 1 } }))).toEqual([
      'partition.classes_per_client',
    ])
    expect(keys(formOf({ partition: { scheme: 'shards', classes_per_client: 2 } }))).toEqual([])
    expect(keys(formOf({ partition: { scheme: 'dirichlet', alpha: 0.1 } }))).toEqual([
      'partition.alpha',
    ])
    expect(keys(formOf({ partition: { scheme: 'dirichlet', alpha: 0.5 } }))).toEqual([])
  })

  it('warn about label skew without a loss correction, not on IID or quantity skew', () => {
    const form = formOf({ federated: { strategy: 'FedAvg', loss_correction: 'none' } })
    expect(keys(form)).toEqual(['partition.scheme'])
    form.partition.scheme = 'quantity'
    expect(keys(form)).toEqual([])
    form.partition.scheme = 'iid'
    expect(keys(form)).toEqual([])
  })

  it('warn when SCAFFOLD is not trained with SGD', () => {
    const form = formOf({ federated: { strategy: 'SCAFFOLD' }, training: { optimizer: 'adam' } })
    expect(keys(form)).toContain('federated.strategy')
  })

  it('warn about DP with a large model, many epochs and small batches', () => {
    const form = formOf({
      privacy: { mode: 'sample', target_epsilon: 3 },
      federated: { strategy: 'FedAvg', local_epochs: 10, rounds: 10 },
    })
    expect(keys(form)).toEqual(['model.name', 'federated.local_epochs', 'training.batch_size'])
    const message = recipeWarnings(form).find((w) => w.key === 'federated.local_epochs').message
    expect(message).toMatch(/^100 local epochs/)
  })

  it('say nothing about a privacy preset', () => {
    const form = formOf({ privacy: { mode: 'sample' } })
    applyPreset(form, PRIVACY_PRESETS[3])
    expect(recipeWarnings(form)).toEqual([])
    expect(form.model.name).toBe('scatter_cnn')
    expect(form.privacy.target_epsilon).toBe(3)
    expect(normProblem(form)).toBeNull()
  })
})

describe('nearestPreset', () => {
  it('picks the preset ε nearest on a log scale, 3 without one', () => {
    expect(nearestPreset(null)).toBe(3)
    expect(nearestPreset(2)).toBe(3)
    expect(nearestPreset(1.2)).toBe(1)
    expect(nearestPreset(20)).toBe(8)
  })
})
