/** ECharts set-up (only the parts used) and the option builders of the dashboard's charts. */
import { use } from 'echarts/core'
import { BarChart, HeatmapChart, LineChart } from 'echarts/charts'
import {
  DataZoomComponent,
  GridComponent,
  LegendComponent,
  TitleComponent,
  TooltipComponent,
  VisualMapComponent,
} from 'echarts/components'
import { CanvasRenderer } from 'echarts/renderers'

use([BarChart, HeatmapChart, LineChart, CanvasRenderer])
use([DataZoomComponent, GridComponent, LegendComponent, TitleComponent])
use([TooltipComponent, VisualMapComponent])

export const PALETTE = [
  '#0f766e',
  '#2563eb',
  '#d97706',
  '#db2777',
  '#7c3aed',
  '#059669',
  '#dc2626',
  '#0891b2',
  '#65a30d',
  '#9333ea',
]

const AXIS_LABEL = { color: '#475569' }

/** Short animations: live updates stay snappy and screenshots show finished drawings. */
const ANIMATION = { animationDuration: 300, animationDurationUpdate: 200 }
const SPLIT_LINE = { lineStyle: { color: '#e2e8f0' } }

function baseGrid(extra = {}) {
  return { left: 60, right: 24, top: 48, bottom: 78, containLabel: false, ...extra }
}

const TITLE_STYLE = { fontSize: 14, fontWeight: 600, color: '#0f172a' }

/** Bottom legend: wraps to two rows for up to six series, scrolls beyond that. */
function legend(count = 3) {
  return {
    type: count > 6 ? 'scroll' : 'plain',
    bottom: 4,
    left: 'center',
    itemWidth: 18,
    itemHeight: 10,
    itemGap: 12,
  }
}

function legendRows(count) {
  return count > 3 && count <= 6 ? 2 : 1
}

function roundAxis(name = 'Round') {
  return {
    type: 'value',
    name,
    nameLocation: 'middle',
    nameGap: 30,
    minInterval: 1,
    min: 1,
    axisLabel: AXIS_LABEL,
    splitLine: { show: false },
  }
}

function valueAxis(name, { percent = false, min } = {}) {
  return {
    type: 'value',
    name,
    nameLocation: 'middle',
    nameGap: 42,
    min,
    max: percent ? 1 : undefined,
    axisLabel: {
      ...AXIS_LABEL,
      formatter: percent ? (v) => `${Math.round(v * 100)}%` : undefined,
    },
    splitLine: SPLIT_LINE,
  }
}

/**
 * A metric-per-round line chart.
 * series: [{name, points: [[round, value], ...], dashed?, color?}]
 */
export function metricLineOption({
  title,
  metric,
  series,
  percent = false,
  maxRound,
  showLegend = true,
}) {
  const digits = percent ? 3 : 4
  return {
    ...ANIMATION,
    color: PALETTE,
    title: title ? { text: title, left: 4, top: 4, textStyle: TITLE_STYLE } : undefined,
    tooltip: {
      trigger: 'axis',
      valueFormatter: (v) => (v == null ? '—' : Number(v).toFixed(digits)),
    },
    legend: { ...legend(series.length), show: showLegend },
    grid: baseGrid({
      top: title ? 48 : 20,
      bottom: showLegend ? 56 + 22 * legendRows(series.length) : 52,
    }),
    xAxis: { ...roundAxis(), max: maxRound ? Math.max(maxRound, 1) : undefined },
    yAxis: valueAxis(metric, { percent, min: percent ? 0 : undefined }),
    series: series.map((s) => ({
      name: s.name,
      type: 'line',
      data: s.points,
      showSymbol: true,
      symbolSize: s.dashed ? 5 : 7,
      connectNulls: true,
      color: s.color,
      lineStyle: { width: s.dashed ? 1.5 : 3, type: s.dashed ? 'dashed' : 'solid' },
      emphasis: { focus: 'series' },
      z: s.dashed ? 2 : 3,
    })),
  }
}

/** Duration (bars, left axis) and traffic (bars, right axis) per round. */
export function roundCostOption(rounds) {
  const mb = (b) => (b == null ? null : Number((b / 1024 / 1024).toFixed(3)))
  return {
    ...ANIMATION,
    color: ['#0f766e', '#2563eb', '#93c5fd'],
    tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
    legend: legend(),
    grid: baseGrid({ right: 64, top: 24 }),
    xAxis: {
      type: 'category',
      name: 'Round',
      nameLocation: 'middle',
      nameGap: 30,
      data: rounds.map((r) => r.round),
      axisLabel: AXIS_LABEL,
    },
    yAxis: [
      valueAxis('Duration (s)', { min: 0 }),
      { ...valueAxis('Traffic (MB)', { min: 0 }), position: 'right', nameGap: 46, splitLine: { show: false } },
    ],
    series: [
      {
        name: 'Duration (s)',
        type: 'bar',
        data: rounds.map((r) => (r.duration_s == null ? null : Number(r.duration_s.toFixed(2)))),
        barMaxWidth: 28,
      },
      {
        name: 'Uplink (MB)',
        type: 'bar',
        yAxisIndex: 1,
        stack: 'traffic',
        data: rounds.map((r) => mb(r.bytes_up)),
        barMaxWidth: 28,
      },
      {
        name: 'Downlink (MB)',
        type: 'bar',
        yAxisIndex: 1,
        stack: 'traffic',
        data: rounds.map((r) => mb(r.bytes_down)),
        barMaxWidth: 28,
      },
    ],
  }
}

/** Privacy spent so far (epsilon) after each round. */
export function epsilonOption(rounds, budget) {
  const option = metricLineOption({
    title: '',
    metric: 'ε',
    showLegend: false,
    series: [
      {
        name: 'ε',
        points: rounds.filter((r) => r.epsilon != null).map((r) => [r.round, r.epsilon]),
        color: '#7c3aed',
      },
    ],
  })
  if (budget) {
    option.series[0].markLine = {
      symbol: 'none',
      label: { formatter: `budget ${budget}` },
      lineStyle: { color: '#dc2626', type: 'dashed' },
      data: [{ yAxis: budget }],
    }
  }
  return option
}

/** Confusion-matrix heatmap: rows are true classes, columns predicted classes. */
export function confusionOption(matrix, classNames) {
  const n = matrix.length
  const names = Array.from({ length: n }, (_, i) => classNames?.[i] ?? `class ${i}`)
  const data = []
  let max = 1
  matrix.forEach((row, i) =>
    row.forEach((count, j) => {
      data.push([j, i, count])
      max = Math.max(max, count)
    }),
  )
  return {
    ...ANIMATION,
    tooltip: {
      formatter: (p) => `true <b>${names[p.value[1]]}</b><br/>predicted <b>${names[p.value[0]]}</b>: ${p.value[2]}`,
    },
    grid: { left: 96, right: 96, top: 16, bottom: 56 },
    xAxis: {
      type: 'category',
      data: names,
      name: 'Predicted',
      nameLocation: 'middle',
      nameGap: 30,
      axisLabel: AXIS_LABEL,
      splitArea: { show: true },
    },
    yAxis: {
      type: 'category',
      data: names,
      name: 'True',
      nameLocation: 'middle',
      nameGap: 72,
      inverse: true,
      axisLabel: AXIS_LABEL,
      splitArea: { show: true },
    },
    visualMap: {
      min: 0,
      max,
      calculable: true,
      orient: 'vertical',
      right: 8,
      top: 'middle',
      itemHeight: 160,
      inRange: { color: ['#f0fdfa', '#5eead4', '#0f766e', '#134e4a'] },
    },
    series: [
      {
        type: 'heatmap',
        data,
        label: { show: true, fontSize: 14, fontWeight: 600 },
        emphasis: { itemStyle: { shadowBlur: 8, shadowColor: 'rgba(0,0,0,0.3)' } },
      },
    ],
  }
}
