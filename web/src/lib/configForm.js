/**
 * The run-configuration form: which MedfedConfig sections and keys the dashboard edits, their
 * wording where it differs from the schema's, rules derived from the server's JSON schema, and
 * mapping of 422 errors back to form fields. Enumerations always come from the schema.
 */
import { isNumeric, numberRules, schemaHelp, schemaLabel } from './configSchema'

export const FORM_SECTIONS = [
  'data',
  'model',
  'training',
  'partition',
  'federated',
  'privacy',
  'compression',
]

/**
 * Every key the form shows. Labels, bounds and help come from the schema; an entry only says
 * what the form words or steps differently: `label` (form), `name` (in messages, default the
 * label), `step`, and `min` / `max` where the input should stop short of an exclusive bound.
 */
export const FIELDS = {
  'federated.strategy': { label: 'Aggregation strategy' },
  'federated.rounds': {},
  'federated.num_clients': { label: 'Hospitals' },
  'federated.min_train_clients': { label: 'Min. training', name: 'Min. training hospitals' },
  'federated.min_evaluate_clients': { label: 'Min. evaluating', name: 'Min. evaluating hospitals' },
  'federated.min_available_clients': { label: 'Min. connected', name: 'Min. connected hospitals' },
  'federated.bn': { label: 'BatchNorm layers' },
  'federated.local_epochs': {},
  'federated.lr_decay': { label: 'LR decay' },
  'federated.proximal_mu': { label: 'Proximal term μ', step: 0.01 },
  'federated.trim_beta': { label: 'Trim fraction β', step: 0.05 },
  'federated.num_malicious_clients': { label: 'Malicious hospitals tolerated (f)', step: 1 },
  'federated.server_learning_rate': { step: 0.01 },
  'federated.server_momentum': { step: 0.05 },
  'federated.tau': { label: 'Adaptivity τ', step: 0.0001 },
  'federated.loss_correction': { label: 'Loss correction for local labels' },
  'federated.logit_adjustment_tau': { label: 'Logit adjustment τ', step: 0.1 },
  'federated.restricted_softmax_alpha': { label: 'Missing-class logit scale α', step: 0.1 },
  'training.learning_rate': { step: 0.0001 },
  'training.batch_size': {},
  'training.optimizer': {},
  'training.seed': {},
  'training.weight_decay': { step: 0.0001 },
  'training.momentum': { step: 0.05, max: 0.999 },
  'model.name': { label: 'Model' },
  'model.norm': { label: 'Normalisation layers' },
  'data.path': { label: 'Data path' },
  'data.image_size': { label: 'Image size (px)', name: 'Image size', step: 8 },
  'partition.scheme': { label: 'Partition across hospitals' },
  'partition.alpha': { label: 'Dirichlet α', step: 0.1, min: 0.01 },
  'partition.classes_per_client': { label: 'Classes per hospital' },
  'privacy.mode': {},
  'privacy.noise_multiplier': { step: 0.1 },
  'privacy.target_epsilon': { label: 'Target ε', step: 0.5, min: 0.01 },
  'privacy.delta': { label: 'δ', step: 0.00001 },
  'privacy.max_grad_norm': { label: 'Clipping norm', step: 0.1 },
  'privacy.clipping': {},
  'privacy.accountant': {},
  'compression.topk': { label: 'Top-k sparsification', name: 'Top-k fraction', step: 0.05, min: 0.001 },
  'compression.topk_scope': { label: 'Largest entries of' },
  'compression.quant_bits': { label: 'Quantisation' },
  'compression.error_feedback': {},
  'compression.downlink': { label: 'Downlink precision' },
}

/** The form's label of a key: its own wording, else the schema's title. */
export function fieldLabel(schema, path) {
  return FIELDS[path]?.label ?? schemaLabel(schema, path)
}

/** How messages name a key. */
export function fieldName(schema, path) {
  return FIELDS[path]?.name ?? fieldLabel(schema, path)
}

export function fieldHelp(schema, path) {
  return schemaHelp(schema, path)
}

/** How the form shows an option of an enumerated key (the value itself by default). */
const OPTION_LABELS = {
  'model.name': {
    cancer_cnn: 'Small CNN (fast)',
    resnet18: 'ResNet-18',
    resnet50: 'ResNet-50',
    scatter_linear: 'ScatterNet + linear (for DP)',
    scatter_cnn: 'ScatterNet + small CNN (for DP)',
  },
  'federated.loss_correction': {
    none: 'None (plain cross-entropy)',
    logit_adjustment: 'Logit adjustment (balanced softmax)',
    restricted_softmax: 'Restricted softmax',
  },
  'privacy.accountant': { rdp: 'RDP', prv: 'PRV (tighter)' },
  'model.norm': { batch: 'BatchNorm', group: 'GroupNorm' },
  'federated.lr_decay': { none: 'None', cosine: 'Cosine' },
  'federated.bn': { average: 'Averaged (FedAvg)', local: 'Kept local (FedBN)' },
  'compression.topk_scope': { model: 'Whole model', tensor: 'Each tensor' },
  'compression.quant_bits': { off: 'Off (32-bit floats)' },
  'training.optimizer': (value) => String(value).toUpperCase(),
  'partition.scheme': {
    iid: 'IID',
    dirichlet: 'Dirichlet label skew',
    shards: 'Shards (few classes)',
    quantity: 'Quantity skew',
  },
  'privacy.mode': { none: 'Off', sample: 'Sample-level (DP-SGD)', client: 'Client-level' },
  'privacy.clipping': { fixed: 'Fixed', adaptive: 'Adaptive' },
}

export function optionLabel(path, value) {
  const labels = OPTION_LABELS[path]
  if (typeof labels === 'function') return labels(value)
  return labels?.[value] ?? (path === 'compression.quant_bits' ? `${value} bits` : String(value))
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

/** Parameters of the loss correction: shown only for the correction that uses them. */
export const CORRECTION_PARAMS = {
  logit_adjustment: ['logit_adjustment_tau'],
  restricted_softmax: ['restricted_softmax_alpha'],
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
  SCAFFOLD:
    'FedAvg with control variates: each hospital corrects its gradients for how far its own data pulls it from the others (Karimireddy et al.). Train with SGD.',
}

export const SCHEME_NOTES = {
  iid: 'Each hospital gets a random, equally sized share with the same class balance.',
  dirichlet: 'Class proportions per hospital drawn from Dirichlet(α): small α = very skewed.',
  shards: 'Each hospital holds only a few classes (pathological non-IID).',
  quantity: 'Same class balance, very different dataset sizes per hospital.',
}

/** Starting values when a section is switched on, so the form is valid right away. */
export const PRIVACY_START = { noise_multiplier: 1.0, target_epsilon: 8.0 }
export const TOPK_START = 0.1

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

/** The form's own switches for a configuration: how noise is calibrated, whether top-k is on. */
export function uiStateFor(config) {
  return {
    calibrateBy: config?.privacy?.target_epsilon != null ? 'target' : 'noise',
    topkOn: config?.compression?.topk != null,
  }
}

/** The configuration to send: the form's sections, without the values its switches turn off. */
export function buildConfig(form, ui) {
  const config = pickSections(form)
  if (config.privacy.mode !== 'none') {
    if (ui.calibrateBy === 'noise') config.privacy.target_epsilon = null
    else config.privacy.noise_multiplier = null
  }
  if (!ui.topkOn) config.compression.topk = null
  return config
}

/** "run-20260105-0907": a fresh run's name. */
export function defaultRunName(date = new Date()) {
  const pad = (n) => String(n).padStart(2, '0')
  const day = `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}`
  return `run-${day}-${pad(date.getHours())}${pad(date.getMinutes())}`
}

/** The "at least this many hospitals" keys: none may exceed the number of hospitals. */
export const MIN_CLIENT_FIELDS = [
  'federated.min_train_clients',
  'federated.min_evaluate_clients',
  'federated.min_available_clients',
]

/** Element Plus rules of the whole form: schema bounds plus the cross-key rules the server enforces. */
export function formRules(schema, form) {
  const out = {}
  const notAboveHospitals = (n) =>
    n > form.federated.num_clients
      ? `At most ${form.federated.num_clients}: cannot exceed the number of hospitals`
      : null
  for (const path of Object.keys(FIELDS)) {
    if (!isNumeric(schema, path)) continue
    const extra = MIN_CLIENT_FIELDS.includes(path) ? notAboveHospitals : undefined
    out[path] = numberRules(schema, path, fieldName(schema, path), { extra })
  }
  out.name = [
    { required: true, message: 'Give the run a name', trigger: 'blur' },
    { max: 200, message: 'At most 200 characters', trigger: 'blur' },
  ]
  out['data.path'] = [{ required: true, message: 'Where the images are', trigger: 'blur' }]
  out['model.norm'] = [{ validator: checked(() => normProblem(form)), trigger: 'change' }]
  out['privacy.mode'] = [{ validator: checked(() => privacyProblem(form)), trigger: 'change' }]
  return out
}

function checked(problem) {
  return (_rule, _value, callback) => {
    const message = problem()
    return message ? callback(new Error(message)) : callback()
  }
}

/** DP-SGD cannot train BatchNorm, and client-level DP is kept to GroupNorm too. */
export function normProblem(form) {
  const scatter = String(form.model.name).startsWith('scatter_')
  return form.privacy.mode !== 'none' && form.model.norm !== 'group' && !scatter
    ? 'Differential privacy needs GroupNorm (DP-SGD cannot train BatchNorm)'
    : null
}

export function privacyProblem(form) {
  return form.privacy.mode === 'sample' && form.federated.strategy === 'FedProx'
    ? 'Sample-level DP replaces the gradients, so FedProx’s proximal term is lost: use FedAvg'
    : null
}

/** Every key an error can be shown on: the run name and the form's fields. */
export const KNOWN_FIELDS = new Set(['name', ...Object.keys(FIELDS)])

/**
 * Split FastAPI 422 details into per-field messages (keyed by dotted config path, or "name")
 * and messages that match no field.
 */
export function mapValidationErrors(detail, knownFields = KNOWN_FIELDS) {
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
