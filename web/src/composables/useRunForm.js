/**
 * State and actions of the new-run form: defaults and schema from the server, templates,
 * validation (client rules, then the server's 422s and 409s shown on the fields) and submission.
 * NewRunView calls useRunForm(); its section components reach the same state with
 * useRunFormContext().
 */
import { computed, inject, nextTick, provide, reactive, ref, watch } from 'vue'
import { useRouter } from 'vue-router'
import { ElMessage, ElMessageBox } from 'element-plus'
import { api } from '../lib/api'
import { useConnectedHospitals } from './useConnectedHospitals'
import {
  MIN_CLIENT_FIELDS,
  PRIVACY_START,
  TOPK_START,
  buildConfig,
  defaultRunName,
  formRules,
  mapValidationErrors,
  mergeConfig,
  pickSections,
  uiStateFor,
} from '../lib/configForm'

const KEY = Symbol('run-form')

export function useRunFormContext() {
  return inject(KEY)
}

export function useRunForm() {
  const router = useRouter()
  const formRef = ref()
  const loading = ref(true)
  const loadError = ref('')
  const submitting = ref(false)
  const defaults = ref(null)
  const schema = ref(null)
  const templates = ref([])
  const selectedTemplate = ref('')
  const generalErrors = ref([])
  const serverErrors = reactive({})

  const form = reactive({ name: '', ...pickSections({}) })
  const ui = reactive({ calibrateBy: 'noise', topkOn: false, hospitals: 'simulated' })
  const hospitals = useConnectedHospitals(form, ui)

  const rules = computed(() => formRules(schema.value, form))
  const privacyOn = computed(() => Boolean(form.privacy.mode) && form.privacy.mode !== 'none')

  function revalidate(fields) {
    nextTick(() => formRef.value?.validateField(fields).catch(() => {}))
  }

  function clearServerErrors() {
    for (const key of Object.keys(serverErrors)) delete serverErrors[key]
    generalErrors.value = []
  }

  function applyConfig(config) {
    const merged = mergeConfig(defaults.value, config)
    for (const [section, values] of Object.entries(merged)) form[section] = values
    Object.assign(ui, uiStateFor(form))
    hospitals.apply()
    clearServerErrors()
    nextTick(() => formRef.value?.clearValidate())
  }

  async function loadTemplates() {
    try {
      templates.value = (await api.templates()) || []
    } catch {
      templates.value = []
    }
  }

  async function load() {
    loading.value = true
    loadError.value = ''
    try {
      const [d, s] = await Promise.all([api.configDefaults(), api.configSchema()])
      defaults.value = d
      schema.value = s
      form.name = defaultRunName()
      applyConfig({})
      await loadTemplates()
    } catch (err) {
      loadError.value = err.message
    } finally {
      loading.value = false
    }
  }

  async function loadTemplate(name) {
    if (!name) return
    try {
      const template = await api.template(name)
      applyConfig(template.config || {})
      ElMessage.success(`Loaded template “${name}”`)
    } catch (err) {
      ElMessage.error(`Could not load template “${name}”: ${err.message}`)
    }
  }

  function scrollToFirstError() {
    nextTick(() => {
      document.querySelector('.is-error')?.scrollIntoView({ behavior: 'smooth', block: 'center' })
    })
  }

  function showServerErrors(detail) {
    const { fields, general } = mapValidationErrors(detail)
    Object.assign(serverErrors, fields)
    generalErrors.value = general
    scrollToFirstError()
  }

  async function validate() {
    clearServerErrors()
    const ok = await formRef.value.validate().catch(() => false)
    if (!ok) {
      ElMessage.warning('Some settings need attention: see the highlighted fields.')
      scrollToFirstError()
    }
    return ok
  }

  async function askTemplateName() {
    try {
      const reply = await ElMessageBox.prompt(
        'Save the current settings (not the run name) as a template.',
        'Save as template',
        {
          confirmButtonText: 'Save',
          inputPlaceholder: 'Template name, e.g. fedprox-noniid',
          inputValue: selectedTemplate.value || '',
          inputValidator: (v) => (v && v.trim() ? true : 'Enter a name'),
        },
      )
      return reply.value.trim()
    } catch {
      return null
    }
  }

  async function saveTemplate() {
    if (!(await validate())) return
    const name = await askTemplateName()
    if (!name) return
    try {
      await api.saveTemplate(name, buildConfig(form, ui))
      await loadTemplates()
      selectedTemplate.value = name
      ElMessage.success(`Template “${name}” saved`)
    } catch (err) {
      if (err.status === 422 || (err.status === 409 && Array.isArray(err.detail))) showServerErrors(err.detail)
      ElMessage.error(`Template not saved: ${err.message}`)
    }
  }

  async function submit(start = true) {
    if (!(await validate())) return
    submitting.value = true
    try {
      const mode = ui.hospitals === 'connected' ? 'deployment' : 'simulation'
      const run = await api.createRun(form.name.trim(), buildConfig(form, ui), start, mode)
      ElMessage.success(start ? `Run “${run.name}” started` : `Run “${run.name}” created`)
      router.push({ name: start ? 'run-live' : 'run-detail', params: { id: run.id } })
    } catch (err) {
      // 422: a value out of bounds; 409 with a list: settings that contradict each other.
      if (err.status === 422 || (err.status === 409 && Array.isArray(err.detail))) {
        showServerErrors(err.detail)
        ElMessage.error('The server rejected some settings: see the highlighted fields.')
      } else {
        generalErrors.value = [err.message]
        ElMessage.error(err.message)
      }
    } finally {
      submitting.value = false
    }
  }

  function resetToDefaults() {
    selectedTemplate.value = ''
    applyConfig({})
  }

  watch(
    () => form.federated.num_clients,
    () => revalidate(MIN_CLIENT_FIELDS),
  )

  watch(
    () => [form.privacy.mode, ui.calibrateBy],
    () => {
      if (!privacyOn.value) return
      const key = ui.calibrateBy === 'noise' ? 'noise_multiplier' : 'target_epsilon'
      if (form.privacy[key] == null) form.privacy[key] = PRIVACY_START[key]
    },
  )

  watch(
    () => form.privacy.mode,
    (mode) => {
      if (mode !== 'none' && form.model.norm !== 'group' && !loading.value) {
        form.model.norm = 'group'
        ElMessage.info('Normalisation switched to GroupNorm: differential privacy needs it.')
      }
    },
  )

  watch(
    () => [form.privacy.mode, form.federated.strategy, form.model.norm],
    () => revalidate(['privacy.mode', 'model.norm']),
  )

  watch(
    () => ui.topkOn,
    (on) => {
      if (on && form.compression.topk == null) form.compression.topk = TOPK_START
    },
  )

  const state = {
    formRef,
    form,
    ui,
    schema,
    rules,
    serverErrors,
    generalErrors,
    loading,
    loadError,
    submitting,
    templates,
    selectedTemplate,
    privacyOn,
    hospitals,
    load,
    loadTemplate,
    saveTemplate,
    submit,
    resetToDefaults,
  }
  provide(KEY, state)
  return state
}

/** A two-way binding to the form value of a dotted key ("federated.rounds"). */
export function useFieldModel(path) {
  const { form } = useRunFormContext()
  const [section, key] = path.split('.')
  return computed({
    get: () => form[section][key],
    set: (value) => {
      form[section][key] = value
    },
  })
}
