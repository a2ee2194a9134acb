// Shared by the supabase-js journeys: step bookkeeping, result checks, clients and the
// mail sink reader. A journey calls `run(name, main)`, which reads the environment
// (AURA_URL, AURA_ANON_KEY, AURA_SERVICE_ROLE_KEY, AURA_MAIL_DIR), prints "ok - <step>" per
// passed check and, on the first failure, "not ok - <step>", the reason, and exits 1.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

const TOTAL_TIMEOUT_MS = 120_000
const MAIL_POLL_MS = 100
const MAIL_TIMEOUT_MS = 10_000
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** The edge's URL and keys, read from the environment by `run`. */
export const config = { url: '', anon: '', service: '', mailDir: '' }

let currentStep = '(start)'
let passed = 0

export function env(name) {
  const value = process.env[name]
  if (!value) throw new Error(`environment variable ${name} is not set`)
  return value
}

// ---------------------------------------------------------------- helpers

export function step(name) {
  currentStep = name
}

export function ok(name) {
  passed += 1
  console.log(`ok - ${name}`)
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export function rand() {
  return randomBytes(4).toString('hex')
}

export function describe(error) {
  if (!error) return String(error)
  const fields = {}
  for (const k of ['name', 'message', 'code', 'status', 'details', 'hint']) {
    if (error[k] !== undefined) fields[k] = error[k]
  }
  return JSON.stringify(fields)
}

/** A `{ data, error }` result must have no error; returns `data`. */
export function expectOk(result, what) {
  assert.ok(result && typeof result === 'object', `${what}: no result object`)
  if (result.error) {
    assert.fail(`${what}: unexpected error ${describe(result.error)}`)
  }
  return result.data
}

/**
 * A `{ data, error }` result must carry an error. `code` and `status` are checked when given
 * (a status may be a list of accepted values). Returns the error.
 */
export function expectError(result, what, { code, status } = {}) {
  assert.ok(result && typeof result === 'object', `${what}: no result object`)
  const { error } = result
  assert.ok(error, `${what}: expected an error, got data ${JSON.stringify(result.data)}`)
  if (code !== undefined) {
    assert.equal(error.code, code, `${what}: error code (error: ${describe(error)})`)
  }
  if (status !== undefined) {
    // Auth errors carry their status; rpc results carry it beside the error.
    const actual = error.status ?? result.status
    const accepted = Array.isArray(status) ? status : [status]
    assert.ok(
      accepted.includes(actual),
      `${what}: error status ${actual}, expected ${accepted.join(' or ')} (error: ${describe(error)})`
    )
  }
  return error
}

/** `list_*` functions may answer with a bare array or with `{ data: [...] }`. */
export function rows(data, what) {
  const list = Array.isArray(data) ? data : data?.data
  assert.ok(Array.isArray(list), `${what}: expected an array (or {data: array}), got ${JSON.stringify(data)}`)
  return list
}

export function sameEmail(a, b) {
  return typeof a === 'string' && typeof b === 'string' && a.toLowerCase() === b.toLowerCase()
}

export function newClient(key) {
  return createClient(config.url, key, {
    auth: { autoRefreshToken: false, persistSession: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket },
  })
}

export function expectSession(result, what) {
  const data = expectOk(result, what)
  assert.ok(data?.session, `${what}: expected a session, got ${JSON.stringify(data)}`)
  assert.equal(typeof data.session.access_token, 'string', `${what}: session.access_token`)
  assert.ok(data.session.access_token.length > 0, `${what}: empty access_token`)
  assert.equal(typeof data.session.refresh_token, 'string', `${what}: session.refresh_token`)
  assert.ok(data.session.refresh_token.length > 0, `${what}: empty refresh_token`)
  return data.session
}

// ---------------------------------------------------------------- mail

const consumedMail = new Set()

function parseMail(text) {
  const normalized = text.replace(/\r\n/g, '\n')
  const split = normalized.indexOf('\n\n')
  if (split < 0) return null
  const headerBlock = normalized.slice(0, split).replace(/\n[ \t]+/g, ' ') // unfold
  const body = normalized.slice(split + 2)
  const headers = {}
  for (const line of headerBlock.split('\n')) {
    const colon = line.indexOf(':')
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { headers, body }
}

function findVerifyLink(body) {
  for (const m of body.matchAll(/[^\s<>"'()]*\/auth\/v1\/verify\?[^\s<>"'()]+/g)) {
    const raw = m[0].replace(/&amp;/g, '&')
    let url
    try {
      url = new URL(raw, 'http://placeholder.invalid')
    } catch {
      continue
    }
    const tokenHash = url.searchParams.get('token')
    const type = url.searchParams.get('type')
    if (tokenHash && type) return { link: raw, tokenHash, type, url }
  }
  return null
}

/**
 * Waits (polling every 100 ms, up to 10 s) for a not yet consumed mail to `address` whose
 * verification link has type `type`. Returns `{ tokenHash, code, link, subject, redirectTo }`.
 */
export async function awaitMail(address, type) {
  const deadline = Date.now() + MAIL_TIMEOUT_MS
  const wanted = address.toLowerCase()
  const seen = []
  for (;;) {
    const candidates = []
    let names = []
    try {
      names = await readdir(config.mailDir)
    } catch (e) {
      if (e.code !== 'ENOENT') throw e
    }
    for (const name of names) {
      if (!name.endsWith('.eml') || consumedMail.has(name)) continue
      const path = join(config.mailDir, name)
      let text, info
      try {
        ;[text, info] = await Promise.all([readFile(path, 'utf8'), stat(path)])
      } catch {
        continue // removed or not readable yet
      }
      const mail = parseMail(text)
      if (!mail) continue // possibly still being written
      if (!(mail.headers.to ?? '').toLowerCase().includes(wanted)) continue
      const found = findVerifyLink(mail.body)
      if (!found) continue // possibly still being written
      if (found.type !== type) {
        seen.push(`${name} (type=${found.type})`)
        continue
      }
      const code = mail.body.match(/Code:\s*(\d{6})\b/)?.[1]
      if (!code) continue // possibly still being written
      candidates.push({ name, mtime: info.mtimeMs, mail, found, code })
    }
    if (candidates.length > 0) {
      candidates.sort((a, b) => b.mtime - a.mtime || (a.name < b.name ? 1 : -1))
      const { name, mail, found, code } = candidates[0]
      for (const c of candidates) consumedMail.add(c.name)
      return {
        tokenHash: found.tokenHash,
        code,
        link: found.link,
        subject: mail.headers.subject ?? '',
        redirectTo: found.url.searchParams.get('redirect_to'),
        file: name,
      }
    }
    if (Date.now() > deadline) {
      throw new Error(
        `no '${type}' mail to ${address} in ${config.mailDir} within ${MAIL_TIMEOUT_MS / 1000} s` +
          (seen.length ? `; other mail to it: ${[...new Set(seen)].join(', ')}` : '')
      )
    }
    await sleep(MAIL_POLL_MS)
  }
}

/** Runs a journey: reads the environment, gives up after 120 s, reports and exits. */
export async function run(main) {
  const timer = setTimeout(() => {
    console.log(`not ok - ${currentStep}`)
    console.error(`journey: timed out after ${TOTAL_TIMEOUT_MS / 1000} s during step "${currentStep}"`)
    process.exit(1)
  }, TOTAL_TIMEOUT_MS)
  try {
    step('(environment)')
    config.url = env('AURA_URL').replace(/\/+$/, '')
    config.anon = env('AURA_ANON_KEY')
    config.service = env('AURA_SERVICE_ROLE_KEY')
    config.mailDir = env('AURA_MAIL_DIR')
    await main()
    clearTimeout(timer)
    console.log(`# journey complete: ${passed} checks ok`)
    process.exit(0)
  } catch (err) {
    console.log(`not ok - ${currentStep}`)
    console.error(`journey failed at step "${currentStep}" after ${passed} ok:`)
    console.error(err?.stack ?? String(err))
    process.exit(1)
  }
}
