import { describe, expect, it } from 'vitest'
import {
  balanceText,
  confusionText,
  kindType,
  operatingRows,
  reliabilityOption,
  siteRows,
} from '../../src/lib/evaluation'

describe('reliabilityOption', () => {
  it('draws only the bins holding images, with the diagonal', () => {
    const option = reliabilityOption({
      kind: 'positive class',
      bins: [
        { lower: 0, upper: 0.1, count: 4, confidence: 0.05, observed: 0.25 },
        { lower: 0.1, upper: 0.2, count: 0, confidence: null, observed: null },
        { lower: 0.9, upper: 1, count: 6, confidence: 0.95, observed: 0.5 },
      ],
    })
    expect(option.series[0].data).toEqual([
      [0.05, 0.25],
      [0.95, 0.5],
    ])
    expect(option.series[1].data).toEqual([
      [0.05, 0.05],
      [0.95, 0.95],
    ])
    expect(option.series[2].data).toEqual([
      [0, 0],
      [1, 1],
    ])
    expect(option.xAxis.name).toContain('positive class')
    expect(option.tooltip.formatter({ seriesIndex: 0, dataIndex: 1, value: [0.95, 0.5] })).toBe(
      '90%–100%: 50.0 % observed, 6 images',
    )
  })
})

describe('operating points and sites', () => {
  it('formats operating points with their thresholds', () => {
    const rows = operatingRows([
      { name: 'sensitivity at 95% specificity', threshold: 0.7312, sensitivity: 0.8, specificity: 0.951 },
    ])
    expect(rows).toEqual([
      {
        name: 'Sensitivity at 95% specificity',
        threshold: '0.731',
        sensitivity: '80.0 %',
        specificity: '95.1 %',
      },
    ])
    expect(operatingRows(null)).toEqual([])
  })

  it('writes confusion matrices and class balance compactly', () => {
    expect(confusionText([[5, 1], [0, 4]])).toBe('TN 5 · FP 1 · FN 0 · TP 4')
    expect(confusionText([[1, 0, 0], [0, 2, 1], [0, 0, 3]])).toBe('1 0 0 | 0 2 1 | 0 0 3')
    expect(confusionText(null)).toBe('—')
    expect(balanceText([1200, 800], ['no', 'yes'])).toBe('1,200 / 800 (40% yes)')
    expect(balanceText([1, 2], ['only one'])).toBe('—')
  })

  it('flags the worst site and shows a failed one with its error', () => {
    const rows = siteRows({
      class_names: ['no', 'yes'],
      sites: [
        { hospital: 'a', status: 'ok', num_examples: 10, accuracy: 0.9, auc: 0.95,
          confusion_matrix: [[5, 1], [0, 4]], held_out_counts: [6, 4], train_counts: [60, 40], worst: false },
        { hospital: 'b', status: 'ok', num_examples: 10, accuracy: 0.6, auc: null,
          confusion_matrix: [[3, 3], [1, 3]], held_out_counts: [6, 4], train_counts: [], worst: true },
        { hospital: 'c', status: 'failed', num_examples: 0, accuracy: null, auc: null,
          confusion_matrix: null, held_out_counts: [], train_counts: [], error: 'timed out', worst: false },
      ],
    })
    expect(rows.map((r) => [r.hospital, r.worst, r.failed])).toEqual([
      ['a', false, false],
      ['b', true, false],
      ['c', false, true],
    ])
    expect(rows[0]).toMatchObject({ accuracy: '90.0 %', auc: '0.950', training: '60 / 40 (40% yes)' })
    expect(rows[1].auc).toBe('—')
    expect(rows[2].confusion).toBe('timed out')
  })

  it('marks mistakes in red', () => {
    expect(kindType('false positive')).toBe('danger')
    expect(kindType('misclassified')).toBe('danger')
    expect(kindType('true negative')).toBe('success')
  })
})
