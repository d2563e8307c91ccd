import { describe, expect, it } from 'vitest'
import {
  clientDevice,
  clientMetric,
  hospitalSeries,
  parseEvent,
  withNote,
} from '../../src/lib/runProgress'

describe('clientMetric', () => {
  it('accepts the usual spellings of a metric', () => {
    expect(clientMetric({ metrics: { accuracy: 0.8 } }, 'accuracy')).toBe(0.8)
    expect(clientMetric({ metrics: { eval_loss: 0.3 } }, 'loss')).toBe(0.3)
    expect(clientMetric({ metrics: {} }, 'loss')).toBeNull()
    expect(clientMetric(null, 'loss')).toBeNull()
  })

  it('treats a negative AUC as undefined', () => {
    expect(clientMetric({ metrics: { auc: -1 } }, 'auc')).toBeNull()
  })
})

describe('hospitalSeries', () => {
  it('draws one series per hospital, evaluate replies first, in natural order', () => {
    const rows = [
      { hospital: 'hospital-10', round: 1, phase: 'evaluate', metrics: { accuracy: 0.6 } },
      { hospital: 'hospital-2', round: 2, phase: 'evaluate', metrics: { accuracy: 0.7 } },
      { hospital: 'hospital-2', round: 1, phase: 'train', metrics: { accuracy: 0.4 } },
      { hospital: 'hospital-2', round: 1, phase: 'evaluate', metrics: { accuracy: 0.5 } },
      { hospital: 'hospital-2', round: 3, phase: 'train', metrics: { accuracy: 0.9 } },
      { hospital: 'hospital-3', round: 1, phase: 'evaluate', metrics: {} },
    ]
    expect(hospitalSeries(rows, 'accuracy')).toEqual([
      { name: 'hospital-2', points: [[1, 0.5], [2, 0.7], [3, 0.9]] },
      { name: 'hospital-10', points: [[1, 0.6]] },
    ])
  })
})

describe('parseEvent', () => {
  it('reads JSON payloads and refuses the rest', () => {
    expect(parseEvent('{"round": 2}')).toEqual({ round: 2 })
    expect(parseEvent('')).toEqual({})
    expect(parseEvent('null')).toEqual({})
    expect(parseEvent('{oops')).toBeNull()
  })
})

describe('clientDevice', () => {
  it('reads the device a hospital reported, and nothing else', () => {
    expect(clientDevice({ metrics: { device: 'cuda', accuracy: 0.9 } })).toBe('cuda')
    expect(clientDevice({ metrics: { accuracy: 0.9 } })).toBeNull()
    expect(clientDevice({ metrics: { device: 1 } })).toBeNull()
    expect(clientDevice({ status: 'failed', metrics: null })).toBeNull()
    expect(clientDevice(null)).toBeNull()
  })
})

describe('withNote', () => {
  it('adds a note once, and ignores payloads without a message', () => {
    const one = withNote([], { message: 'round 1: hospital-0 holds one class' })
    expect(one).toEqual(['round 1: hospital-0 holds one class'])
    expect(withNote(one, { message: 'round 1: hospital-0 holds one class' })).toBe(one)
    expect(withNote(one, { message: '' })).toBe(one)
    expect(withNote(one, {})).toBe(one)
    expect(withNote(one, null)).toBe(one)
    expect(withNote(one, { message: 'budget spent' })).toHaveLength(2)
  })
})
