import { describe, expect, it } from 'vitest'
import {
  connectedSettings,
  connectedSummary,
  hospitalsNeeded,
  registrationLabel,
  shortageWarning,
} from '../../src/lib/hospitals'

const HOSPITALS = [
  { name: 'north', registered: true, status: 'online' },
  { name: 'south', registered: true, status: 'offline' },
  { name: 'east', registered: true, status: 'never' },
  { name: 'hospital-0', registered: false, status: 'online' },
  { name: 'old', registered: false, status: 'offline', removed_at: '2026-01-01T00:00:00Z' },
]

describe('connected hospitals', () => {
  it('counts the registered hospitals and those online', () => {
    expect(connectedSummary(HOSPITALS)).toEqual({
      registered: 3,
      online: 1,
      names: ['north', 'south', 'east'],
    })
    expect(connectedSummary(null)).toEqual({ registered: 0, online: 0, names: [] })
  })

  it('expects every registered hospital and waits for those online', () => {
    expect(connectedSettings({ registered: 3, online: 2 })).toEqual({
      num_clients: 3,
      min_available_clients: 2,
      min_train_clients: 2,
      min_evaluate_clients: 2,
    })
    expect(connectedSettings({ registered: 0, online: 0 })).toMatchObject({
      num_clients: 1,
      min_train_clients: 1,
    })
  })

  it('warns when fewer are online than a round needs', () => {
    const federated = { min_available_clients: 2, min_train_clients: 3, min_evaluate_clients: 1 }
    expect(hospitalsNeeded(federated)).toBe(3)
    expect(shortageWarning({ registered: 3, online: 3 }, federated)).toBe('')
    expect(shortageWarning({ registered: 3, online: 1 }, federated)).toBe(
      'Only 1 is online of the 3 hospitals a round needs: the run waits until enough hospitals connect.',
    )
    expect(shortageWarning({ registered: 0, online: 0 }, federated)).toMatch(/No hospital is registered/)
  })

  it('labels registrations', () => {
    expect(HOSPITALS.map(registrationLabel)).toEqual([
      'registered',
      'registered',
      'registered',
      'not registered',
      'removed',
    ])
  })
})
