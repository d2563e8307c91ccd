/**
 * The run-configuration form: which MedfedConfig sections the dashboard edits, rules derived
 * from the server's JSON schema, and mapping of 422 errors back to form fields.
 */

export const FORM_SECTIONS = [
  'data',
  'model',
  'training',
  'partition',
  'federated',
  'privacy',
  'compression',
]

export const FALLBACK_ENUMS = {
  'federated.strategy': [
    'FedAvg',
    'FedProx',
    'FedMedian',
    'FedTrimmedAvg',
    'Krum',
    'FedAdam',
    'FedYogi',
    'FedAvgM',
  ],
  'model.name': ['cancer_cnn', 'resnet18', 'resnet50'],
  'model.norm': ['batch', 'group'],
  'partition.scheme': ['iid', 'dirichlet', 'shards', 'quantity'],
  'federated.bn': ['average', 'local'],
  'privacy.mode': ['none', 'sample', 'client'],
  'compression.downlink': ['fp32', 'fp16', 'int8'],
  'compression.topk_scope': ['model', 'tensor'],
  'training.optimizer': ['adam', 'sgd'],
  'data.layout': ['auto', 'kaggle', 'folders'],
}

/** Strategy-specific parameters: shown only for the strategies that use them. */
export const STRATEGY_PARAMS = {
  FedProx: ['proximal_mu'],
  FedTrimmedAvg: ['trim_beta'],
  Krum: ['num_malicious_clients'],
  FedAdam: ['server_learning_rate', 'tau'],
  FedYogi: ['server_learning_rate', 'tau'],
  FedAvgM: ['server_learning_rate', 'server_momentum'],
}

export const STRATEGY_NOTES = {
  FedAvg: 'Weighted average of the hospitals’ models (McMahan et al.).',
  FedProx: 'FedAvg plus a proximal term μ/2·‖w − w_global‖² in each hospital’s loss; steadier on non-IID data.',
  FedMedian: 'Coordinate-wise median of the updates: robust to a few outlying hospitals.',
  FedTrimmedAvg: 'Drops the β fraction of largest and smallest values per coordinate, then averages.',
  Krum: 'Keeps the update closest to its neighbours; tolerates up to f malicious hospitals.',
  FedAdam: 'Server-side Adam on the averaged update (adaptive federated optimisation).',
  FedYogi: 'Server-side Yogi: like FedAdam with a more conservative second moment.',
  FedAvgM: 'FedAvg with server momentum on the aggregated update.',
}

export const SCHEME_NOTES = {
  iid: 'Each hospital gets a random, equally sized share with the same class balance.',
  dirichlet: 'Class proportions per hospital drawn from Dirichlet(α): small α = very skewed.',
  shards: 'Each hospital holds only a few classes (pathological non-IID).',
  quantity: 'Same class balance, very different dataset sizes per hospital.',
}

/** A deep copy of plain JSON data (also of Vue reactive proxies, which structuredClone refuses). */
function copyJson(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value))
}

/** The dashboard-editable part of a full configuration, deep-copied. */
export function pickSections(config) {
  const out = {}
  for (const section of FORM_SECTIONS) out[section] = copyJson(config?.[section] ?? {})
  return out
}

/** Defaults overlaid with a (possibly partial) stored config, e.g. a template. */
export function mergeConfig(defaults, partial) {
  const out = pickSections(defaults)
  for (const section of FORM_SECTIONS) {
    Object.assign(out[section], copyJson(partial?.[section] ?? {}))
  }
  return out
}

function resolveRef(schema, node) {
  let current = node
  while (current && current.$ref) {
    const name = current.$ref.split('/').pop()
    current = schema?.$defs?.[name] ?? schema?.definitions?.[name]
  }
  return current
}

/** The JSON-schema node of a dotted config key (optional types unwrapped), or null. */
function fieldSchema(schema, path) {
  if (!schema) return null
  let node = schema
  for (const key of path.split('.')) {
    node = resolveRef(schema, node)
    node = node?.properties?.[key]
    if (!node) return null
  }
  node = resolveRef(schema, node)
  if (node.anyOf) {
    const concrete = node.anyOf.map((n) => resolveRef(schema, n)).find((n) => n.type !== 'null')
    return concrete ? { ...concrete, nullable: true, description: node.description } : node
  }
  return node
}

export function enumOf(schema, path) {
  const node = fieldSchema(schema, path)
  return node?.enum?.length ? node.enum : FALLBACK_ENUMS[path] || []
}

/** Element Plus rules for a numeric key from its schema bounds (plus `extra` checks). */
export function numberRules(schema, path, label, { required = true, extra } = {}) {
  const node = fieldSchema(schema, path) || {}
  const validator = (_rule, value, callback) => {
    if (value === null || value === undefined || value === '') {
      return required ? callback(new Error(`${label} is required`)) : callback()
    }
    const n = Number(value)
    if (Number.isNaN(n)) return callback(new Error(`${label} must be a number`))
    if (node.type === 'integer' && !Number.isInteger(n)) {
      return callback(new Error(`${label} must be a whole number`))
    }
    if (node.minimum !== undefined && n < node.minimum) {
      return callback(new Error(`${label} must be at least ${node.minimum}`))
    }
    if (node.exclusiveMinimum !== undefined && n <= node.exclusiveMinimum) {
      return callback(new Error(`${label} must be greater than ${node.exclusiveMinimum}`))
    }
    if (node.maximum !== undefined && n > node.maximum) {
      return callback(new Error(`${label} must be at most ${node.maximum}`))
    }
    if (node.exclusiveMaximum !== undefined && n >= node.exclusiveMaximum) {
      return callback(new Error(`${label} must be less than ${node.exclusiveMaximum}`))
    }
    const problem = extra?.(n)
    return problem ? callback(new Error(problem)) : callback()
  }
  return [{ validator, trigger: ['blur', 'change'] }]
}

/** Bounds for an el-input-number, from the schema. */
export function bounds(schema, path) {
  const node = fieldSchema(schema, path) || {}
  return {
    min: node.minimum ?? node.exclusiveMinimum ?? -Infinity,
    max: node.maximum ?? node.exclusiveMaximum ?? Infinity,
  }
}

/**
 * Split FastAPI 422 details into per-field messages (keyed by dotted config path, or "name")
 * and messages that match no field.
 */
export function mapValidationErrors(detail, knownFields) {
  const fields = {}
  const general = []
  const items = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail ?? 'Invalid') }]
  for (const item of items) {
    const loc = (item.loc || []).filter((p) => p !== 'body')
    if (loc[0] === 'config') loc.shift()
    const path = loc.join('.')
    const msg =
      item.type === 'extra_forbidden'
        ? 'unknown setting: this version has no such key (remove it from the template)'
        : String(item.msg || 'invalid value').replace(/^Value error, /, '')
    const targets = knownFields.has(path) ? [path] : fieldsNamed(path, msg, knownFields)
    for (const target of targets) {
      fields[target] = fields[target] ? `${fields[target]}; ${msg}` : msg
    }
    if (!targets.length) general.push(path ? `${path}: ${msg}` : msg)
  }
  return { fields, general }
}

/**
 * The form fields a cross-field error names: a section-level error ("federated") naming its
 * keys, or a whole-config error naming dotted keys ("privacy.mode ... model.norm").
 */
function fieldsNamed(path, msg, knownFields) {
  const named = (text) => new RegExp(`(^|[^\\w.])${text.replace('.', '\\.')}(?![\\w])`).test(msg)
  return [...knownFields].filter((field) => {
    const [section, key] = field.split('.')
    if (!key) return false
    return path ? section === path && named(key) : named(field)
  })
}
