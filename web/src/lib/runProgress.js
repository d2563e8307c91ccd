/**
 * Live state of one run: loads the run, its rounds and per-hospital results, then follows the
 * run's server-sent events (EventSource on /api/runs/{id}/events, cookie-authenticated).
 */
import { computed, onBeforeUnmount, reactive, ref } from 'vue'
import { api, links } from './api'
import { isTerminal } from './format'

const EVENT_TYPES = [
  'run_started',
  'round_started',
  'round_finished',
  'client_replied',
  'client_failed',
  'run_finished',
  'run_failed',
  'run_stopped',
  'run_queued',
  'run_admitted',
  'run_interrupted',
  'run_note',
]

const PHASE_ORDER = { train: 0, fit: 0, evaluate: 1 }

/** An event's JSON payload ({} when empty), or null when it is not JSON. */
export function parseEvent(data) {
  try {
    return JSON.parse(data || '{}') || {}
  } catch {
    return null
  }
}

function clientKey(row) {
  return `${row.round}|${row.hospital}|${row.phase}`
}

export function useRunProgress(runId) {
  const run = ref(null)
  const loading = ref(true)
  const error = ref('')
  const roundsByNumber = reactive(new Map())
  const clientsByKey = reactive(new Map())
  const currentRound = ref(null)
  const connection = ref('idle') // idle | connecting | live | closed | error
  const lastEventAt = ref(null)
  const notes = ref([]) // what the platform noted about the run, e.g. hospitals of one class
  let source = null

  const rounds = computed(() =>
    [...roundsByNumber.values()].sort((a, b) => a.round - b.round),
  )
  const clientRows = computed(() =>
    [...clientsByKey.values()].sort(
      (a, b) =>
        a.round - b.round ||
        (PHASE_ORDER[a.phase] ?? 2) - (PHASE_ORDER[b.phase] ?? 2) ||
        String(a.hospital).localeCompare(String(b.hospital)),
    ),
  )
  const roundsDone = computed(() =>
    rounds.value.length ? rounds.value[rounds.value.length - 1].round : (run.value?.rounds_done ?? 0),
  )
  const hospitals = computed(() =>
    [...new Set(clientRows.value.map((r) => r.hospital))].sort((a, b) =>
      String(a).localeCompare(String(b), undefined, { numeric: true }),
    ),
  )

  /** One row per hospital: its most recent reply (or failure) and its traffic over the run. */
  const hospitalStatus = computed(() => {
    const latest = new Map()
    const totals = new Map()
    for (const row of clientRows.value) {
      latest.set(row.hospital, row)
      const sum = totals.get(row.hospital) || { up: 0, down: 0, epsilon: null, device: null }
      sum.up += row.bytes_up || 0
      sum.down += row.bytes_down || 0
      if (row.epsilon != null) sum.epsilon = row.epsilon
      sum.device = clientDevice(row) ?? sum.device
      totals.set(row.hospital, sum)
    }
    return hospitals.value.map((h) => ({
      ...latest.get(h),
      total_up: totals.get(h).up,
      total_down: totals.get(h).down,
      epsilon_spent: totals.get(h).epsilon,
      device: totals.get(h).device,
    }))
  })

  function upsertRound(round) {
    const previous = roundsByNumber.get(round.round) || {}
    roundsByNumber.set(round.round, { ...previous, ...round })
  }

  function upsertClient(row) {
    const key = clientKey(row)
    const previous = clientsByKey.get(key) || {}
    const merged = { ...previous }
    for (const [k, v] of Object.entries(row)) if (v !== undefined) merged[k] = v
    clientsByKey.set(key, merged)
  }

  async function refreshRun() {
    run.value = await api.getRun(runId)
  }

  async function refreshClients(round) {
    try {
      for (const row of (await api.clients(runId, round)) || []) upsertClient(row)
    } catch {
      /* the event already carried the essentials */
    }
  }

  function setStatus(status) {
    if (run.value) run.value = { ...run.value, status }
  }

  const handlers = {
    run_started: (p) => {
      setStatus('running')
      if (run.value && p.num_rounds) run.value = { ...run.value, num_rounds: p.num_rounds }
      if (run.value && p.class_names) {
        const config = run.value.config || {}
        const data = { ...(config.data || {}), class_names: p.class_names }
        run.value = { ...run.value, config: { ...config, data } }
      }
    },
    round_started: (p) => {
      currentRound.value = p.round
      if (run.value && !['running'].includes(run.value.status) && !isTerminal(run.value.status)) {
        setStatus('running')
      }
    },
    round_finished: (p) => {
      upsertRound(p)
      refreshClients(p.round)
    },
    client_replied: (p) => upsertClient({ status: 'ok', ...p }),
    client_failed: (p) => upsertClient({ status: 'failed', ...p }),
    run_finished: (p) => finish('finished', p),
    run_failed: (p) => finish('failed', p),
    run_stopped: (p) => finish('stopped', p),
    run_queued: (p) => {
      if (run.value) run.value = { ...run.value, status: 'queued', queue_position: p.position }
    },
    run_admitted: () => setStatus('pending'),
    run_interrupted: (p) => finish('interrupted', p),
    run_note: (p) => {
      notes.value = withNote(notes.value, p)
    },
  }

  function finish(status, payload) {
    setStatus(status)
    if (run.value && payload?.final_metrics) {
      run.value = { ...run.value, final_metrics: payload.final_metrics }
    }
    if (run.value && payload?.error) run.value = { ...run.value, error: payload.error }
    closeStream('closed')
    refreshRun().catch(() => {})
  }

  function openStream() {
    if (source || typeof EventSource === 'undefined') return
    connection.value = 'connecting'
    source = new EventSource(links.events(runId), { withCredentials: true })
    source.onopen = () => {
      connection.value = 'live'
    }
    source.onerror = () => {
      if (!source) return
      if (run.value && isTerminal(run.value.status)) {
        closeStream('closed')
        return
      }
      connection.value = source.readyState === EventSource.CLOSED ? 'error' : 'connecting'
      if (source.readyState === EventSource.CLOSED) source = null
      // The stream also ends when a run stopped without an end event: ask the run itself.
      refreshRun()
        .then(() => {
          if (isTerminal(run.value?.status)) closeStream('closed')
        })
        .catch(() => {})
    }
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (message) => {
        const payload = parseEvent(message.data)
        if (!payload) return
        connection.value = 'live'
        lastEventAt.value = new Date()
        handlers[type](payload)
      })
    }
  }

  function closeStream(state = 'closed') {
    if (source) source.close()
    source = null
    connection.value = state
  }

  async function load({ follow = true } = {}) {
    loading.value = true
    error.value = ''
    try {
      await refreshRun()
      const [rounds, clients] = await Promise.all([
        api.rounds(runId),
        api.clients(runId).catch(() => []),
      ])
      for (const r of rounds || []) upsertRound(r)
      for (const c of clients || []) upsertClient(c)
      if (follow && !isTerminal(run.value.status)) openStream()
    } catch (err) {
      error.value = err.status === 404 ? `Run ${runId} does not exist.` : err.message
    } finally {
      loading.value = false
    }
  }

  onBeforeUnmount(() => closeStream('closed'))

  return {
    run,
    loading,
    error,
    rounds,
    clientRows,
    roundsDone,
    currentRound,
    hospitals,
    hospitalStatus,
    connection,
    lastEventAt,
    notes,
    load,
    refreshRun,
    openStream,
    closeStream,
  }
}

/** ``notes`` with the message of a ``run_note`` payload added once (a replayed stream repeats it). */
export function withNote(notes, payload) {
  const message = payload?.message
  if (typeof message !== 'string' || !message || notes.includes(message)) return notes
  return [...notes, message]
}

/** A metric from a client row (evaluate phase preferred), accepting common key spellings. */
export function clientMetric(row, metric) {
  const m = row?.metrics || {}
  for (const key of [metric, `eval_${metric}`, `val_${metric}`, `test_${metric}`]) {
    const value = m[key]
    // A negative AUC marks "undefined" (a hospital whose test set holds one class).
    if (typeof value === 'number' && !(metric === 'auc' && value < 0)) return value
  }
  return null
}

/** The device a hospital reported with a reply (cpu, cuda, mps), or null. */
export function clientDevice(row) {
  const device = row?.metrics?.device
  return typeof device === 'string' && device ? device : null
}

/** Per-hospital series of `metric` over rounds, from evaluate replies (train as fallback). */
export function hospitalSeries(clientRows, metric) {
  const byHospital = new Map()
  for (const row of clientRows) {
    const value = clientMetric(row, metric)
    if (value == null) continue
    const perRound = byHospital.get(row.hospital) || new Map()
    const existing = perRound.get(row.round)
    if (!existing || row.phase === 'evaluate') perRound.set(row.round, { value, phase: row.phase })
    byHospital.set(row.hospital, perRound)
  }
  return [...byHospital.entries()]
    .sort(([a], [b]) => String(a).localeCompare(String(b), undefined, { numeric: true }))
    .map(([hospital, perRound]) => ({
      name: hospital,
      points: [...perRound.entries()].sort((a, b) => a[0] - b[0]).map(([r, v]) => [r, v.value]),
    }))
}
