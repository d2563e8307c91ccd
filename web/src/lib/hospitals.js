/** Hospitals for a run on connected sites: how many are registered and online, and what a
 * run on them should ask for. */

/** Registered hospitals (holding a key the platform accepts) and how many of them are online. */
export function connectedSummary(hospitals) {
  const registered = (hospitals || []).filter((h) => h.registered)
  return {
    registered: registered.length,
    online: registered.filter((h) => h.status === 'online').length,
    names: registered.map((h) => h.name),
  }
}

/**
 * Federation settings for the registered hospitals: all of them expected, and each round
 * waits for those online now (at least one).
 */
export function connectedSettings({ registered, online }) {
  const expected = Math.max(1, registered)
  const wait = Math.max(1, Math.min(online, expected))
  return {
    num_clients: expected,
    min_available_clients: wait,
    min_train_clients: wait,
    min_evaluate_clients: wait,
  }
}

/** How many hospitals a round needs at least (the largest of the minimums). */
export function hospitalsNeeded(federated) {
  return Math.max(
    federated?.min_available_clients ?? 1,
    federated?.min_train_clients ?? 1,
    federated?.min_evaluate_clients ?? 1,
  )
}

/** A warning when fewer registered hospitals are online than a round needs, else ''. */
export function shortageWarning(summary, federated) {
  if (!summary.registered) {
    return 'No hospital is registered yet: add one on the Hospitals page, then start its client.'
  }
  const needed = hospitalsNeeded(federated)
  if (summary.online >= needed) return ''
  const online = summary.online === 1 ? '1 is' : `${summary.online} are`
  return (
    `Only ${online} online of the ${needed} hospitals a round needs: ` +
    'the run waits until enough hospitals connect.'
  )
}

/** The hospital list's status of a hospital's registration. */
export function registrationLabel(hospital) {
  if (hospital.registered) return 'registered'
  if (hospital.removed_at) return 'removed'
  return 'not registered'
}
