/**
 * Recipes of the benchmarks (bench/time_to_accuracy.py for skewed hospitals, whose best recipe
 * is medfed's defaults; bench/privacy_utility.py --study privacy for differential privacy), and
 * settings known to cost accuracy: the new-run form offers the first and warns about the second.
 * Every value is a dotted configuration key; see the README's "Recipes" section for the figures.
 */

/** Differential privacy per target ε: sample-level DP-SGD spent on few, large steps (the
 * privacy study's recipe, chosen on a validation split: at ε 3 it lost 2.6 points on the
 * demo's test set against the same recipe without DP). */
const DP_COMMON = {
  'privacy.mode': 'sample',
  'privacy.delta': 1e-5,
  'privacy.accountant': 'prv',
  'privacy.max_grad_norm': 0.1,
  'model.name': 'scatter_cnn',
  'model.norm': 'group',
  'federated.strategy': 'FedAvg',
  'federated.local_epochs': 1,
  'federated.rounds': 20,
  'federated.lr_decay': 'cosine',
  'federated.loss_correction': 'none',
  'training.optimizer': 'sgd',
  'training.momentum': 0.9,
  'training.batch_size': 256,
  'training.learning_rate': 8.0,
}

export const PRIVACY_PRESETS = {
  8: { ...DP_COMMON, 'privacy.target_epsilon': 8 },
  3: { ...DP_COMMON, 'privacy.target_epsilon': 3 },
  1: { ...DP_COMMON, 'privacy.target_epsilon': 1 },
}

/** Hospitals that each hold a single class: federated SGD, one local step per round on a
 * GroupNorm ResNet, the server's momentum adding the rounds' steps up (chosen on a validation
 * split; see the README's "Recipes" for its figures). */
export const SINGLE_CLASS_RECIPE = {
  'model.norm': 'group',
  'federated.strategy': 'FedAvgM',
  'federated.server_learning_rate': 1.0,
  'federated.server_momentum': 0.9,
  'federated.local_steps': 1,
  'federated.lr_decay': 'cosine',
  'federated.loss_correction': 'none',
  'training.optimizer': 'sgd',
  'training.momentum': 0.9,
  'training.learning_rate': 0.01,
  'training.batch_size': 64,
}

/** The single-class recipe with the rounds it was measured over (each round is one step). */
export const SINGLE_CLASS_PRESET = { ...SINGLE_CLASS_RECIPE, 'federated.rounds': 80 }

/** Does ``form`` already train with every setting of ``preset``? */
export function follows(form, preset) {
  return Object.entries(preset).every(([path, value]) => {
    const [section, key] = path.split('.')
    return form[section]?.[key] === value
  })
}

/** The ε a preset exists for, nearest to ``epsilon`` (3 when none is given). */
export function nearestPreset(epsilon) {
  const choices = Object.keys(PRIVACY_PRESETS).map(Number)
  if (epsilon == null || !Number.isFinite(Number(epsilon))) return 3
  return choices.reduce((best, e) =>
    Math.abs(Math.log(e / epsilon)) < Math.abs(Math.log(best / epsilon)) ? e : best,
  )
}

/** Set every key of ``preset`` on the form (sections of dotted keys). */
export function applyPreset(form, preset) {
  for (const [path, value] of Object.entries(preset)) {
    const [section, key] = path.split('.')
    form[section][key] = value
  }
}

const LABEL_SKEWED = new Set(['dirichlet', 'shards'])

/**
 * Settings of ``form`` the benchmarks showed to cost accuracy, each ``{ key, message }`` (the
 * key the warning is about). None of them is an error: the run can still be started.
 */
export function recipeWarnings(form) {
  const out = []
  const f = form.federated
  const t = form.training
  const p = form.privacy
  const dp = p.mode === 'sample'
  const singleClassRecipe = follows(form, SINGLE_CLASS_RECIPE)
  const plainLoss = f.loss_correction === 'none' && !singleClassRecipe
  if (!dp && LABEL_SKEWED.has(form.partition.scheme) && plainLoss) {
    out.push({
      key: 'partition.scheme',
      message:
        'Label-skewed hospitals with plain cross-entropy: on the demo images over 4 ' +
        'Dirichlet 0.5 hospitals it ended 1 to 2 points below logit adjustment (medfed’s ' +
        'default) on average and up to 4 points on a hard split; one split that left each ' +
        'hospital with nearly one class swung between 25% and 74% from round to round. Keep ' +
        'a loss correction for the hospitals’ own labels.',
    })
  }
  const part = form.partition
  const oneClass = part.scheme === 'shards' && Number(part.classes_per_client) === 1
  const fewClasses = oneClass || (part.scheme === 'dirichlet' && Number(part.alpha) <= 0.1)
  if (!dp && fewClasses && !singleClassRecipe) {
    out.push({
      key: oneClass ? 'partition.classes_per_client' : 'partition.alpha',
      preset: SINGLE_CLASS_PRESET,
      message:
        'Hospitals that hold a single class: medfed’s defaults stay near chance there. The ' +
        'single-class recipe (one local step a round on a GroupNorm ResNet, SGD 0.01, the ' +
        'server’s momentum 0.9, batches of 64, 80 rounds) reached 98.0% test accuracy on the ' +
        'demo images with one class per hospital (worst split 96.5%), and 96.6% on Dirichlet ' +
        '0.1 splits (worst 95.2%), where the defaults averaged 78.4% (worst 49.5%).',
    })
  }
  if (f.strategy === 'SCAFFOLD' && t.optimizer !== 'sgd') {
    out.push({
      key: 'federated.strategy',
      message: 'SCAFFOLD’s control variates assume SGD steps: choose the SGD optimizer.',
    })
  }
  if (dp) {
    if (form.model.name !== 'scatter_linear' && form.model.name !== 'scatter_cnn') {
      out.push({
        key: 'model.name',
        message:
          'DP-SGD noise drowns the gradients of a large model trained from scratch: on the ' +
          'demo images at ε 3 such a recipe lost 22.7 points, ScatterNet + small CNN (fixed ' +
          'features, a small head; the privacy preset) 2.6 points against itself without DP.',
      })
    }
    const epochs = f.local_epochs * f.rounds
    if (epochs > 30) {
      out.push({
        key: 'federated.local_epochs',
        message: `${epochs} local epochs in all: the privacy budget then buys only a large noise per step. Spend it on 15-30 epochs (one per round).`,
      })
    }
    if (t.batch_size < 128) {
      out.push({
        key: 'training.batch_size',
        message:
          'Small DP-SGD batches: the noise is the same per step whatever the batch, so large ' +
          'batches (256 or more) average it away; scale the learning rate with them.',
      })
    }
  }
  return out
}
