/** Start and stop a run from its pages: who may, confirmation, messages, the updated run. */
import { computed, reactive, ref } from 'vue'
import { ElMessage, ElMessageBox } from 'element-plus'
import { api } from '../lib/api'
import { isActive } from '../lib/format'
import { session } from '../lib/session'

async function confirmStop(run) {
  try {
    await ElMessageBox.confirm(
      `Stop “${run.name}”? Hospitals finish their current step, then the run ends as stopped.`,
      'Stop run',
      { confirmButtonText: 'Stop run', cancelButtonText: 'Keep running', type: 'warning' },
    )
  } catch {
    return null
  }
  try {
    const updated = await api.stopRun(run.id)
    ElMessage.success('Stop requested')
    return updated
  } catch (err) {
    ElMessage.error(`Could not stop the run: ${err.message}`)
    return null
  }
}

async function cancelQueued(run) {
  try {
    const updated = await api.cancelRun(run.id)
    ElMessage.success(`Run “${run.name}” left the queue`)
    return updated
  } catch (err) {
    ElMessage.error(`Could not cancel the run: ${err.message}`)
    return null
  }
}

async function startRun(run) {
  try {
    const updated = await api.startRun(run.id)
    ElMessage.success(`Run “${run.name}” started`)
    return updated
  } catch (err) {
    ElMessage.error(`Could not start the run: ${err.message}`)
    return null
  }
}

/**
 * Actions on the run held in the ref `run`: `start` and `stop` update it in place;
 * `onStarted` runs after a successful start (e.g. to follow the run's events).
 */
export function useRunActions(run, { onStarted } = {}) {
  const busy = ref(false)
  const canStart = computed(
    () => session.isAdmin.value && run.value?.status === 'pending' && !run.value?.started_at,
  )
  const canStop = computed(
    () => session.isAdmin.value && isActive(run.value?.status) && run.value?.status !== 'queued',
  )
  const canCancel = computed(() => session.isAdmin.value && run.value?.status === 'queued')

  async function act(action, after) {
    busy.value = true
    try {
      const updated = await action(run.value)
      if (updated) {
        run.value = { ...run.value, ...updated }
        after?.()
      }
    } finally {
      busy.value = false
    }
  }

  return reactive({
    busy,
    canStart,
    canStop,
    canCancel,
    start: () => act(startRun, onStarted),
    cancel: () => act(cancelQueued),
    stop: () => act(confirmStop),
  })
}
