/** Display helpers shared by the pages. */

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  hourCycle: 'h23',
})

export function formatDate(value) {
  if (!value) return '—'
  const date = new Date(value)
  return Number.isNaN(date.getTime()) ? '—' : dateTime.format(date)
}

export function formatDuration(seconds) {
  if (seconds == null || Number.isNaN(Number(seconds))) return '—'
  const s = Number(seconds)
  if (s < 1) return `${Math.round(s * 1000)} ms`
  if (s < 60) return `${s.toFixed(1)} s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`
}

export function formatBytes(bytes) {
  if (bytes == null) return '—'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let value = Number(bytes)
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit += 1
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`
}

export function formatPercent(value, digits = 1) {
  if (value == null || Number.isNaN(Number(value))) return '—'
  return `${(Number(value) * 100).toFixed(digits)} %`
}

export function formatNumber(value, digits = 4) {
  if (value == null || Number.isNaN(Number(value))) return '—'
  const n = Number(value)
  if (Number.isInteger(n)) return String(n)
  return Math.abs(n) >= 1000 || Math.abs(n) < 1e-3 ? n.toExponential(2) : n.toFixed(digits)
}

const STATUS_TYPES = {
  running: 'primary',
  started: 'primary',
  finished: 'success',
  completed: 'success',
  succeeded: 'success',
  ok: 'success',
  online: 'success',
  offline: 'info',
  failed: 'danger',
  error: 'danger',
  stopped: 'warning',
  stopping: 'warning',
  cancelled: 'warning',
  created: 'info',
  pending: 'info',
  queued: 'info',
  interrupted: 'warning',
}

/** Element Plus tag type for a run / client / hospital status. */
export function statusType(status) {
  return STATUS_TYPES[String(status || '').toLowerCase()] || 'info'
}

const TERMINAL_STATUSES = [
  'finished',
  'completed',
  'succeeded',
  'failed',
  'stopped',
  'cancelled',
  'interrupted',
]

export function isTerminal(status) {
  return TERMINAL_STATUSES.includes(String(status || '').toLowerCase())
}

/** "#2 in queue" for a queued run with its place, else "". */
export function queuePlace(run) {
  return run?.status === 'queued' && run.queue_position ? `#${run.queue_position} in queue` : ''
}

export function isActive(status) {
  return ['running', 'started', 'stopping', 'pending', 'queued'].includes(
    String(status || '').toLowerCase(),
  )
}
