/** A page's loading state: `load()` runs `fetcher`, with `loading` and `error` (a message). */
import { ref } from 'vue'

export function useLoader(fetcher, { loading: initially = true, describe, onError } = {}) {
  const loading = ref(initially)
  const error = ref('')

  async function load(...args) {
    loading.value = true
    error.value = ''
    try {
      return await fetcher(...args)
    } catch (err) {
      error.value = describe?.(err) || err.message
      onError?.(err)
      return undefined
    } finally {
      loading.value = false
    }
  }

  return { loading, error, load }
}
