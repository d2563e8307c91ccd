/** The final model as a clinician judges it: reliability chart, operating points, per-site rows. */
import { formatPercent } from './format'

/** ECharts option of a reliability diagram: observed share per probability bin, the mean
 * predicted probability of each bin and the diagonal of perfect calibration. */
export function reliabilityOption(calibration) {
  const bins = (calibration?.bins || []).filter((b) => b.count > 0)
  const centre = (b) => (b.lower + b.upper) / 2
  const percent = (v) => `${Math.round(v * 100)}%`
  return {
    animationDuration: 300,
    tooltip: {
      trigger: 'item',
      formatter: (p) =>
        p.seriesIndex === 0
          ? `${percent(bins[p.dataIndex].lower)}–${percent(bins[p.dataIndex].upper)}: ` +
            `${formatPercent(p.value[1])} observed, ${bins[p.dataIndex].count} images`
          : `${p.seriesName}: ${formatPercent(p.value[1])}`,
    },
    legend: { bottom: 0, left: 'center', itemWidth: 16, itemHeight: 10 },
    grid: { left: 56, right: 20, top: 16, bottom: 64 },
    xAxis: {
      type: 'value',
      min: 0,
      max: 1,
      name: `Predicted probability (${calibration?.kind || 'positive class'})`,
      nameLocation: 'middle',
      nameGap: 28,
      axisLabel: { formatter: percent, color: '#475569' },
    },
    yAxis: {
      type: 'value',
      min: 0,
      max: 1,
      axisLabel: { formatter: percent, color: '#475569' },
    },
    series: [
      {
        name: 'Observed frequency',
        type: 'bar',
        barWidth: '8%',
        itemStyle: { color: '#0f766e' },
        data: bins.map((b) => [centre(b), b.observed]),
      },
      {
        name: 'Mean predicted',
        type: 'line',
        symbolSize: 7,
        lineStyle: { width: 0 },
        itemStyle: { color: '#dc2626' },
        data: bins.map((b) => [b.confidence, b.confidence]),
      },
      {
        name: 'Perfect calibration',
        type: 'line',
        symbol: 'none',
        lineStyle: { type: 'dashed', color: '#94a3b8', width: 1 },
        data: [
          [0, 0],
          [1, 1],
        ],
      },
    ],
  }
}

/** Capitalised operating-point rows: name, threshold, sensitivity and specificity as text. */
export function operatingRows(points) {
  return (points || []).map((p) => ({
    name: p.name.charAt(0).toUpperCase() + p.name.slice(1),
    threshold: p.threshold.toFixed(3),
    sensitivity: formatPercent(p.sensitivity),
    specificity: formatPercent(p.specificity),
  }))
}

/** `TN 20 · FP 1 · FN 3 · TP 11` for two classes, else the rows joined by `|`. */
export function confusionText(matrix) {
  if (!Array.isArray(matrix) || !matrix.length) return '—'
  if (matrix.length === 2) {
    const [[tn, fp], [fn, tp]] = matrix
    return `TN ${tn} · FP ${fp} · FN ${fn} · TP ${tp}`
  }
  return matrix.map((row) => row.join(' ')).join(' | ')
}

/** Per-class counts with the share of the last class of two: `120 / 80 (40% tumour)`. */
export function balanceText(counts, classNames) {
  if (!Array.isArray(counts) || !counts.length || counts.length !== (classNames || []).length) {
    return '—'
  }
  const total = counts.reduce((a, b) => a + b, 0)
  let text = counts.map((c) => c.toLocaleString('en-US')).join(' / ')
  if (total && counts.length === 2) {
    text += ` (${Math.round((100 * counts[1]) / total)}% ${classNames[1]})`
  }
  return text
}

/** Table rows of the per-site results; the worst site flagged for highlighting. */
export function siteRows(sites) {
  const names = sites?.class_names || []
  return (sites?.sites || []).map((s) => ({
    hospital: s.hospital,
    worst: Boolean(s.worst),
    failed: s.status !== 'ok',
    examples: s.status === 'ok' ? s.num_examples : '—',
    accuracy: formatPercent(s.accuracy),
    auc: s.auc == null ? '—' : s.auc.toFixed(3),
    confusion: s.status === 'ok' ? confusionText(s.confusion_matrix) : s.error || 'failed',
    heldOut: balanceText(s.held_out_counts, names),
    training: balanceText(s.train_counts, names),
  }))
}

/** Element Plus tag type of an explained image's kind: mistakes in red. */
export function kindType(kind) {
  return /false|misclassified/.test(kind) ? 'danger' : 'success'
}
