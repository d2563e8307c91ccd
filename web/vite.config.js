import { copyFileSync, mkdirSync } from 'node:fs'
import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

const apiTarget = process.env.MEDFED_API_URL || 'http://127.0.0.1:8080'
const outDir = '../src/medfed/api/static'

/** Swagger UI's script and style next to the UI, so /api/docs loads nothing from the internet. */
function apiDocsAssets() {
  return {
    name: 'medfed-api-docs-assets',
    closeBundle() {
      mkdirSync(`${outDir}/api-docs`, { recursive: true })
      for (const file of ['swagger-ui-bundle.js', 'swagger-ui.css']) {
        copyFileSync(`node_modules/swagger-ui-dist/${file}`, `${outDir}/api-docs/${file}`)
      }
    },
  }
}

export default defineConfig({
  plugins: [vue(), apiDocsAssets()],
  base: '/',
  resolve: {
    alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) },
  },
  build: {
    outDir,
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
    rolldownOptions: {
      output: {
        codeSplitting: {
          groups: [
            { name: 'element-plus', test: /node_modules[\\/](element-plus|@element-plus)/ },
            { name: 'echarts', test: /node_modules[\\/](echarts|zrender|vue-echarts)/ },
          ],
        },
      },
    },
  },
  server: {
    proxy: { '/api': { target: apiTarget, changeOrigin: false } },
  },
  test: {
    include: ['tests/unit/**/*.test.js'],
    environment: 'node',
    reporters: ['default', './tests/unit/summary.js'],
  },
})
