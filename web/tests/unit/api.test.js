import { describe, expect, it } from 'vitest'
import { ApiError } from '../../src/lib/api'
import { filenameFrom } from '../../src/lib/download'
import { safeRedirect } from '../../src/lib/session'

describe('ApiError', () => {
  it('says what went wrong in one line', () => {
    expect(new ApiError(409, 'already registered').message).toBe('already registered')
    expect(ApiError.describe(422, [{ loc: ['body', 'name'], msg: 'too long' }])).toBe('body.name: too long')
    expect(ApiError.describe(0, null)).toMatch(/cannot be reached/)
    expect(ApiError.describe(500, null)).toBe('Request failed (HTTP 500)')
  })
})

describe('filenameFrom', () => {
  const response = (header) => ({ headers: new Map([['content-disposition', header]]) })

  it('reads plain and RFC 5987 file names', () => {
    expect(filenameFrom(response('attachment; filename="model.pt"'), 'x')).toBe('model.pt')
    expect(filenameFrom(response("attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"), 'x')).toBe(
      'résumé.pdf',
    )
    expect(filenameFrom(response(''), 'fallback.bin')).toBe('fallback.bin')
  })
})

describe('safeRedirect', () => {
  it('follows only same-site paths', () => {
    expect(safeRedirect('/hospitals')).toBe('/hospitals')
    expect(safeRedirect(['/runs/1', '/x'])).toBe('/runs/1')
    expect(safeRedirect('//evil.example/')).toBe('/runs')
    expect(safeRedirect('https://evil.example/')).toBe('/runs')
    expect(safeRedirect(undefined)).toBe('/runs')
  })
})
