/** The signed-in user, shared by the header, the router guard and role checks. */
import { computed, reactive } from 'vue'
import { api } from './api'

const state = reactive({ user: null, checked: false })

export const session = {
  state,
  user: computed(() => state.user),
  isAdmin: computed(() => state.user?.role === 'admin'),

  /** Ask the server once who we are (the cookie may still be valid from an earlier visit). */
  async ensureChecked() {
    if (state.checked) return state.user
    try {
      state.user = await api.me()
    } catch {
      state.user = null
    }
    state.checked = true
    return state.user
  },

  async login(username, password) {
    const reply = await api.login(username, password)
    state.user = reply.user
    state.checked = true
    return reply.user
  },

  async logout() {
    try {
      await api.logout()
    } finally {
      this.forget()
    }
  },

  forget() {
    state.user = null
    state.checked = true
  },
}

/** Only same-site paths may be redirected to after sign-in. */
export function safeRedirect(value) {
  const target = Array.isArray(value) ? value[0] : value
  return typeof target === 'string' && target.startsWith('/') && !target.startsWith('//')
    ? target
    : '/runs'
}
