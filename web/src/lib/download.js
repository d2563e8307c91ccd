/** Downloads of files the API serves (models, reports, keys) with the session cookie. */
import { ElMessage } from 'element-plus'
import { ApiError } from './api'

/** The file name a response's Content-Disposition gives, else `fallback`. */
export function filenameFrom(response, fallback) {
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
  saveBlob(await response.blob(), filenameFrom(response, fallbackName))
  return true
}

/** Hand `blob` to the browser as a download named `name`. */
export function saveBlob(blob, name) {
  const href = URL.createObjectURL(blob)
  const anchor = document.createElement('a')
  anchor.href = href
  anchor.download = name
  document.body.appendChild(anchor)
  anchor.click()
  anchor.remove()
  setTimeout(() => URL.revokeObjectURL(href), 10000)
}

/** Hand text made in the page (e.g. a key shown once) to the browser as a file. */
export function saveText(text, name, type = 'text/plain') {
  saveBlob(new Blob([text], { type }), name)
}
