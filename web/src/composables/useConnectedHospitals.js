/**
 * The new-run form's choice of hospitals: simulated on this server, or the registered
 * hospitals connected to the platform. Choosing connected ones loads the registry and sets
 * how many hospitals the run expects and waits for.
 */
import { computed, reactive, watch } from 'vue'
import { api } from '../lib/api'
import { connectedSettings, connectedSummary, shortageWarning } from '../lib/hospitals'

export function useConnectedHospitals(form, ui) {
  const state = reactive({ loading: false, error: '', hospitals: [] })
  const connected = computed(() => ui.hospitals === 'connected')
  const summary = computed(() => connectedSummary(state.hospitals))
  const warning = computed(() =>
    connected.value && !state.loading && !state.error
      ? shortageWarning(summary.value, form.federated)
      : '',
  )

  /** Expect every registered hospital; wait for those online now. */
  function apply() {
    if (connected.value && !state.loading && !state.error) {
      Object.assign(form.federated, connectedSettings(summary.value))
    }
  }

  async function load() {
    state.loading = true
    state.error = ''
    try {
      state.hospitals = (await api.hospitals()) || []
    } catch (err) {
      state.error = err.message
    } finally {
      state.loading = false
    }
    apply()
  }

  watch(connected, (on) => on && load())

  return reactive({ state, connected, summary, warning, load, apply })
}
