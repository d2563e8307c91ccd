import { describe, expect, it } from 'vitest'
import {
  formatBytes,
  formatDate,
  formatDuration,
  formatNumber,
  formatPercent,
  isActive,
  isTerminal,
  queuePlace,
  statusType,
} from '../../src/lib/format'

describe('format', () => {
  it('shows a dash for missing values', () => {
    for (const f of [formatDate, formatDuration, formatBytes, formatPercent, formatNumber]) {
      expect(f(null)).toBe('—')
    }
    expect(formatDate('not a date')).toBe('—')
  })

  it('formats dates with year, day and minute', () => {
    const text = formatDate('2026-03-04T05:06:00Z')
    expect(text).toMatch(/2026/)
    expect(text).toMatch(/\d{2}:06/)
  })

  it('formats durations from milliseconds to hours', () => {
    expect(formatDuration(0.25)).toBe('250 ms')
    expect(formatDuration(4.25)).toBe('4.3 s')
    expect(formatDuration(125)).toBe('2m 05s')
    expect(formatDuration(3 * 3600 + 7 * 60)).toBe('3h 07m')
  })

  it('formats sizes in binary units', () => {
    expect(formatBytes(512)).toBe('512 B')
    expect(formatBytes(1536)).toBe('1.5 KB')
    expect(formatBytes(5 * 1024 ** 3)).toBe('5.0 GB')
  })

  it('formats fractions and numbers', () => {
    expect(formatPercent(0.9234)).toBe('92.3 %')
    expect(formatPercent(0.5, 0)).toBe('50 %')
    expect(formatNumber(3)).toBe('3')
    expect(formatNumber(0.123456, 3)).toBe('0.123')
    expect(formatNumber(0.00001)).toBe('1.00e-5')
    expect(formatNumber(123456.7)).toBe('1.23e+5')
  })

  it('maps statuses to tag types and phases', () => {
    expect(statusType('finished')).toBe('success')
    expect(statusType('FAILED')).toBe('danger')
    expect(statusType('online')).toBe('success')
    expect(statusType('something-else')).toBe('info')
    expect(isTerminal('stopped')).toBe(true)
    expect(isTerminal('running')).toBe(false)
    expect(isActive('pending')).toBe(true)
    expect(isActive('finished')).toBe(false)
  })
})

describe('the run queue', () => {
  it('shows a queued run\'s place, and nothing for other runs', () => {
    expect(queuePlace({ status: 'queued', queue_position: 2 })).toBe('#2 in queue')
    expect(queuePlace({ status: 'queued', queue_position: null })).toBe('')
    expect(queuePlace({ status: 'running', queue_position: null })).toBe('')
    expect(queuePlace(null)).toBe('')
  })

  it('counts a queued run as active and an interrupted one as ended', () => {
    expect(isActive('queued')).toBe(true)
    expect(isTerminal('queued')).toBe(false)
    expect(isTerminal('interrupted')).toBe(true)
    expect(statusType('interrupted')).toBe('warning')
  })
})
