/** Thin client of the medfed REST API (/api). Auth rides on the HttpOnly session cookie. */

export class ApiError extends Error {
  constructor(status, detail) {
    super(ApiError.describe(status, detail))
    this.status = status
    this.detail = detail
  }

  /** A one-line, human message for any `detail` FastAPI may send. */
  static describe(status, detail) {
    if (typeof detail === 'string' && detail) return detail
    if (Array.isArray(detail) && detail.length) {
      return detail.map((d) => `${(d.loc || []).join('.')}: ${d.msg}`).join('; ')
    }
    if (status === 0) return 'The server cannot be reached. Check that `medfed server` is running.'
    return `Request failed (HTTP ${status})`
  }
}

let unauthorizedHandler = null

/** Called on any 401 outside the login call (session expired or logged out elsewhere). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler
}

async function request(method, path, { body, query } = {}) {
  const url = new URL(`/api${path}`, window.location.origin)
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value)
  }
  let response
  try {
    response = await fetch(url, {
      method,
      credentials: 'same-origin',
      // Marks the request as the dashboard's own: the server refuses cookie-signed changes
      // from other sites, which cannot send this header.
      headers: {
        'X-Requested-With': 'medfed',
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
  } catch {
    throw new ApiError(0, null)
  }
  const isJson = (response.headers.get('content-type') || '').includes('application/json')
  const payload = isJson ? await response.json().catch(() => null) : null
  if (!response.ok) {
    if (response.status === 401 && path !== '/auth/login' && unauthorizedHandler) {
      unauthorizedHandler()
    }
    throw new ApiError(response.status, payload?.detail ?? null)
  }
  return payload
}

export const api = {
  login: (username, password) => request('POST', '/auth/login', { body: { username, password } }),
  logout: () => request('POST', '/auth/logout', { body: {} }),
  me: () => request('GET', '/auth/me'),

  configDefaults: () => request('GET', '/config/defaults'),
  configSchema: () => request('GET', '/config/schema'),

  listRuns: (query) => request('GET', '/runs', { query }),
  createRun: (name, config, start = true, mode = 'simulation') =>
    request('POST', '/runs', { body: { name, config, start, mode } }),
  getRun: (id) => request('GET', `/runs/${encodeURIComponent(id)}`),
  startRun: (id) => request('POST', `/runs/${encodeURIComponent(id)}/start`, { body: {} }),
  stopRun: (id) => request('POST', `/runs/${encodeURIComponent(id)}/stop`, { body: {} }),
  cancelRun: (id) => request('POST', `/runs/${encodeURIComponent(id)}/cancel`, { body: {} }),
  rounds: (id) => request('GET', `/runs/${encodeURIComponent(id)}/rounds`),
  clients: (id, round) =>
    request('GET', `/runs/${encodeURIComponent(id)}/clients`, { query: { round } }),
  checkpoints: (id) => request('GET', `/runs/${encodeURIComponent(id)}/checkpoints`),
  explanations: (id) => request('GET', `/runs/${encodeURIComponent(id)}/explanations`),
  sites: (id) => request('GET', `/runs/${encodeURIComponent(id)}/sites`),

  hospitals: () => request('GET', '/hospitals'),
  addHospital: (name) => request('POST', '/hospitals', { body: { name } }),
  removeHospital: (name) => request('DELETE', `/hospitals/${encodeURIComponent(name)}`),
  templates: () => request('GET', '/templates'),
  template: (name) => request('GET', `/templates/${encodeURIComponent(name)}`),
  saveTemplate: (name, config) => request('POST', '/templates', { body: { name, config } }),
  activity: (query) => request('GET', '/activity', { query }),
}

/** URLs fetched by the browser itself (downloads, the event stream): the cookie authenticates. */
export const links = {
  events: (id) => `/api/runs/${encodeURIComponent(id)}/events`,
  model: (id, round) =>
    `/api/runs/${encodeURIComponent(id)}/model${round == null ? '' : `?round=${round}`}`,
  report: (id, format) => `/api/runs/${encodeURIComponent(id)}/report?format=${format}`,
  caCertificate: () => '/api/hospitals/ca.pem',
}
