/**
 * Reading the configuration model's JSON schema (GET /api/config/schema): the node of a dotted
 * key, its enum, bounds, label and help, and Element Plus rules derived from its bounds.
 */

function resolveRef(schema, node) {
  let current = node
  while (current && current.$ref) {
    const name = current.$ref.split('/').pop()
    current = schema?.$defs?.[name] ?? schema?.definitions?.[name]
  }
  return current
}

/** The JSON-schema node of a dotted config key (optional types unwrapped), or null. */
export function fieldSchema(schema, path) {
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
    return concrete
      ? { ...concrete, nullable: true, title: node.title, description: node.description }
      : node
  }
  return node
}

/** The allowed values of an enumerated key, in the schema's order ([] when unknown). */
export function enumOf(schema, path) {
  return fieldSchema(schema, path)?.enum ?? []
}

/** Whether a key holds a free number (integer or float, not an enumeration). */
export function isNumeric(schema, path) {
  const node = fieldSchema(schema, path)
  return Boolean(node && !node.enum && (node.type === 'integer' || node.type === 'number'))
}

/** Bounds for an el-input-number, from the schema (an exclusive bound is the nearest limit). */
export function bounds(schema, path) {
  const node = fieldSchema(schema, path) || {}
  return {
    min: node.minimum ?? node.exclusiveMinimum ?? -Infinity,
    max: node.maximum ?? node.exclusiveMaximum ?? Infinity,
  }
}

/** "Learning Rate" -> "Learning rate": the schema's title as a form label. */
export function sentenceCase(title) {
  const text = String(title ?? '').trim()
  return text ? text[0].toUpperCase() + text.slice(1).toLowerCase() : ''
}

/** A key's label: its schema title in sentence case, else its last segment. */
export function schemaLabel(schema, path) {
  const title = fieldSchema(schema, path)?.title
  return sentenceCase(title || path.split('.').pop().replaceAll('_', ' '))
}

/** A key's description in the schema ('' when it has none). */
export function schemaHelp(schema, path) {
  return fieldSchema(schema, path)?.description || ''
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
