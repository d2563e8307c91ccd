/** Start / stop a run and download its artifacts, with confirmation and error messages. */
import { ElMessage, ElMessageBox } from 'element-plus'
import { ApiError, api } from './api'

export async function confirmStop(run) {
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

export async function startRun(run) {
  try {
    const updated = await api.startRun(run.id)
    ElMessage.success(`Run “${run.name}” started`)
    return updated
  } catch (err) {
    ElMessage.error(`Could not start the run: ${err.message}`)
    return null
  }
}

function filenameFrom(response, fallback) {
  const header = response.headers.get('content-disposition') || ''
  const star = /filename\*=(?:UTF-8'')?([^;]+)/i.exec(header)
  if (star) return decodeURIComponent(star[1].replace(/"/g, '').trim())
  const plain = /filename="?([^";]+)"?/i.exec(header)
  return plain ? plain[1].trim() : fallback
}

/** Fetch a file with the session cookie and hand it to the browser as a download. */
export async function download(url, fallbackName) {
  let response
  try {
    response = await fetch(url, { credentials: 'same-origin' })
  } catch {
    ElMessage.error(ApiError.describe(0, null))
    return false
  }
  if (!response.ok) {
    const detail = await response
      .json()
      .then((j) => j?.detail)
      .catch(() => null)
    ElMessage.error(`Download failed: ${ApiError.describe(response.status, detail)}`)
    return false
  }
  const blob = await response.blob()
  const href = URL.createObjectURL(blob)
  const anchor = document.createElement('a')
  anchor.href = href
  anchor.download = filenameFrom(response, fallbackName)
  document.body.appendChild(anchor)
  anchor.click()
  anchor.remove()
  setTimeout(() => URL.revokeObjectURL(href), 10000)
  return true
}
