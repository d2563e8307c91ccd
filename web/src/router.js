import { createRouter, createWebHistory } from 'vue-router'
import { onUnauthorized } from './lib/api'
import { safeRedirect, session } from './lib/session'

const routes = [
  { path: '/', redirect: '/runs' },
  {
    path: '/login',
    name: 'login',
    component: () => import('./views/LoginView.vue'),
    meta: { public: true, title: 'Sign in' },
  },
  {
    path: '/runs',
    name: 'runs',
    component: () => import('./views/HistoryView.vue'),
    meta: { title: 'Runs' },
  },
  {
    path: '/runs/new',
    name: 'new-run',
    component: () => import('./views/NewRunView.vue'),
    meta: { title: 'New run', admin: true },
  },
  {
    path: '/runs/:id/live',
    name: 'run-live',
    component: () => import('./views/LiveRunView.vue'),
    props: true,
    meta: { title: 'Live run' },
  },
  {
    path: '/runs/:id',
    name: 'run-detail',
    component: () => import('./views/RunDetailView.vue'),
    props: true,
    meta: { title: 'Run details' },
  },
  {
    path: '/hospitals',
    name: 'hospitals',
    component: () => import('./views/HospitalsView.vue'),
    meta: { title: 'Hospitals' },
  },
  {
    path: '/activity',
    name: 'activity',
    component: () => import('./views/ActivityView.vue'),
    meta: { title: 'Activity log', admin: true },
  },
  {
    path: '/:pathMatch(.*)*',
    name: 'not-found',
    component: () => import('./views/NotFoundView.vue'),
    meta: { title: 'Not found' },
  },
]

export const router = createRouter({ history: createWebHistory('/'), routes })

router.beforeEach(async (to) => {
  const user = await session.ensureChecked()
  if (to.meta.public) {
    return user && to.name === 'login' ? { path: safeRedirect(to.query.redirect) } : true
  }
  if (!user) return { name: 'login', query: { redirect: to.fullPath } }
  return true
})

router.afterEach((to) => {
  document.title = `${to.meta.title || 'Dashboard'} · medfed`
})

onUnauthorized(() => {
  session.forget()
  const current = router.currentRoute.value
  if (!current.meta.public) router.replace({ name: 'login', query: { redirect: current.fullPath } })
})
