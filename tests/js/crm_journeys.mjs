// Journeys 2 (a manager's pipeline review and reassignment) and 3 (a rep's deal lifecycle)
// against the Aura edge with the real @supabase/supabase-js client: every call goes over
// HTTP through /auth/v1 and /rest/v1/rpc with the user's own token. See lib.mjs for the
// environment and the output.

import assert from 'node:assert/strict'
import {
  UUID_RE, awaitMail, config, expectError, expectOk, expectSession, newClient, ok, rand, rows, run, step,
} from './lib.mjs'

/** Invites `email` as `role`, accepts by the mailed link, sets a password and signs in. */
async function join(admin, email, role, password) {
  expectOk(await admin.rpc('invite_user', { email, role }), `invite ${role}`)
  const mail = await awaitMail(email, 'invite')
  const invited = newClient(config.anon)
  expectSession(await invited.auth.verifyOtp({ token_hash: mail.tokenHash, type: 'invite' }), `accept ${role}`)
  expectOk(await invited.auth.updateUser({ password }), `${role} sets a password`)
  const client = newClient(config.anon)
  expectSession(await client.auth.signInWithPassword({ email, password }), `${role} signs in`)
  const me = expectOk(await client.rpc('whoami'), `${role} whoami`)
  assert.equal(me?.role, role, `${role} whoami.role`)
  return { client, id: me.user_id }
}

const ids = (list) => list.map((r) => r.id)

/** The per-currency totals of one owner or stage in a pipeline_summary. */
function totals(entry, currency) {
  return (entry?.totals ?? []).find((t) => t.currency === currency)
}

async function main() {
  const stamp = `${Date.now()}-${rand()}`
  const password = 'pipeline-horse-3'

  // ------------------------------------------------------------------ setup
  step('setup: admin signs up, invites a manager and two reps')
  const admin = newClient(config.anon)
  expectSession(
    await admin.auth.signUp({
      email: `admin-${stamp}@example.test`,
      password,
      options: { data: { company_name: 'Pipeline Co', full_name: 'Ada Admin' } },
    }),
    'admin signUp'
  )
  const manager = await join(admin, `manager-${stamp}@example.test`, 'manager', password)
  const rep = await join(admin, `rep-${stamp}@example.test`, 'rep', password)
  const other = await join(admin, `other-${stamp}@example.test`, 'rep', password)
  ok('setup: a workspace with an admin, a manager and two reps, each signed in with a password')

  step('setup: the standard pipeline')
  const stages = expectOk(await rep.client.rpc('list_pipeline_stages'), 'list_pipeline_stages')
  assert.deepEqual(
    rows(stages, 'list_pipeline_stages').map((s) => s.key),
    ['prospect', 'qualified', 'proposal', 'negotiation', 'won', 'lost'],
    'stage keys in order'
  )
  ok('setup: the new workspace has the seeded pipeline Prospect → … → Won / Lost')

  // An organization and a contact of the other rep, and a deal of theirs, made by the admin.
  const acme = expectOk(
    await admin.rpc('create_organization', { name: `Acme ${stamp}`, industry: 'Manufacturing', website: 'https://acme.example' }),
    'create_organization'
  ).organization
  assert.ok(UUID_RE.test(acme?.id ?? ''), `create_organization: ${JSON.stringify(acme)}`)
  const otherContact = expectOk(
    await admin.rpc('create_contact', {
      first_name: 'Petra', last_name: 'Novak', email: `petra-${stamp}@acme.example`,
      phone: '+1 (555) 010-0200', organization_id: acme.id, assigned_to: other.id,
    }),
    'create_contact (other rep)'
  ).contact
  const otherDeal = expectOk(
    await admin.rpc('create_deal', {
      name: 'Acme renewal', amount: 12000, currency: 'EUR', stage: 'proposal', expected_close_date: '2027-01-15',
      contact_id: otherContact.id, organization_id: acme.id, assigned_to: other.id,
    }),
    'create_deal (other rep)'
  )

  // ------------------------------------------------------------- journey 3
  step('3.2 the rep lists the deals assigned to them')
  const assigned = expectOk(
    await admin.rpc('create_deal', { name: 'Globex pilot', amount: 5000, currency: 'USD', assigned_to: rep.id }),
    'create_deal (for the rep)'
  )
  {
    const list = rows(expectOk(await rep.client.rpc('list_deals'), '3.2 list_deals'), '3.2 list_deals')
    assert.deepEqual(ids(list), [assigned.id], "3.2 the rep's list holds exactly their deal")
    assert.equal(list[0].stage, 'prospect', '3.2 a deal without a stage starts as prospect')
    const res = await rep.client.rpc('get_deal', { id: otherDeal.id })
    expectError(res, "3.2 get_deal of another rep's deal", { code: 'P0002', status: 404 })
    ok("3.2 a rep lists only their own deals; another rep's deal is 404 (P0002)")
  }

  step('3.3 the rep looks a contact up')
  {
    const byTypo = rows(expectOk(await admin.rpc('search_contacts', { q: 'petr novk' }), '3.3 search (admin)'), '3.3 search')
    assert.equal(byTypo[0]?.id, otherContact.id, `3.3 "petr novk" finds Petra Novak first: ${JSON.stringify(byTypo)}`)
    const byPhone = rows(expectOk(await admin.rpc('search_contacts', { q: '5550100200' }), '3.3 search phone'), '3.3 phone')
    assert.ok(ids(byPhone).includes(otherContact.id), '3.3 the digits of the phone find the contact')
    const repView = rows(expectOk(await rep.client.rpc('search_contacts', { q: 'petra' }), '3.3 search (rep)'), '3.3 rep')
    assert.ok(!ids(repView).includes(otherContact.id), "3.3 the rep's search does not show another rep's contact")
    ok('3.3 search_contacts tolerates typos and phone formats, and a rep finds only their own contacts')
  }

  step('3.3 the rep creates a prospect contact')
  let prospect
  {
    const created = expectOk(
      await rep.client.rpc('create_contact', {
        first_name: 'Hank', last_name: 'Scorpio', email: `Hank-${stamp}@Globex.example`, title: 'CEO',
        phone: '555 010 0300',
      }),
      '3.3 create_contact'
    )
    prospect = created.contact
    assert.ok(Array.isArray(created.duplicates), '3.3 create_contact returns duplicates')
    assert.equal(prospect.assigned_to, rep.id, '3.3 what a rep creates is assigned to them')
    assert.equal(prospect.created_by, rep.id, '3.3 created_by is the rep')
    const again = await rep.client.rpc('create_contact', { first_name: 'H', email: `hank-${stamp}@globex.example` })
    const err = expectError(again, '3.3 the same email again', { code: '23505', status: 409 })
    assert.ok(`${err.message} ${err.details}`.includes(prospect.id), `3.3 the 409 names the existing contact: ${JSON.stringify(err)}`)
    const found = rows(expectOk(await rep.client.rpc('search_contacts', { q: 'scorpio' }), '3.3 search new'), '3.3')
    assert.equal(found[0]?.id, prospect.id, '3.3 the new contact is found')
    ok('3.3 create_contact assigns to the rep; the same email (other case) is 409 naming the contact')
  }

  step('3.4 the rep creates a deal for the prospect')
  let deal
  {
    deal = expectOk(
      await rep.client.rpc('create_deal', {
        name: `Globex expansion ${stamp}`, amount: 48000, currency: 'USD', stage: 'qualified',
        expected_close_date: '2027-03-31', contact_id: prospect.id,
      }),
      '3.4 create_deal'
    )
    assert.equal(deal.stage, 'qualified', '3.4 stage')
    assert.equal(deal.assigned_to, rep.id, '3.4 assigned to the rep')
    const qualified = rows(stages, 'stages').find((s) => s.key === 'qualified')
    assert.equal(deal.probability, qualified.default_probability, "3.4 the stage's default probability")
    const bad = await rep.client.rpc('create_deal', { name: 'x', amount: -5, currency: 'USD' })
    expectError(bad, '3.4 a negative amount', { status: 400 })
    const foreign = await rep.client.rpc('create_deal', { name: 'x', contact_id: otherContact.id })
    expectError(foreign, "3.4 a deal on another rep's contact", { code: 'P0002', status: 404 })
    ok(`3.4 create_deal: qualified at ${deal.probability}%; a negative amount is 400, another rep's contact 404`)
  }

  step('3.5 the rep logs interactions and moves the deal on')
  {
    for (const [type, description] of [
      ['call', 'Intro call: budget confirmed'],
      ['email', 'Sent the proposal deck'],
      ['meeting', 'On-site demo with the CTO'],
    ]) {
      const a = expectOk(
        await rep.client.rpc('log_activity', { type, description, contact_id: prospect.id, deal_id: deal.id }),
        `3.5 log_activity ${type}`
      )
      assert.equal(a.actor_id, rep.id, `3.5 ${type}: the actor is the rep`)
    }
    const moved = expectOk(await rep.client.rpc('move_deal', { id: deal.id, stage: 'proposal' }), '3.5 move_deal')
    assert.equal(moved.stage, 'proposal', '3.5 moved to proposal')
    const updated = expectOk(
      await rep.client.rpc('update_deal', { id: deal.id, changes: { amount: 52000, notes: 'Added 2 seats' } }),
      '3.5 update_deal'
    )
    assert.equal(Number(updated.amount), 52000, '3.5 the new amount')
    assert.equal(updated.updated_by, rep.id, '3.5 updated_by')
    const grab = await rep.client.rpc('assign_deal', { id: deal.id, assigned_to: other.id })
    expectError(grab, '3.5 a rep reassigning', { code: '42501', status: 403 })
    ok('3.5 three activities logged, the deal moved to proposal and repriced; a rep cannot reassign (403)')
  }

  step('3.6 the rep closes deals')
  let lostDeal
  {
    const noReason = await rep.client.rpc('move_deal', { id: assigned.id, stage: 'lost' })
    expectError(noReason, '3.6 lost without a reason', { code: '22023', status: 400 })
    lostDeal = expectOk(
      await rep.client.rpc('move_deal', { id: assigned.id, stage: 'lost', reason: 'Chose a competitor' }),
      '3.6 lost with a reason'
    )
    assert.equal(lostDeal.lost_reason, 'Chose a competitor', '3.6 lost_reason')
    assert.equal(lostDeal.probability, 0, '3.6 lost is 0%')
    const won = expectOk(await rep.client.rpc('move_deal', { id: deal.id, stage: 'won' }), '3.6 won')
    assert.equal(won.probability, 100, '3.6 won is 100%')
    assert.ok(won.closed_at, '3.6 won sets closed_at')
    const closed = await rep.client.rpc('move_deal', { id: deal.id, stage: 'negotiation' })
    expectError(closed, '3.6 moving a closed deal', { code: '22023', status: 400 })
    ok('3.6 lost needs a reason; won sets 100% and the close time; a closed deal moves only by reopening')
  }

  step('3.7 the rep reviews the history of the closed deal')
  {
    const acts = rows(
      expectOk(await rep.client.rpc('list_activities', { deal_id: deal.id }), '3.7 list_activities'),
      '3.7 list_activities'
    )
    assert.deepEqual(acts.map((a) => a.type), ['meeting', 'email', 'call'], '3.7 newest first')
    const history = rows(
      expectOk(await rep.client.rpc('deal_stage_history', { id: deal.id }), '3.7 deal_stage_history'),
      '3.7 deal_stage_history'
    )
    const moves = history.map((h) => `${h.from_stage ?? ''}>${h.to_stage}`)
    assert.ok(moves.includes('qualified>proposal') && moves.includes('proposal>won'), `3.7 moves: ${moves}`)
    assert.ok(history.every((h) => h.changed_by === rep.id && h.changed_at), '3.7 each change has who and when')
    const page = expectOk(await rep.client.rpc('list_activities', { deal_id: deal.id, page_size: 2 }), '3.7 page 1')
    assert.equal(page.data.length, 2, '3.7 a page of 2')
    assert.ok(page.next_cursor, '3.7 a next_cursor')
    const rest = expectOk(
      await rep.client.rpc('list_activities', { deal_id: deal.id, page_size: 2, cursor: page.next_cursor }),
      '3.7 page 2'
    )
    assert.deepEqual(ids(rest.data), [acts[2].id], '3.7 the second page holds the rest')
    assert.equal(rest.next_cursor, null, '3.7 and ends')
    ok('3.7 activities newest first with keyset pages, and every stage change with who and when')
  }

  // ------------------------------------------------------------- journey 2
  step('2.2 the manager opens the dashboard')
  {
    const summary = expectOk(await manager.client.rpc('pipeline_summary'), '2.2 pipeline_summary')
    const byStage = Object.fromEntries(summary.by_stage.map((s) => [s.stage, s]))
    assert.equal(totals(byStage.won, 'USD')?.count, 1, '2.2 one won USD deal')
    assert.equal(Number(totals(byStage.won, 'USD')?.total), 52000, '2.2 won total')
    assert.equal(Number(totals(byStage.proposal, 'EUR')?.weighted_total), 12000 * otherDeal.probability / 100, '2.2 weighted')
    const owners = Object.fromEntries(summary.by_owner.map((o) => [o.assigned_to, o]))
    assert.equal(totals(owners[other.id], 'EUR')?.count, 1, "2.2 the other rep's open deal")
    assert.equal(owners[rep.id], undefined, '2.2 the rep has no open deal left')
    const all = rows(expectOk(await manager.client.rpc('list_deals'), '2.2 list_deals'), '2.2 list_deals')
    assert.equal(all.length, 3, '2.2 the manager sees every deal of the workspace')
    ok('2.2 pipeline_summary per stage and per owner, per currency, weighted; the manager sees all deals')
  }

  step('2.3 the manager reviews open deals and moves one on')
  {
    const open = rows(
      expectOk(
        await manager.client.rpc('list_deals', { stage: 'proposal', min_probability: 10, close_to: '2030-12-31', sort: 'amount' }),
        '2.3 list_deals filtered'
      ),
      '2.3'
    )
    assert.deepEqual(ids(open), [otherDeal.id], '2.3 the combined filter')
    const moved = expectOk(
      await manager.client.rpc('move_deal', { id: otherDeal.id, stage: 'negotiation', probability: 70 }),
      '2.3 move_deal'
    )
    assert.equal(moved.stage, 'negotiation', '2.3 stage')
    assert.equal(moved.probability, 70, '2.3 a given probability wins over the default')
    const updated = expectOk(
      await manager.client.rpc('update_deal', { id: otherDeal.id, changes: { amount: 15000 } }),
      '2.3 update_deal'
    )
    assert.equal(Number(updated.amount), 15000, '2.3 the new value')
    ok("2.3 a combined filter finds the proposal; the manager moves it to negotiation at 70% and updates its value")
  }

  step('2.4 the manager reassigns a deal')
  {
    const theirs = rows(
      expectOk(await manager.client.rpc('list_deals', { assigned_to: other.id }), '2.4 list_deals by owner'),
      '2.4'
    )
    assert.deepEqual(ids(theirs), [otherDeal.id], "2.4 the team member's deals")
    const reassigned = expectOk(
      await manager.client.rpc('assign_deal', { id: otherDeal.id, assigned_to: rep.id }),
      '2.4 assign_deal'
    )
    assert.equal(reassigned.assigned_to, rep.id, '2.4 assigned_to')
    const repSees = rows(expectOk(await rep.client.rpc('list_deals'), '2.4 rep list'), '2.4 rep list')
    assert.ok(ids(repSees).includes(otherDeal.id), '2.4 the new owner sees the deal')
    expectError(await other.client.rpc('get_deal', { id: otherDeal.id }), '2.4 the former owner', {
      code: 'P0002',
      status: 404,
    })
    const bogus = await manager.client.rpc('assign_deal', { id: otherDeal.id, assigned_to: '00000000-0000-4000-8000-000000000000' })
    expectError(bogus, '2.4 to a non-member', { code: 'P0002', status: 404 })
    ok('2.4 assign_deal moves the deal to the other rep: they see it, the former owner gets 404')
  }

  step('2.5 the manager runs the snapshot again')
  {
    const summary = expectOk(await manager.client.rpc('pipeline_summary'), '2.5 pipeline_summary')
    const negotiation = summary.by_stage.find((s) => s.stage === 'negotiation')
    assert.equal(Number(totals(negotiation, 'EUR')?.total), 15000, '2.5 negotiation total')
    assert.equal(Number(totals(negotiation, 'EUR')?.weighted_total), 10500, '2.5 weighted 15000 × 70%')
    const owners = Object.fromEntries(summary.by_owner.map((o) => [o.assigned_to, o]))
    assert.equal(totals(owners[rep.id], 'EUR')?.count, 1, '2.5 the deal now counts for its new owner')
    assert.equal(owners[other.id], undefined, '2.5 and no longer for the former one')
    const repSummary = expectOk(await other.client.rpc('pipeline_summary'), '2.5 a rep summary')
    assert.equal(repSummary.by_owner.length, 0, "2.5 a rep's summary covers only their own deals")
    ok('2.5 the snapshot follows the move, the new value and the reassignment')
  }

  step('2.6 the manager signs out')
  {
    const token = (await manager.client.auth.getSession()).data.session?.access_token
    expectOk(await manager.client.auth.signOut(), '2.6 signOut')
    const resp = await fetch(`${config.url}/rest/v1/rpc/pipeline_summary`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, apikey: config.anon, 'content-type': 'application/json' },
      body: '{}',
    })
    const body = await resp.json()
    assert.equal(resp.status, 403, `2.6 the old token after sign-out: ${resp.status} ${JSON.stringify(body)}`)
    assert.equal(body.code, '42501', '2.6 the gate refuses the ended session')
    ok('2.6 after sign-out the session token no longer reads the pipeline (403, 42501: the session has ended)')
  }
}

await run(main)
