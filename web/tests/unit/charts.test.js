import { describe, expect, it } from 'vitest'
import { confusionOption, epsilonOption, metricLineOption, roundCostOption } from '../../src/lib/charts'

describe('metricLineOption', () => {
  it('draws each series, dashed ones thinner, on a percent axis when asked', () => {
    const option = metricLineOption({
      title: 'Accuracy',
      metric: 'Accuracy',
      percent: true,
      maxRound: 5,
      series: [
        { name: 'Global', points: [[1, 0.5]] },
        { name: 'hospital-0', points: [[1, 0.4]], dashed: true },
      ],
    })
    expect(option.series.map((s) => s.lineStyle)).toEqual([
      { width: 3, type: 'solid' },
      { width: 1.5, type: 'dashed' },
    ])
    expect(option.yAxis).toMatchObject({ min: 0, max: 1 })
    expect(option.xAxis.max).toBe(5)
    expect(option.yAxis.axisLabel.formatter(0.25)).toBe('25%')
    expect(option.title.text).toBe('Accuracy')
  })
})

describe('roundCostOption', () => {
  it('shows duration and traffic in MB per round', () => {
    const option = roundCostOption([
      { round: 1, duration_s: 2.345, bytes_up: 1048576, bytes_down: 2097152 },
      { round: 2, duration_s: null, bytes_up: null, bytes_down: 0 },
    ])
    expect(option.xAxis.data).toEqual([1, 2])
    expect(option.series.map((s) => s.data)).toEqual([
      [2.35, null],
      [1, null],
      [2, 0],
    ])
  })
})

describe('epsilonOption', () => {
  it('marks the budget when there is one', () => {
    const rounds = [
      { round: 1, epsilon: 0.5 },
      { round: 2, epsilon: null },
      { round: 3, epsilon: 1.2 },
    ]
    expect(epsilonOption(rounds).series[0].data).toEqual([[1, 0.5], [3, 1.2]])
    expect(epsilonOption(rounds).series[0].markLine).toBeUndefined()
    expect(epsilonOption(rounds, 4).series[0].markLine.data).toEqual([{ yAxis: 4 }])
  })
})

describe('confusionOption', () => {
  it('lays out true classes as rows and names them', () => {
    const option = confusionOption([[5, 1], [2, 7]], ['normal', 'tumour'])
    expect(option.xAxis.data).toEqual(['normal', 'tumour'])
    expect(option.series[0].data).toEqual([[0, 0, 5], [1, 0, 1], [0, 1, 2], [1, 1, 7]])
    expect(option.visualMap.max).toBe(7)
    expect(confusionOption([[1]]).xAxis.data).toEqual(['class 0'])
  })
})
