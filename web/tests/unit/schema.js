/** A small configuration schema shaped as the API serves it (pydantic's model_json_schema). */
export const SCHEMA = {
  $defs: {
    FederatedConfig: {
      properties: {
        num_clients: { type: 'integer', minimum: 1, title: 'Num Clients', description: 'hospitals' },
        strategy: { type: 'string', enum: ['FedAvg', 'FedProx', 'Krum'], title: 'Strategy' },
        rounds: { type: 'integer', minimum: 1, title: 'Rounds' },
        min_train_clients: { type: 'integer', minimum: 1, title: 'Min Train Clients' },
        trim_beta: { type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 0.5, title: 'Trim Beta' },
      },
    },
    TrainingConfig: {
      properties: {
        learning_rate: { type: 'number', exclusiveMinimum: 0, title: 'Learning Rate' },
        momentum: { type: 'number', minimum: 0, exclusiveMaximum: 1, title: 'Momentum' },
        seed: { type: 'integer', title: 'Seed' },
      },
    },
    PrivacyConfig: {
      properties: {
        mode: { type: 'string', enum: ['none', 'sample', 'client'], title: 'Mode' },
        target_epsilon: {
          anyOf: [{ type: 'number', exclusiveMinimum: 0 }, { type: 'null' }],
          title: 'Target Epsilon',
          description: 'epsilon to calibrate the noise for',
        },
      },
    },
    CompressionConfig: {
      properties: {
        quant_bits: { anyOf: [{ type: 'integer', enum: [4, 8] }, { type: 'null' }], title: 'Quant Bits' },
        topk: { anyOf: [{ type: 'number', exclusiveMinimum: 0, maximum: 1 }, { type: 'null' }] },
      },
    },
  },
  properties: {
    federated: { $ref: '#/$defs/FederatedConfig' },
    training: { $ref: '#/$defs/TrainingConfig' },
    privacy: { $ref: '#/$defs/PrivacyConfig' },
    compression: { $ref: '#/$defs/CompressionConfig' },
  },
}

/** Run a list of Element Plus rules on a value: the first error message, or null. */
export function check(rules, value) {
  for (const rule of rules) {
    let message = null
    rule.validator(rule, value, (err) => {
      message = err ? err.message : null
    })
    if (message) return message
  }
  return null
}
